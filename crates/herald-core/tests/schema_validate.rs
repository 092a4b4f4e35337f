//! Compiling schemas and validating data: drafts, refused schemas, violation paths.

use herald_core::schema::{
    CompiledSchema, SchemaDraft, SchemaError, SchemaViolation, SCHEMA_BYTES_MAX, VIOLATIONS_MAX,
    VIOLATION_MESSAGE_BYTES_MAX,
};
use serde_json::{json, Value};

fn compile(schema: Value) -> CompiledSchema {
    CompiledSchema::compile(&schema).expect("schema compiles")
}

fn compile_error(schema: Value) -> SchemaError {
    CompiledSchema::compile(&schema).expect_err("schema is refused")
}

fn order_schema() -> Value {
    json!({
        "type": "object",
        "required": ["items"],
        "properties": {
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["sku", "price"],
                    "properties": {
                        "sku": {"type": "string"},
                        "price": {"type": "number", "minimum": 0}
                    }
                }
            }
        }
    })
}

#[test]
fn violation_names_the_data_path() {
    let schema = compile(order_schema());
    assert!(schema
        .validate(&json!({"items": [{"sku": "a", "price": 1.5}]}))
        .is_ok());
    let violations = schema
        .validate(&json!({"items": [{"sku": "a", "price": "free"}]}))
        .expect_err("price must be a number");
    assert_eq!(violations.len(), 1);
    let violation = &violations[0];
    assert_eq!(violation.instance_path, "/items/0/price");
    assert_eq!(violation.field(), "data/items/0/price");
    assert_eq!(
        violation.schema_path,
        "/properties/items/items/properties/price/type"
    );
    assert!(
        violation.message.contains("number"),
        "{}",
        violation.message
    );
    assert!(violation.to_string().starts_with("data/items/0/price: "));
}

#[test]
fn every_violation_is_reported_up_to_the_limit() {
    let schema = compile(order_schema());
    let violations = schema
        .validate(&json!({"items": [{"price": -1}, {"sku": 3, "price": 0}]}))
        .expect_err("invalid");
    let paths: Vec<&str> = violations
        .iter()
        .map(|v| v.instance_path.as_str())
        .collect();
    assert!(paths.contains(&"/items/0"), "{paths:?}"); // missing sku
    assert!(paths.contains(&"/items/0/price"), "{paths:?}");
    assert!(paths.contains(&"/items/1/sku"), "{paths:?}");

    let many = compile(json!({"type": "array", "items": {"type": "string"}}));
    let data = Value::Array((0..100).map(|i| json!(i)).collect());
    assert_eq!(
        many.validate(&data).expect_err("invalid").len(),
        VIOLATIONS_MAX
    );
}

#[test]
fn root_violation_has_empty_pointer() {
    let schema = compile(json!({"type": "object"}));
    let violations = schema.validate(&json!(3)).expect_err("not an object");
    assert_eq!(violations[0].instance_path, "");
    assert_eq!(violations[0].field(), "data");
}

#[test]
fn long_values_are_cut_in_messages() {
    let schema = compile(json!({"type": "integer"}));
    let long = "x".repeat(10_000);
    let violations = schema.validate(&json!(long)).expect_err("not an integer");
    assert!(violations[0].message.len() <= VIOLATION_MESSAGE_BYTES_MAX);
    assert!(violations[0].message.ends_with("..."));
}

#[test]
fn drafts() {
    assert_eq!(compile(json!({})).draft(), SchemaDraft::Draft202012);
    let draft7 = compile(json!({"$schema": "http://json-schema.org/draft-07/schema#"}));
    assert_eq!(draft7.draft(), SchemaDraft::Draft7);
    let explicit = compile(json!({"$schema": "https://json-schema.org/draft/2020-12/schema"}));
    assert_eq!(explicit.draft(), SchemaDraft::Draft202012);
    // Array-form items: a tuple in draft-07, refused by the 2020-12 meta-schema.
    let tuple = compile(json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "items": [{"type": "string"}],
        "additionalItems": false
    }));
    assert!(tuple.is_valid(&json!(["a"])));
    assert!(!tuple.is_valid(&json!(["a", 1])));
    assert!(matches!(
        compile_error(json!({"items": [{"type": "string"}]})),
        SchemaError::Invalid { path, .. } if path == "/items"
    ));
    // 2020-12 tuples.
    let prefix = compile(json!({"prefixItems": [{"type": "string"}], "items": false}));
    assert!(prefix.is_valid(&json!(["a"])));
    assert!(!prefix.is_valid(&json!(["a", 1])));
}

#[test]
fn formats_are_asserted_in_both_drafts() {
    for schema in [
        json!({"format": "email"}),
        json!({"$schema": "http://json-schema.org/draft-07/schema#", "format": "email"}),
    ] {
        let schema = compile(schema);
        assert!(schema.is_valid(&json!("a@example.com")));
        assert!(!schema.is_valid(&json!("not an address")));
    }
}

#[test]
fn local_references_resolve() {
    let schema = compile(json!({
        "$defs": {"price": {"type": "number", "minimum": 0}},
        "properties": {"amount": {"$ref": "#/$defs/price"}}
    }));
    assert!(schema.is_valid(&json!({"amount": 2})));
    let violations = schema
        .validate(&json!({"amount": -2}))
        .expect_err("negative");
    assert_eq!(violations[0].instance_path, "/amount");
}

#[test]
fn unsupported_drafts_are_refused() {
    let error = compile_error(json!({"$schema": "http://json-schema.org/draft-04/schema#"}));
    assert!(matches!(&error, SchemaError::UnsupportedDraft { path, .. } if path == "/$schema"));
    assert_eq!(error.code(), "schema_unsupported_draft");
    assert!(error.to_string().contains("draft-07"));
    let error = compile_error(json!({"$schema": 7}));
    assert!(matches!(error, SchemaError::Invalid { .. }));
}

#[test]
fn remote_references_are_refused_never_fetched() {
    for reference in [
        "https://example.com/schemas/order.json",
        "http://127.0.0.1:1/x.json",
        "file:///etc/passwd",
        "order.json#/a",
    ] {
        let error = compile_error(json!({
            "type": "object",
            "properties": {"customer": {"$ref": reference}}
        }));
        match &error {
            SchemaError::RemoteReference { path, reference: r } => {
                assert_eq!(path, "/properties/customer/$ref");
                assert_eq!(r, reference);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(error.code(), "schema_remote_reference");
        assert!(error.to_string().contains("nothing is ever fetched"));
    }
    // Hidden in a combinator, or as a dynamic reference.
    let error = compile_error(json!({"anyOf": [{"$dynamicRef": "https://example.com/x"}]}));
    assert!(
        matches!(&error, SchemaError::RemoteReference { path, .. } if path == "/anyOf/0/$dynamicRef")
    );
    // A `$ref` key inside data (enum, const, examples) is not a reference.
    compile(json!({"enum": [{"$ref": "https://example.com"}], "examples": [{"$ref": "x"}]}));
}

#[test]
fn invalid_schemas_name_the_problem() {
    let error = compile_error(json!({"properties": {"a": {"type": "strin"}}}));
    assert!(matches!(&error, SchemaError::Invalid { path, .. } if path == "/properties/a/type"));
    assert!(error.to_string().starts_with("schema/properties/a/type: "));
    let error = compile_error(json!({"properties": {"a": {"pattern": "(["}}}));
    assert!(matches!(&error, SchemaError::Invalid { path, .. } if path == "/properties/a/pattern"));
    let error = compile_error(json!({"minLength": -1}));
    assert!(matches!(&error, SchemaError::Invalid { path, .. } if path == "/minLength"));
    let error = compile_error(json!({"$ref": "#/$defs/missing"}));
    assert!(error.to_string().contains("missing"), "{error}");
    let error = compile_error(
        json!({"properties": {"a": {}}, "$defs": {"x": {"$schema": "http://json-schema.org/draft-07/schema#"}}}),
    );
    assert!(matches!(&error, SchemaError::Invalid { path, .. } if path == "/$defs/x/$schema"));
    assert!(matches!(
        compile_error(json!(3)),
        SchemaError::Invalid { .. }
    ));
    assert_eq!(compile_error(json!(3)).code(), "schema_invalid");
}

#[test]
fn limits() {
    let mut deep = json!({"type": "string"});
    for _ in 0..70 {
        deep = json!({"items": deep});
    }
    assert!(matches!(compile_error(deep), SchemaError::TooDeep { .. }));
    let big = json!({"description": "x".repeat(SCHEMA_BYTES_MAX)});
    assert!(matches!(compile_error(big), SchemaError::TooLarge { .. }));
}

#[test]
fn boolean_schemas() {
    assert!(compile(json!(true)).is_valid(&json!({"anything": 1})));
    let violations: Vec<SchemaViolation> = compile(json!(false))
        .validate(&json!(1))
        .expect_err("false rejects all");
    assert_eq!(violations[0].instance_path, "");
}
