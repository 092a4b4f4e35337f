//! The schema registry: versions, the compatibility gate, event validation, persistence.

use herald_core::schema::{
    dataschema_uri, Compatibility, EventSchemaError, Registration, RegistryError, SchemaRegistry,
};
use herald_core::{CloudEvent, Data};
use serde_json::{json, Value};

const ORDER: &str = "com.example.order.created";

fn order_v1() -> Value {
    json!({
        "type": "object",
        "required": ["id", "items"],
        "properties": {
            "id": {"type": "string"},
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"price": {"type": "integer"}}
                }
            }
        }
    })
}

/// v1 with prices widened to any number and `id` no longer required: backward compatible.
fn order_v2() -> Value {
    json!({
        "type": "object",
        "required": ["items"],
        "properties": {
            "id": {"type": "string"},
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"price": {"type": "number"}}
                }
            }
        }
    })
}

fn created(version: u32) -> Registration {
    Registration {
        version,
        created: true,
    }
}

fn event(ty: &str, data: Value) -> CloudEvent {
    CloudEvent::new("e1", "/shop", ty).with_json_data(&data)
}

#[test]
fn versions_are_numbered_and_identical_schemas_reuse_theirs() {
    let mut registry = SchemaRegistry::new();
    assert_eq!(registry.register(ORDER, &order_v1()), Ok(created(1)));
    assert_eq!(registry.register(ORDER, &order_v2()), Ok(created(2)));
    // Same JSON (key order does not matter): existing version, nothing new.
    let reordered: Value = serde_json::from_str(&order_v2().to_string()).expect("json");
    assert_eq!(
        registry.register(ORDER, &reordered),
        Ok(Registration {
            version: 2,
            created: false
        })
    );
    assert_eq!(
        registry.register(ORDER, &order_v1()),
        Ok(Registration {
            version: 1,
            created: false
        })
    );
    let latest = registry.latest(ORDER).expect("latest");
    assert_eq!(latest.version, 2);
    assert_eq!(latest.schema.schema(), &order_v2());
    assert_eq!(
        registry.get(ORDER, 1).map(|s| s.schema()),
        Some(&order_v1())
    );
    assert!(registry.get(ORDER, 3).is_none());
    assert!(registry.get(ORDER, 0).is_none());
    assert!(registry.latest("other").is_none());
    let versions: Vec<u32> = registry.versions(ORDER).iter().map(|v| v.version).collect();
    assert_eq!(versions, vec![1, 2]);
    assert!(registry.versions("other").is_empty());
}

#[test]
fn incompatible_versions_are_refused_with_the_reason() {
    let mut registry = SchemaRegistry::new();
    registry.register(ORDER, &order_v1()).expect("v1");
    let mut breaking = order_v1();
    breaking["properties"]["items"]["items"]["properties"]["price"] = json!({"type": "string"});
    let error = registry.register(ORDER, &breaking).expect_err("breaking");
    match &error {
        RegistryError::Incompatible {
            ty,
            latest_version,
            incompatibilities,
        } => {
            assert_eq!(ty, ORDER);
            assert_eq!(*latest_version, 1);
            assert_eq!(
                incompatibilities[0].path,
                "properties.items.items.properties.price.type"
            );
            assert_eq!(
                incompatibilities[0].reason,
                "integer accepted before, now only string"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(error.code(), "schema_incompatible");
    assert!(error
        .to_string()
        .contains("not backward compatible with version 1"));
    // Nothing was added.
    assert_eq!(registry.latest(ORDER).map(|l| l.version), Some(1));
    // The dry run agrees, and says what a compatible one would get.
    assert!(registry.check(ORDER, &breaking).is_err());
    assert_eq!(registry.check(ORDER, &order_v2()), Ok(created(2)));
    assert_eq!(registry.latest(ORDER).map(|l| l.version), Some(1));
}

#[test]
fn compatibility_none_lets_anything_valid_through() {
    let mut registry = SchemaRegistry::new();
    assert_eq!(registry.compatibility(ORDER), Compatibility::Backward);
    registry.register(ORDER, &order_v1()).expect("v1");
    registry
        .set_compatibility(ORDER, Compatibility::None)
        .expect("mode");
    assert_eq!(registry.compatibility(ORDER), Compatibility::None);
    assert_eq!(
        registry.register(ORDER, &json!({"type": "string"})),
        Ok(created(2))
    );
    // Still no unusable schema.
    assert!(matches!(
        registry.register(ORDER, &json!({"$ref": "https://example.com/x"})),
        Err(RegistryError::Schema { .. })
    ));
    registry
        .set_compatibility(ORDER, Compatibility::Backward)
        .expect("mode");
    assert!(registry
        .register(ORDER, &json!({"type": "integer"}))
        .is_err());
}

#[test]
fn list_and_delete() {
    let mut registry = SchemaRegistry::new();
    registry.register("b.type", &json!({})).expect("b");
    registry.register(ORDER, &order_v1()).expect("v1");
    registry.register(ORDER, &order_v2()).expect("v2");
    registry
        .set_compatibility("c.type", Compatibility::None)
        .expect("mode");
    let listed: Vec<(String, Option<u32>, usize)> = registry
        .list()
        .into_iter()
        .map(|t| (t.ty, t.latest_version, t.version_count))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("b.type".to_string(), Some(1), 1),
            ("c.type".to_string(), None, 0),
            (ORDER.to_string(), Some(2), 2),
        ]
    );
    assert_eq!(registry.delete(ORDER), Ok(2));
    assert_eq!(
        registry.delete(ORDER),
        Err(RegistryError::UnknownType {
            ty: ORDER.to_string()
        })
    );
    // A deleted type starts over, without the old gate.
    assert_eq!(
        registry.register(ORDER, &json!({"type": "string"})),
        Ok(created(1))
    );
}

#[test]
fn type_names_are_checked() {
    let mut registry = SchemaRegistry::new();
    for bad in ["", "a\nb", &"t".repeat(300)] {
        let error = registry.register(bad, &json!({})).expect_err("bad type");
        assert_eq!(error.code(), "schema_type_invalid");
    }
}

#[test]
fn events_are_validated_against_the_latest_version() {
    let mut registry = SchemaRegistry::new();
    registry.register(ORDER, &order_v1()).expect("v1");
    registry.register(ORDER, &order_v2()).expect("v2");
    let fractional = json!({"id": "o1", "items": [{"price": 2.5}]});
    assert_eq!(
        registry.validate_event(&event(ORDER, fractional)),
        Ok(Some(2))
    );

    let error = registry
        .validate_event(&event(ORDER, json!({"items": [{"price": "x"}]})))
        .expect_err("price is a string");
    match &error {
        EventSchemaError::Violations {
            ty,
            version,
            violations,
        } => {
            assert_eq!(ty, ORDER);
            assert_eq!(*version, 2);
            assert_eq!(violations[0].instance_path, "/items/0/price");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(error.field(), "data/items/0/price");
    assert_eq!(error.code(), "data_schema_violation");

    // Types without a schema pass, whatever their data.
    let unknown = CloudEvent::new("e2", "/s", "no.schema");
    assert_eq!(registry.validate_event(&unknown), Ok(None));
}

#[test]
fn dataschema_selects_a_version() {
    let mut registry = SchemaRegistry::new();
    registry.register(ORDER, &order_v1()).expect("v1");
    registry.register(ORDER, &order_v2()).expect("v2");
    // Valid under v2 (no id), not under v1.
    let data = json!({"items": []});
    let mut pinned = event(ORDER, data.clone());
    pinned.dataschema = Some(dataschema_uri(ORDER, 1));
    assert_eq!(
        pinned.dataschema.as_deref(),
        Some("herald:schema:com.example.order.created:1")
    );
    let error = registry
        .validate_event(&pinned)
        .expect_err("v1 requires id");
    assert!(matches!(
        error,
        EventSchemaError::Violations { version: 1, .. }
    ));

    pinned.dataschema = Some(dataschema_uri(ORDER, 2));
    assert_eq!(registry.validate_event(&pinned), Ok(Some(2)));

    pinned.dataschema = Some(dataschema_uri(ORDER, 9));
    let error = registry.validate_event(&pinned).expect_err("no v9");
    assert_eq!(
        error,
        EventSchemaError::UnknownVersion {
            ty: ORDER.to_string(),
            version: 9
        }
    );
    assert_eq!(error.field(), "dataschema");

    pinned.dataschema = Some(dataschema_uri("other.type", 1));
    assert!(matches!(
        registry.validate_event(&pinned),
        Err(EventSchemaError::DataschemaTypeMismatch { .. })
    ));

    for bad in [
        "herald:schema:",
        "herald:schema:x",
        "herald:schema:x:0",
        "herald:schema::1",
        "herald:schema:x:v1",
    ] {
        pinned.dataschema = Some(bad.to_string());
        assert!(
            matches!(
                registry.validate_event(&pinned),
                Err(EventSchemaError::BadDataschema { .. })
            ),
            "{bad}"
        );
    }

    // Any other URI: the latest version.
    pinned.dataschema = Some("https://example.com/schemas/order.json".to_string());
    assert_eq!(registry.validate_event(&pinned), Ok(Some(2)));
}

#[test]
fn data_must_be_json_when_a_schema_exists() {
    let mut registry = SchemaRegistry::new();
    registry.register(ORDER, &order_v1()).expect("v1");
    let mut binary = CloudEvent::new("e1", "/s", ORDER);
    binary.data = Some(Data::Binary(bytes::Bytes::from_static(b"\x00\x01")));
    assert_eq!(
        registry.validate_event(&binary),
        Err(EventSchemaError::NotJson {
            ty: ORDER.to_string()
        })
    );
    // No data is validated as null.
    let empty = CloudEvent::new("e1", "/s", ORDER);
    assert!(matches!(
        registry.validate_event(&empty),
        Err(EventSchemaError::Violations { .. })
    ));
    registry
        .register("nullable", &json!({"type": ["object", "null"]}))
        .expect("nullable");
    assert_eq!(
        registry.validate_event(&CloudEvent::new("e2", "/s", "nullable")),
        Ok(Some(1))
    );
}

#[test]
fn persists_as_json_and_loads_back() {
    let mut registry = SchemaRegistry::new();
    registry.register(ORDER, &order_v1()).expect("v1");
    registry.register(ORDER, &order_v2()).expect("v2");
    registry
        .set_compatibility("legacy", Compatibility::None)
        .expect("mode");
    let text = serde_json::to_string(&registry).expect("serialize");
    let stored: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(stored["format_version"], 1);
    assert_eq!(stored["types"][ORDER]["versions"][1], order_v2());
    assert_eq!(stored["types"]["legacy"]["compatibility"], "none");

    let loaded: SchemaRegistry = serde_json::from_str(&text).expect("deserialize");
    assert_eq!(loaded.list(), registry.list());
    assert_eq!(
        loaded.validate_event(&event(ORDER, json!({"items": [{"price": 1.5}]}))),
        Ok(Some(2))
    );
    assert_eq!(serde_json::to_string(&loaded).expect("serialize"), text);
}

#[test]
fn loads_the_version_1_fixture() {
    let text = include_str!("fixtures/schema_registry_v1.json");
    let registry: SchemaRegistry = serde_json::from_str(text).expect("fixture loads");
    let summaries = registry.list();
    assert_eq!(summaries.len(), 3);
    assert_eq!(registry.latest(ORDER).map(|l| l.version), Some(2));
    assert_eq!(
        registry.compatibility("com.example.legacy"),
        Compatibility::None
    );
    assert_eq!(
        registry.validate_event(&event("com.example.legacy", json!("text"))),
        Ok(Some(1))
    );
    assert!(registry.latest("com.example.reserved").is_none());
}

#[test]
fn refuses_unknown_formats_and_unusable_stored_schemas() {
    let future = json!({"format_version": 2, "types": {}});
    let error = serde_json::from_value::<SchemaRegistry>(future).expect_err("format 2");
    assert!(error.to_string().contains("format version 2"), "{error}");
    let broken = json!({"format_version": 1, "types": {"t": {"versions": [{"type": "strin"}]}}});
    let error = serde_json::from_value::<SchemaRegistry>(broken).expect_err("bad schema");
    assert!(
        error.to_string().contains("type \"t\" version 1"),
        "{error}"
    );
}

#[test]
fn registry_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SchemaRegistry>();
}
