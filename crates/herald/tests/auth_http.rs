//! Authentication and ACLs over HTTP: an auth file written with `herald auth`, a server
//! started with `--auth-file`, and every API checked with no credentials (401), with a
//! principal that has no rights (403), and with scoped rights (only what was granted).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{event, Server};
use serde_json::{json, Value};

const ADMIN_PASSWORD: &str = "admin-pw-5b7e2f";

fn auth_cli(file: &Path, args: &[&str]) -> String {
    let output = Command::new(common::herald_bin())
        .arg("auth")
        .arg("--file")
        .arg(file)
        .args(args)
        .env("ADMIN_PASSWORD", ADMIN_PASSWORD)
        .stdin(Stdio::null())
        .output()
        .expect("run herald auth");
    assert!(
        output.status.success(),
        "herald auth {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

struct Tokens {
    admin: String,
    alice: String,
    bob: String,
}

fn auth_file(dir: &Path) -> (std::path::PathBuf, Tokens) {
    let file = dir.join("auth.json");
    auth_cli(
        &file,
        &["add-user", "admin", "--password-env", "ADMIN_PASSWORD"],
    );
    let admin = auth_cli(&file, &["add-token", "admin", "--id", "ops"]);
    auth_cli(
        &file,
        &[
            "grant",
            "--principal",
            "admin",
            "--resource",
            "*",
            "--pattern",
            "*",
            "--operations",
            "all",
        ],
    );
    let alice = auth_cli(&file, &["add-token", "alice"]);
    for (resource, pattern, operations) in [
        ("topic", "orders.*", "produce,consume"),
        ("group", "g-*", "consume"),
        ("stream", "order-*", "produce,consume"),
    ] {
        auth_cli(
            &file,
            &[
                "grant",
                "--principal",
                "alice",
                "--resource",
                resource,
                "--pattern",
                pattern,
                "--operations",
                operations,
            ],
        );
    }
    let bob = auth_cli(&file, &["add-token", "bob"]);
    (file, Tokens { admin, alice, bob })
}

/// Every route of the API with sample parameters and a body where one is needed.
fn every_protected_route() -> Vec<(&'static str, String, Option<Value>)> {
    let queue_sub = json!({"name": "s1", "topic": "orders.x", "target": {"type": "queue"}});
    let mut routes: Vec<(&'static str, String, Option<Value>)> = vec![
        ("GET", "/metrics".into(), None),
        ("POST", "/v1/topics".into(), Some(json!({"name": "t1"}))),
        ("GET", "/v1/topics/t1".into(), None),
        ("DELETE", "/v1/topics/t1".into(), None),
        (
            "POST",
            "/v1/topics/t1/events".into(),
            Some(json!([event("e1")])),
        ),
        ("GET", "/v1/topics/t1/events?partition=0".into(), None),
        ("GET", "/v1/topics/t1/sse".into(), None),
        (
            "POST",
            "/v1/schemas/order.created".into(),
            Some(json!({"type": "object"})),
        ),
        ("DELETE", "/v1/schemas/order.created".into(), None),
        ("GET", "/v1/groups".into(), None),
        ("GET", "/v1/groups/g1".into(), None),
        ("DELETE", "/v1/groups/g1".into(), None),
        (
            "POST",
            "/v1/groups/g1/reset".into(),
            Some(json!({"offset": "earliest"})),
        ),
        (
            "POST",
            "/v1/groups/g1/members".into(),
            Some(json!({"topics": ["t1"]})),
        ),
        ("DELETE", "/v1/groups/g1/members/m1".into(), None),
        ("GET", "/v1/groups/g1/members/m1/events".into(), None),
        ("POST", "/v1/groups/g1/members/m1/heartbeat".into(), None),
        (
            "POST",
            "/v1/groups/g1/members/m1/commit".into(),
            Some(json!({"offsets": []})),
        ),
        ("GET", "/v1/subscriptions".into(), None),
        ("POST", "/v1/subscriptions".into(), Some(queue_sub)),
        ("GET", "/v1/subscriptions/s1".into(), None),
        ("DELETE", "/v1/subscriptions/s1".into(), None),
        ("GET", "/v1/subscriptions/s1/dlq".into(), None),
        (
            "POST",
            "/v1/subscriptions/s1/dlq/redrive".into(),
            Some(json!({})),
        ),
        ("GET", "/v1/subscriptions/s1/sse".into(), None),
        ("GET", "/v1/subscriptions/s1/ws".into(), None),
        ("GET", "/v1/streams".into(), None),
        (
            "POST",
            "/v1/streams/acct-1".into(),
            Some(json!({"events": []})),
        ),
        ("GET", "/v1/streams/acct-1".into(), None),
        ("GET", "/v1/streams/$all".into(), None),
        ("DELETE", "/v1/streams/acct-1".into(), None),
        ("GET", "/v1/streams/acct-1/metadata".into(), None),
        ("PUT", "/v1/streams/acct-1/metadata".into(), Some(json!({}))),
        ("GET", "/v1/streams/acct-1/snapshot".into(), None),
        ("PUT", "/v1/streams/acct-1/snapshot".into(), Some(json!({}))),
        ("GET", "/v1/streams/acct-1/subscribe".into(), None),
        ("GET", "/v1/categories/acct/subscribe".into(), None),
        ("GET", "/v1/persistent".into(), None),
        (
            "POST",
            "/v1/persistent".into(),
            Some(json!({"group": "p1", "target": "$all"})),
        ),
        ("GET", "/v1/persistent/p1".into(), None),
        ("DELETE", "/v1/persistent/p1".into(), None),
        ("POST", "/v1/persistent/p1/read".into(), Some(json!({}))),
        (
            "POST",
            "/v1/persistent/p1/ack".into(),
            Some(json!({"receipts": []})),
        ),
        (
            "POST",
            "/v1/persistent/p1/nack".into(),
            Some(json!({"receipts": []})),
        ),
        ("GET", "/v1/persistent/p1/parked".into(), None),
        (
            "POST",
            "/v1/persistent/p1/parked/replay".into(),
            Some(json!({})),
        ),
        ("GET", "/v1/console/topology".into(), None),
        ("GET", "/v1/console/topics/t1/events".into(), None),
        ("GET", "/v1/console/chains/c1".into(), None),
    ];
    for op in ["pull", "ack", "nack", "extend"] {
        routes.push((
            "POST",
            format!("/v1/subscriptions/s1/{op}"),
            Some(json!({})),
        ));
    }
    routes
}

#[test]
fn every_api_needs_credentials_and_rights() {
    let dir = tempfile::tempdir().unwrap();
    let (file, tokens) = auth_file(dir.path());
    let server = Server::start_with_args(&["--auth-file", file.to_str().unwrap()]);
    let anonymous = server.api();

    // Public: health checks and the console's static assets.
    anonymous.get("/healthz").expect_status(200);
    anonymous.get("/readyz").expect_status(200);
    anonymous.get("/ui/").expect_status(200);
    anonymous.get("/ui/app.js").expect_status(200);

    let bob = anonymous.with_token(&tokens.bob);
    let forged = anonymous.with_token("hrld_not-a-real-token");
    for (method, path, body) in every_protected_route() {
        let reply = anonymous.request(method, &path, body.as_ref());
        reply.expect_error(401, "unauthenticated");
        assert!(
            reply.headers.contains_key("www-authenticate"),
            "{method} {path}"
        );
        forged
            .request(method, &path, body.as_ref())
            .expect_error(401, "unauthenticated");
        bob.request(method, &path, body.as_ref())
            .expect_error(403, "forbidden");
    }
    // Unknown paths are 401 before auth, 404 after.
    anonymous
        .get("/v1/nope")
        .expect_error(401, "unauthenticated");
    bob.get("/v1/nope").expect_error(404, "not_found");
    // Routes open to any authenticated principal show nothing it has no right on.
    let admin = anonymous.with_token(&tokens.admin);
    admin.create_topic("hidden", 1);
    let listed = bob.get("/v1/topics").expect_status(200);
    assert_eq!(listed.body["topics"], json!([]), "{}", listed.text);
    bob.get("/v1/schemas").expect_status(200);

    // The admin (all rights) passes the same sweep's checks: no 401/403 anywhere.
    // Only the status is read: streaming routes (SSE, subscribe) never end their body.
    for (method, path, body) in every_protected_route() {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = admin.client().request(method.clone(), admin.url(&path));
        if let Some(body) = &body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let status = request.send().expect("admin request").status().as_u16();
        assert!(
            status != 401 && status != 403,
            "admin {method} {path}: {status}"
        );
    }

    // Secrets never reach the logs.
    let logs = server.stderr_tail();
    let secrets = [
        tokens.admin.as_str(),
        tokens.alice.as_str(),
        tokens.bob.as_str(),
        ADMIN_PASSWORD,
    ];
    for secret in secrets {
        assert!(!logs.contains(secret), "a secret was logged");
    }
    let stored = std::fs::read_to_string(&file).unwrap();
    for secret in secrets {
        assert!(!stored.contains(secret), "a secret is stored in clear");
    }
}

#[test]
fn scoped_rights_allow_exactly_what_was_granted() {
    let dir = tempfile::tempdir().unwrap();
    let (file, tokens) = auth_file(dir.path());
    let server = Server::start_with_args(&["--auth-file", file.to_str().unwrap()]);
    let admin = server.api().with_token(&tokens.admin);
    let alice = server.api().with_token(&tokens.alice);
    admin.create_topic("orders.eu", 1);
    admin.create_topic("payments", 1);

    // Produce and consume on orders.* only.
    alice
        .post_json("/v1/topics/orders.eu/events", &json!([event("a1")]))
        .expect_status(200);
    alice
        .post_json("/v1/topics/payments/events", &json!([event("p1")]))
        .expect_error(403, "forbidden");
    let fetched = alice
        .get("/v1/topics/orders.eu/events?partition=0&offset=0")
        .expect_status(200);
    assert_eq!(
        fetched.body["events"].as_array().map(Vec::len),
        Some(1),
        "{}",
        fetched.text
    );
    alice
        .get("/v1/topics/payments/events?partition=0")
        .expect_error(403, "forbidden");
    // No create or delete right.
    alice
        .post_json("/v1/topics", &json!({"name": "orders.new"}))
        .expect_error(403, "forbidden");
    alice
        .delete("/v1/topics/orders.eu")
        .expect_error(403, "forbidden");
    // Listing shows only the topics alice has a right on.
    let names: Vec<String> = alice.get("/v1/topics").expect_status(200).body["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["orders.eu".to_string()]);
    // Groups: g-* only, and only over topics alice may consume.
    alice
        .post_json("/v1/groups/g-1/members", &json!({"topics": ["orders.eu"]}))
        .expect_status(200);
    alice
        .post_json("/v1/groups/g-1/members", &json!({"topics": ["payments"]}))
        .expect_error(403, "forbidden");
    alice
        .post_json(
            "/v1/groups/other/members",
            &json!({"topics": ["orders.eu"]}),
        )
        .expect_error(403, "forbidden");
    // Subscriptions need their own rights.
    alice
        .post_json(
            "/v1/subscriptions",
            &json!({"name": "s", "topic": "orders.eu", "target": {"type": "queue"}}),
        )
        .expect_error(403, "forbidden");
    // Event-store streams: order-* only; a category subscription covers order-*.
    alice
        .post_json("/v1/streams/order-1", &json!({"events": [event("o1")]}))
        .expect_status(200);
    alice.get("/v1/streams/order-1").expect_status(200);
    alice
        .get("/v1/streams/acct-1")
        .expect_error(403, "forbidden");
    alice.get("/v1/streams/$all").expect_error(403, "forbidden");

    // Browsers' EventSource cannot send headers: the token may come in the query.
    let sse = server
        .api()
        .client()
        .get(server.api().url(&format!(
            "/v1/topics/orders.eu/sse?offset=earliest&access_token={}",
            tokens.alice
        )))
        .send()
        .expect("sse request");
    assert_eq!(sse.status().as_u16(), 200);
    drop(sse);

    // Basic authentication with the password credential.
    let basic = |user: &str, password: &str| {
        use base64::Engine as _;
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        server.api().with_authorization(&format!("Basic {encoded}"))
    };
    basic("admin", ADMIN_PASSWORD)
        .get("/v1/groups")
        .expect_status(200);
    basic("admin", "wrong")
        .get("/v1/groups")
        .expect_error(401, "unauthenticated");
    basic("nobody", ADMIN_PASSWORD)
        .get("/v1/groups")
        .expect_error(401, "unauthenticated");
    server
        .api()
        .with_authorization("Digest abc")
        .get("/v1/groups")
        .expect_error(401, "unauthenticated");
}

#[test]
fn a_bad_auth_file_stops_the_server_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("auth.json");
    std::fs::write(&file, r#"{"users":[{"name":"../x"}]}"#).unwrap();
    let output = Command::new(common::herald_bin())
        .args([
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--no-kafka",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .arg("--auth-file")
        .arg(&file)
        .output()
        .expect("run herald serve");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid user name"), "{stderr}");
}
