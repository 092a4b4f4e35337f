//! Schemas per event type: publishes are validated (400 naming the data path), new
//! versions must be backward compatible (409 otherwise), the registry survives restarts.

mod common;

use common::{event_with_data, Server};
use serde_json::json;

fn order(id: &str, data: serde_json::Value) -> serde_json::Value {
    let mut e = event_with_data(id, data);
    e["type"] = json!("order.created");
    e
}

#[test]
fn schemas_validate_publishes_and_gate_new_versions() {
    let mut server = Server::start();
    let api = server.api();
    api.create_topic("orders", 1);
    let v1 = json!({
        "type": "object",
        "properties": {"amount": {"type": "number", "minimum": 0}, "items": {"type": "array", "items": {"type": "object", "properties": {"sku": {"type": "string"}}, "required": ["sku"]}}},
        "required": ["amount"],
        "additionalProperties": false
    });
    let reply = api
        .post_json("/v1/schemas/order.created", &v1)
        .expect_status(201);
    assert_eq!(reply.body["version"], json!(1));
    // Registering the same schema again is idempotent.
    api.post_json("/v1/schemas/order.created", &v1)
        .expect_status(200);

    api.post_json(
        "/v1/topics/orders/events",
        &order("o-1", json!({"amount": 12.5})),
    )
    .expect_status(200);
    let bad = api.post_json(
        "/v1/topics/orders/events",
        &order("o-2", json!({"amount": "12"})),
    );
    bad.expect_error(400, "data_schema_violation");
    assert_eq!(bad.error_field(), Some("[0].data/amount"), "{}", bad.text);
    let nested = api.post_json(
        "/v1/topics/orders/events",
        &order(
            "o-3",
            json!({"amount": 1, "items": [{"sku": "a"}, {"qty": 2}]}),
        ),
    );
    nested.expect_error(400, "data_schema_violation");
    assert_eq!(
        nested.error_field(),
        Some("[0].data/items/1"),
        "{}",
        nested.text
    );
    // Other types are not affected.
    api.post_json(
        "/v1/topics/orders/events",
        &event_with_data("x-1", json!("anything")),
    )
    .expect_status(200);

    // A new required field would reject events v1 accepted: refused.
    let breaking = json!({"type": "object", "properties": {"amount": {"type": "number"}, "currency": {"type": "string"}}, "required": ["amount", "currency"]});
    api.post_json("/v1/schemas/order.created", &breaking)
        .expect_error(409, "schema_incompatible");
    // An added optional field is fine (v1 allowed no other fields, so no v1 event has it).
    let v2 = json!({
        "type": "object",
        "properties": {"amount": {"type": "number", "minimum": 0}, "items": {"type": "array", "items": {"type": "object", "properties": {"sku": {"type": "string"}}, "required": ["sku"]}}, "note": {"type": "string"}},
        "required": ["amount"],
        "additionalProperties": false
    });
    assert_eq!(
        api.post_json("/v1/schemas/order.created", &v2)
            .expect_status(201)
            .body["version"],
        json!(2)
    );
    api.post_json(
        "/v1/schemas/order.created",
        &json!({"type": "object", "$ref": "http://example.com/x"}),
    )
    .expect_status(400);

    server.kill9();
    server.restart();
    let api = server.api();
    let latest = api.get("/v1/schemas/order.created").expect_status(200);
    assert_eq!(latest.body["version"], json!(2));
    assert_eq!(
        api.get("/v1/schemas/order.created/versions/1")
            .expect_status(200)
            .body["schema"],
        v1
    );
    api.get("/v1/schemas/order.created/versions/9")
        .expect_error(404, "schema_version_not_found");
    let listed = api.get("/v1/schemas").expect_status(200);
    assert_eq!(listed.body["schemas"][0]["type"], json!("order.created"));
    api.post_json(
        "/v1/topics/orders/events",
        &order("o-4", json!({"amount": -1})),
    )
    .expect_error(400, "data_schema_violation");
    api.delete("/v1/schemas/order.created").expect_status(204);
    api.post_json(
        "/v1/topics/orders/events",
        &order("o-5", json!({"amount": "free"})),
    )
    .expect_status(200);
    api.get("/v1/schemas/order.created")
        .expect_error(404, "schema_type_not_found");
}

#[test]
fn schemas_cli_register_list_get_delete() {
    use std::time::Duration;
    let server = Server::start();
    let url = server.url();
    let schema = br#"{"type": "object", "required": ["total"], "properties": {"total": {"type": "number"}}}"#;
    let out = common::run_cli(
        &url,
        &[
            "--json",
            "schemas",
            "register",
            "cart.checked-out",
            "--file",
            "-",
        ],
        Some(schema),
        Duration::from_secs(20),
    )
    .success();
    assert_eq!(out.json_lines()[0]["version"], json!(1));
    let listed = common::run_cli(
        &url,
        &["--json", "schemas", "list"],
        None,
        Duration::from_secs(20),
    )
    .success();
    assert_eq!(listed.json_lines()[0]["type"], json!("cart.checked-out"));
    let got = common::run_cli(
        &url,
        &["--json", "schemas", "get", "cart.checked-out"],
        None,
        Duration::from_secs(20),
    )
    .success();
    assert_eq!(got.json_lines()[0]["schema"]["required"], json!(["total"]));
    common::run_cli(
        &url,
        &["schemas", "delete", "cart.checked-out"],
        None,
        Duration::from_secs(20),
    )
    .success();
    let missing = common::run_cli(
        &url,
        &["schemas", "get", "cart.checked-out"],
        None,
        Duration::from_secs(20),
    );
    assert!(!missing.status.success(), "getting a deleted schema fails");
}
