//! `FilterIndex`: insert/replace/remove, candidate narrowing and exactness.

use herald_core::filter::{EventView, Filter, FilterIndex};
use herald_core::CloudEvent;
use serde_json::{json, Value};

fn filter(pattern: Value) -> Filter {
    Filter::compile(&pattern).expect("valid pattern")
}

fn order(ty: &str, data: Value) -> CloudEvent {
    CloudEvent::new("e1", "/shop/eu", ty).with_json_data(&data)
}

fn sorted(mut keys: Vec<&'static str>) -> Vec<&'static str> {
    keys.sort_unstable();
    keys
}

#[test]
fn exact_rules_are_indexed_and_others_are_linear() {
    let mut index = FilterIndex::new();
    index.insert("by-type", filter(json!({"type": ["order.created"]})));
    index.insert(
        "by-tier",
        filter(json!({"data": {"customer": {"tier": ["gold", "platinum"]}}})),
    );
    index.insert("by-prefix", filter(json!({"type": [{"prefix": "order."}]})));
    index.insert(
        "mixed",
        filter(json!({"type": ["order.created", {"prefix": "x"}]})),
    );
    index.insert("match-all", filter(json!({})));
    let stats = index.stats();
    assert_eq!(stats.rules_count, 5);
    assert_eq!(stats.indexed_count, 2);
    assert_eq!(stats.linear_count, 3);
    assert_eq!(stats.paths_count, 2);

    let event = order("order.created", json!({"customer": {"tier": "gold"}}));
    assert_eq!(
        sorted(index.matching(&event)),
        vec!["by-prefix", "by-tier", "by-type", "match-all", "mixed"]
    );
    let other = order("order.paid", json!({"customer": {"tier": "silver"}}));
    assert_eq!(
        sorted(index.matching(&other)),
        vec!["by-prefix", "match-all"]
    );
    assert_eq!(index.candidates_count(&EventView::new(&other)), 3);
}

#[test]
fn or_rules_are_indexed_under_every_branch() {
    let mut index = FilterIndex::new();
    index.insert(
        "either",
        filter(json!({"$or": [{"type": ["a"]}, {"data": {"k": [1]}}]})),
    );
    assert_eq!(index.stats().linear_count, 0);
    assert_eq!(index.matching(&order("a", json!({}))), vec!["either"]);
    assert_eq!(
        index.matching(&order("b", json!({"k": 1.0}))),
        vec!["either"]
    );
    assert!(index.matching(&order("b", json!({"k": 2}))).is_empty());
    // A branch without an exact leaf makes the rule linear.
    index.insert(
        "loose",
        filter(json!({"$or": [{"type": ["a"]}, {"source": [{"prefix": "/"}]}]})),
    );
    assert_eq!(index.stats().linear_count, 1);
}

#[test]
fn the_least_crowded_leaf_is_chosen() {
    let mut index = FilterIndex::new();
    for i in 0..100 {
        let pattern = json!({"type": ["order.created"], "data": {"customer": [format!("c{i}")]}});
        index.insert(i, filter(pattern));
    }
    let event = order("order.created", json!({"customer": "c42"}));
    // All rules share the type, so after the first few they file under the customer.
    assert!(index.candidates_count(&EventView::new(&event)) <= 3);
    assert_eq!(index.matching(&event), vec![42]);
}

#[test]
fn arrays_in_the_event_reach_the_buckets() {
    let mut index = FilterIndex::new();
    index.insert("sku-b", filter(json!({"data": {"items": {"sku": ["B"]}}})));
    index.insert("flag", filter(json!({"data": {"flags": [true]}})));
    index.insert("nothing", filter(json!({"data": {"n": [null]}})));
    let event = order(
        "t",
        json!({"items": [{"sku": "A"}, [{"sku": "B"}]], "flags": [false, [true]], "n": null}),
    );
    assert_eq!(
        sorted(index.matching(&event)),
        vec!["flag", "nothing", "sku-b"]
    );
}

#[test]
fn replace_and_remove() {
    let mut index = FilterIndex::new();
    assert!(index.is_empty());
    assert!(index.insert("r", filter(json!({"type": ["a"]}))).is_none());
    let old = index.insert("r", filter(json!({"type": ["b"]})));
    assert_eq!(old, Some(filter(json!({"type": ["a"]}))));
    assert_eq!(index.len(), 1);
    assert!(index.matching(&order("a", json!({}))).is_empty());
    assert_eq!(index.matching(&order("b", json!({}))), vec!["r"]);
    assert_eq!(index.get(&"r"), Some(&filter(json!({"type": ["b"]}))));
    index.insert("linear", filter(json!({"type": [{"prefix": "b"}]})));
    assert_eq!(index.iter().count(), 2);
    assert!(index.remove(&"r").is_some());
    assert!(index.remove(&"r").is_none());
    assert_eq!(index.matching(&order("b", json!({}))), vec!["linear"]);
    assert!(index.remove(&"linear").is_some());
    assert!(index.matching(&order("b", json!({}))).is_empty());
    assert_eq!(index.stats().paths_count, 0);
    // Slots are reused.
    index.insert("again", filter(json!({"type": ["b"]})));
    assert_eq!(index.matching(&order("b", json!({}))), vec!["again"]);
}
