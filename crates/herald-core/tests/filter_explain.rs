//! `Filter::explain` says which field and matcher decided, and serializes for the API.

use herald_core::filter::{Check, Filter};
use herald_core::CloudEvent;
use serde_json::{json, Value};

fn event(data: Value) -> CloudEvent {
    CloudEvent::new("e1", "/shop", "order.created").with_json_data(&data)
}

fn filter(pattern: Value) -> Filter {
    Filter::compile(&pattern).expect("valid pattern")
}

#[test]
fn a_match_names_the_matcher() {
    let f = filter(json!({"type": ["x", {"prefix": "order."}], "data": {"tier": ["gold"]}}));
    let explanation = f.explain(&event(json!({"tier": "gold"})));
    assert!(explanation.matched);
    assert_eq!(explanation.summary, "matched");
    let Some(Check::Field {
        path,
        matched_by,
        actual,
        ..
    }) = explanation.checks.first()
    else {
        panic!("expected a field check first: {explanation:#?}");
    };
    assert_eq!(path, "type");
    assert_eq!(*matched_by, Some(1));
    assert_eq!(actual.as_ref(), Some(&json!("order.created")));
}

#[test]
fn a_failure_names_the_field_and_checks_everything() {
    let f = filter(json!({"source": ["/other"], "data": {"customer": {"tier": ["gold"]}}}));
    let explanation = f.explain(&event(json!({"customer": {"tier": "silver"}})));
    assert!(!explanation.matched);
    assert!(
        explanation.summary.contains("`source`"),
        "{}",
        explanation.summary
    );
    let failed: Vec<(String, String)> = explanation
        .checks
        .iter()
        .filter_map(|c| match c {
            Check::Field {
                path,
                matched: false,
                reason,
                ..
            } => Some((path.clone(), reason.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert_eq!(failed[1].0, "data.customer.tier");
    assert!(
        failed[1]
            .1
            .contains("\"silver\" matched none of the 1 matcher"),
        "{failed:?}"
    );
}

#[test]
fn absent_fields_and_exists_false() {
    let f = filter(json!({"subject": [{"exists": false}], "data": {"x": ["a"]}}));
    let explanation = f.explain(&event(json!({})));
    assert!(!explanation.matched);
    let json = serde_json::to_value(&explanation).expect("serialize");
    assert_eq!(json["checks"][0]["kind"], "field");
    assert_eq!(json["checks"][0]["matched"], true);
    assert!(json["checks"][0].get("actual").is_none());
    assert_eq!(json["checks"][1]["path"], "data.x");
    assert_eq!(json["checks"][1]["reason"], "the field is absent");
    assert_eq!(json["checks"][1]["expected"], json!(["a"]));
}

#[test]
fn or_branches_and_array_elements() {
    let f = filter(json!({
        "$or": [{"type": ["nope"]}, {"data": {"items": {"sku": ["B"], "qty": [2]}}}]
    }));
    let hit = f.explain(&event(
        json!({"items": [{"sku": "A", "qty": 2}, {"sku": "B", "qty": 2}]}),
    ));
    assert!(hit.matched);
    let Some(Check::Or { branches, .. }) = hit.checks.first() else {
        panic!("{hit:#?}");
    };
    assert!(!branches[0].matched);
    assert!(branches[1].matched);
    let Some(Check::Elements {
        path,
        elements_count,
        elements,
        ..
    }) = branches[1].checks.first()
    else {
        panic!("{hit:#?}");
    };
    assert_eq!(path, "$or[1].data.items");
    assert_eq!(*elements_count, 2);
    assert_eq!(elements.len(), 1);
    assert_eq!(elements[0].index, 1);
    let miss = f.explain(&event(json!({"items": [{"sku": "A"}, {"sku": "C"}]})));
    assert!(!miss.matched);
    assert!(miss.summary.contains("`$or`"), "{}", miss.summary);
    let json = serde_json::to_value(&miss).expect("serialize");
    let elements = &json["checks"][0]["branches"][1]["checks"][0]["elements"];
    assert_eq!(elements.as_array().map(Vec::len), Some(2));
    assert_eq!(elements[1]["checks"][1]["path"], "$or[1].data.items[1].sku");
}
