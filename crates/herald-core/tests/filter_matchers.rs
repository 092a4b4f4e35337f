//! Every matcher of the filter language, against events built from JSON.

use herald_core::filter::Filter;
use herald_core::{CloudEvent, ExtensionValue};
use serde_json::{json, Value};

fn event(extra: Value) -> CloudEvent {
    let mut v =
        json!({"specversion": "1.0", "id": "e1", "source": "/shop/eu", "type": "order.created"});
    if let (Some(base), Value::Object(extra)) = (v.as_object_mut(), extra) {
        base.extend(extra);
    }
    CloudEvent::from_json_value(v).expect("valid event")
}

fn matches(pattern: Value, event: &CloudEvent) -> bool {
    let filter = Filter::compile(&pattern).expect("valid pattern");
    let explained = filter.explain(event);
    let matched = filter.matches(event);
    assert_eq!(
        explained.matched, matched,
        "explain disagrees: {explained:#?}"
    );
    matched
}

#[test]
fn exact_values_on_attributes_and_data() {
    let e = event(
        json!({"subject": "o-1", "data": {"total": 5, "paid": true, "note": null, "tag": ""}}),
    );
    assert!(matches(json!({"type": ["order.created"]}), &e));
    assert!(matches(json!({"type": ["x", "order.created"]}), &e));
    assert!(!matches(json!({"type": ["order.Created"]}), &e));
    assert!(matches(
        json!({"source": ["/shop/eu"], "subject": ["o-1"]}),
        &e
    ));
    assert!(!matches(
        json!({"source": ["/shop/eu"], "subject": ["o-2"]}),
        &e
    ));
    assert!(matches(json!({"specversion": ["1.0"], "id": ["e1"]}), &e));
    assert!(matches(json!({"data": {"total": [5]}}), &e));
    assert!(matches(json!({"data": {"total": [5.0]}}), &e));
    assert!(!matches(json!({"data": {"total": ["5"]}}), &e));
    assert!(matches(json!({"data": {"paid": [true]}}), &e));
    assert!(!matches(json!({"data": {"paid": ["true"]}}), &e));
    assert!(matches(json!({"data": {"note": [null]}}), &e));
    assert!(!matches(json!({"data": {"note": [""]}}), &e));
    assert!(matches(json!({"data": {"tag": [""]}}), &e));
    assert!(!matches(json!({"data": {"tag": [null]}}), &e));
    assert!(!matches(json!({"data": {"missing": [null]}}), &e));
}

#[test]
fn extensions_are_top_level_fields() {
    let mut e = event(json!({"region": "eu-west-1", "tenant": "acme"}));
    e.extensions
        .insert("retries".into(), ExtensionValue::Integer(3));
    e.extensions
        .insert("vip".into(), ExtensionValue::Bool(true));
    assert!(matches(json!({"region": [{"prefix": "eu-"}]}), &e));
    assert!(matches(json!({"retries": [{"numeric": [">=", 3]}]}), &e));
    assert!(matches(json!({"retries": [3]}), &e));
    assert!(matches(json!({"vip": [true]}), &e));
    assert!(!matches(json!({"tenant": ["other"]}), &e));
}

#[test]
fn prefix_and_suffix() {
    let e = event(json!({"data": {"file": "Report.PNG", "n": 12}}));
    assert!(matches(json!({"type": [{"prefix": "order."}]}), &e));
    assert!(matches(json!({"type": [{"prefix": ""}]}), &e));
    assert!(!matches(json!({"type": [{"prefix": "Order."}]}), &e));
    assert!(matches(
        json!({"type": [{"prefix": {"equals-ignore-case": "ORDER."}}]}),
        &e
    ));
    assert!(matches(json!({"data": {"file": [{"suffix": ".PNG"}]}}), &e));
    assert!(!matches(
        json!({"data": {"file": [{"suffix": ".png"}]}}),
        &e
    ));
    assert!(matches(
        json!({"data": {"file": [{"suffix": {"equals-ignore-case": ".png"}}]}}),
        &e
    ));
    // Numbers are not strings.
    assert!(!matches(json!({"data": {"n": [{"prefix": "1"}]}}), &e));
}

#[test]
fn equals_ignore_case() {
    let e = event(json!({"data": {"name": "ÄLICE"}}));
    assert!(matches(
        json!({"data": {"name": [{"equals-ignore-case": "älice"}]}}),
        &e
    ));
    assert!(!matches(
        json!({"data": {"name": [{"equals-ignore-case": "alice"}]}}),
        &e
    ));
    assert!(!matches(
        json!({"data": {"name": [{"equals-ignore-case": "älic"}]}}),
        &e
    ));
}

#[test]
fn wildcard() {
    let e = event(json!({"data": {"path": "/var/lib/x"}}));
    assert!(matches(json!({"type": [{"wildcard": "order.*"}]}), &e));
    assert!(matches(json!({"type": [{"wildcard": "*.created"}]}), &e));
    assert!(matches(
        json!({"type": [{"wildcard": "order.created"}]}),
        &e
    ));
    assert!(!matches(
        json!({"type": [{"wildcard": "order.*.created"}]}),
        &e
    ));
    assert!(matches(
        json!({"data": {"path": [{"wildcard": "*/lib/*"}]}}),
        &e
    ));
}

#[test]
fn anything_but() {
    let e = event(json!({"data": {"state": "running", "count": 3, "none": null, "obj": {"a": 1}}}));
    let state = |m: Value| json!({"data": {"state": [m]}});
    assert!(matches(state(json!({"anything-but": "stopped"})), &e));
    assert!(!matches(state(json!({"anything-but": "running"})), &e));
    assert!(!matches(
        state(json!({"anything-but": ["stopped", "running"]})),
        &e
    ));
    assert!(matches(
        state(json!({"anything-but": {"prefix": "stop"}})),
        &e
    ));
    assert!(!matches(
        state(json!({"anything-but": {"prefix": "run"}})),
        &e
    ));
    assert!(!matches(
        state(json!({"anything-but": {"suffix": "ing"}})),
        &e
    ));
    assert!(!matches(
        state(json!({"anything-but": {"prefix": {"equals-ignore-case": "RUN"}}})),
        &e
    ));
    assert!(!matches(
        state(json!({"anything-but": {"equals-ignore-case": ["RUNNING"]}})),
        &e
    ));
    assert!(matches(
        state(json!({"anything-but": {"equals-ignore-case": "STOPPED"}})),
        &e
    ));
    assert!(!matches(
        state(json!({"anything-but": {"wildcard": "r*g"}})),
        &e
    ));
    assert!(matches(
        state(json!({"anything-but": {"wildcard": ["s*", "x*"]}})),
        &e
    ));
    // Numbers.
    assert!(matches(
        json!({"data": {"count": [{"anything-but": 4}]}}),
        &e
    ));
    assert!(!matches(
        json!({"data": {"count": [{"anything-but": [1, 3]}]}}),
        &e
    ));
    // String forms need a string; the list form accepts any scalar, null included.
    assert!(!matches(
        json!({"data": {"count": [{"anything-but": {"prefix": "x"}}]}}),
        &e
    ));
    assert!(matches(
        json!({"data": {"none": [{"anything-but": "x"}]}}),
        &e
    ));
    assert!(!matches(
        json!({"data": {"none": [{"anything-but": [null]}]}}),
        &e
    ));
    // Objects and absent fields never match anything-but.
    assert!(!matches(
        json!({"data": {"obj": [{"anything-but": "x"}]}}),
        &e
    ));
    assert!(!matches(
        json!({"data": {"missing": [{"anything-but": "x"}]}}),
        &e
    ));
}

#[test]
fn numeric_ranges() {
    let e = event(json!({"data": {"amount": 5, "text": "5", "neg": -2.5}}));
    let amount = |range: Value| json!({"data": {"amount": [{"numeric": range}]}});
    assert!(matches(amount(json!([">", 0, "<=", 5])), &e));
    assert!(!matches(amount(json!([">", 0, "<", 5])), &e));
    assert!(matches(amount(json!(["<=", 5, ">", 0])), &e));
    assert!(matches(amount(json!(["=", 5])), &e));
    assert!(matches(amount(json!(["=", 5.0])), &e));
    assert!(!matches(amount(json!(["!=", 5])), &e));
    assert!(matches(amount(json!(["!=", 6])), &e));
    assert!(matches(amount(json!([">=", 5])), &e));
    assert!(!matches(amount(json!([">", 5])), &e));
    assert!(matches(amount(json!(["<", 5.000001])), &e));
    assert!(matches(
        json!({"data": {"neg": [{"numeric": ["<", -2]}]}}),
        &e
    ));
    assert!(!matches(
        json!({"data": {"text": [{"numeric": ["=", 5]}]}}),
        &e
    ));
}

#[test]
fn exists() {
    let e = event(json!({"data": {"a": 1, "n": null, "empty": [], "obj": {"x": 1}}}));
    let field = |name: &str, present: bool| json!({"data": {name: [{"exists": present}]}});
    assert!(matches(field("a", true), &e));
    assert!(!matches(field("a", false), &e));
    assert!(matches(field("n", true), &e));
    assert!(matches(field("obj", true), &e));
    assert!(matches(field("missing", false), &e));
    assert!(!matches(field("missing", true), &e));
    assert!(matches(field("empty", false), &e));
    assert!(!matches(field("empty", true), &e));
    assert!(matches(json!({"subject": [{"exists": false}]}), &e));
    assert!(matches(json!({"data": [{"exists": true}]}), &e));
    let no_data = event(json!({}));
    assert!(matches(json!({"data": [{"exists": false}]}), &no_data));
    assert!(matches(
        json!({"data": {"x": [{"exists": false}]}}),
        &no_data
    ));
    assert!(!matches(
        json!({"data": {"x": [{"exists": true}]}}),
        &no_data
    ));
    // exists:false is just one alternative of the list.
    assert!(matches(json!({"data": {"a": [{"exists": false}, 1]}}), &e));
}

#[test]
fn or_at_any_level() {
    let e = event(json!({"data": {"tier": "gold", "amount": 50}}));
    let top = json!({"$or": [{"type": ["nope"]}, {"source": [{"prefix": "/shop"}]}]});
    assert!(matches(top, &e));
    let none = json!({"$or": [{"type": ["nope"]}, {"source": ["nope"]}]});
    assert!(!matches(none, &e));
    // ANDed with the object's other fields.
    let anded = json!({"type": ["nope"], "$or": [{"source": ["/shop/eu"]}]});
    assert!(!matches(anded, &e));
    let nested =
        json!({"data": {"$or": [{"tier": ["gold"]}, {"amount": [{"numeric": [">", 100]}]}]}});
    assert!(matches(nested, &e));
    let deeper = json!({"$or": [
        {"data": {"$or": [{"tier": ["silver"]}, {"amount": [{"numeric": ["<", 10]}]}]}},
        {"data": {"tier": ["gold"], "amount": [50]}}
    ]});
    assert!(matches(deeper, &e));
}

#[test]
fn arrays_match_when_any_element_does() {
    let e = event(json!({"data": {
        "tags": ["a", ["b", "c"]],
        "items": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 2}],
        "mixed": [1, "x", null]
    }}));
    assert!(matches(json!({"data": {"tags": ["c"]}}), &e));
    assert!(!matches(json!({"data": {"tags": ["d"]}}), &e));
    assert!(matches(
        json!({"data": {"tags": [{"anything-but": "a"}]}}),
        &e
    ));
    assert!(matches(json!({"data": {"items": {"sku": ["B"]}}}), &e));
    // Fields of a nested pattern come from the same element.
    assert!(matches(
        json!({"data": {"items": {"sku": ["B"], "qty": [2]}}}),
        &e
    ));
    assert!(!matches(
        json!({"data": {"items": {"sku": ["A"], "qty": [2]}}}),
        &e
    ));
    assert!(matches(
        json!({"data": {"mixed": [{"numeric": [">", 0]}]}}),
        &e
    ));
    assert!(matches(json!({"data": {"mixed": [null]}}), &e));
}

#[test]
fn binary_data_is_absent() {
    let mut e = event(json!({}));
    e.data = Some(herald_core::Data::Binary(bytes::Bytes::from_static(
        b"{\"a\":1}",
    )));
    assert!(matches(json!({"data": [{"exists": false}]}), &e));
    assert!(!matches(json!({"data": {"a": [1]}}), &e));
}

#[test]
fn empty_pattern_matches_everything() {
    assert!(matches(json!({}), &event(json!({}))));
}

#[test]
fn nested_pattern_over_a_scalar_sees_absent_fields() {
    let e = event(json!({"data": "plain text"}));
    assert!(matches(json!({"data": {"x": [{"exists": false}]}}), &e));
    assert!(!matches(json!({"data": {"x": ["plain text"]}}), &e));
    assert!(matches(json!({"data": ["plain text"]}), &e));
}

#[test]
fn filters_serialize_as_their_pattern() {
    let pattern = json!({"type": [{"prefix": "order."}]});
    let filter = Filter::compile(&pattern).expect("valid");
    assert_eq!(serde_json::to_value(&filter).expect("serialize"), pattern);
    let back: Filter = serde_json::from_value(pattern.clone()).expect("deserialize");
    assert_eq!(back, filter);
    let bad: Result<Filter, _> = serde_json::from_value(json!({"type": "x"}));
    assert!(bad.expect_err("invalid").to_string().contains("type"));
}
