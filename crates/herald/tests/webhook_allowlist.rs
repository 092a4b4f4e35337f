//! `--webhook-allow-hosts`: webhook subscriptions may only target listed hosts (SSRF
//! guard); other targets are refused at creation with a 400 naming `target.url`.

mod common;

use common::Server;
use serde_json::json;

#[test]
fn webhooks_outside_the_allow_list_are_refused() {
    let server =
        Server::start_with_args(&["--webhook-allow-hosts", "hooks.example.com,*.partner.test"]);
    let api = server.api();
    api.create_topic("orders", 1);
    let webhook = |name: &str, url: &str| json!({"name": name, "topic": "orders", "target": {"type": "webhook", "url": url}});
    for (name, url) in [
        ("metadata", "http://169.254.169.254/latest/meta-data"),
        ("loopback", "http://127.0.0.1:8080/v1/topics"),
        ("lookalike", "https://hooks.example.com.evil.test/x"),
        ("apex", "https://partner.test/x"),
    ] {
        let reply = api.post_json("/v1/subscriptions", &webhook(name, url));
        reply.expect_error(400, "invalid_argument");
        assert_eq!(
            reply.error_field(),
            Some("target.url"),
            "{url}: {}",
            reply.text
        );
    }
    for (name, url) in [
        ("listed", "https://hooks.example.com/herald"),
        ("subdomain", "https://eu.partner.test/in"),
    ] {
        api.post_json("/v1/subscriptions", &webhook(name, url))
            .expect_status(201);
    }
    // Queue subscriptions are unaffected.
    api.post_json(
        "/v1/subscriptions",
        &json!({"name": "q", "topic": "orders", "target": {"type": "queue"}}),
    )
    .expect_status(201);
}
