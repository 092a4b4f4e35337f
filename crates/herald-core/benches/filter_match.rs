//! Matching one event against 10,000 subscription filters: the exact-value index
//! (`FilterIndex::matching`) versus evaluating every filter (sharing one parsed view,
//! which is the best a linear scan can do).
//!
//! Run: `cargo bench -p herald-core --bench filter_match -- --quick`

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use herald_core::filter::{EventView, Filter, FilterIndex};
use herald_core::CloudEvent;
use serde_json::{json, Value};

const RULES_COUNT: usize = 10_000;
const TYPES_COUNT: usize = 500;
const SOURCES_COUNT: usize = 200;
const CUSTOMERS_COUNT: usize = 5_000;

/// Mostly exact-value rules on `type`, `source` and a data field, mixed with prefix,
/// numeric, anything-but and wildcard matchers; 5% have no exact leaf at all.
fn pattern(i: usize) -> Value {
    let ty = |n: usize| format!("svc{}.entity{}.created", n % 50, n % TYPES_COUNT);
    let source = |n: usize| format!("/svc/{}", n % SOURCES_COUNT);
    match i % 20 {
        0..=7 => json!({"type": [ty(i)], "source": [{"prefix": "/svc/"}]}),
        8..=11 => json!({
            "source": [source(i)],
            "data": {"amount": [{"numeric": [">", (i % 10) * 100]}]}
        }),
        12..=16 => json!({
            "type": [{"anything-but": "noise"}],
            "data": {"customer": {"id": [format!("c{}", i % CUSTOMERS_COUNT)]}}
        }),
        17 | 18 => json!({
            "type": [ty(i), ty(i + 1)],
            "data": {"customer": {"tier": ["gold", "silver"]}}
        }),
        _ => match i % 3 {
            0 => json!({"type": [{"prefix": format!("svc{}.", i % 50)}]}),
            1 => json!({"data": {"amount": [{"numeric": [">=", 900, "<", 1000]}]}}),
            _ => json!({"subject": [{"wildcard": format!("order-*-{}", i % 7)}]}),
        },
    }
}

fn event() -> CloudEvent {
    let mut event =
        CloudEvent::new("e-1", "/svc/7", "svc42.entity42.created").with_json_data(&json!({
            "customer": {"id": "c123", "tier": "gold", "name": "Ada"},
            "amount": 250,
            "currency": "EUR",
            "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}]
        }));
    event.subject = Some("order-1-3".into());
    event
}

fn bench(c: &mut Criterion) {
    let filters: Vec<Filter> = (0..RULES_COUNT)
        .map(|i| Filter::compile(&pattern(i)))
        .collect::<Result<_, _>>()
        .expect("bench patterns compile");
    let started = Instant::now();
    let mut index = FilterIndex::new();
    for (key, filter) in filters.iter().enumerate() {
        index.insert(key, filter.clone());
    }
    let event = event();
    let view = EventView::new(&event);
    let matched = index.matching(&event);
    let linear_matched = filters.iter().filter(|f| f.matches_view(&view)).count();
    assert_eq!(
        matched.len(),
        linear_matched,
        "index and linear scan disagree"
    );
    println!(
        "index built in {:?}: {:?}; event matches {} rules, {} candidates checked",
        started.elapsed(),
        index.stats(),
        matched.len(),
        index.candidates_count(&view)
    );

    let mut group = c.benchmark_group("filter_match");
    group.bench_function("index_10k_rules", |b| {
        b.iter(|| index.matching(black_box(&event)))
    });
    group.bench_function("linear_10k_rules", |b| {
        b.iter(|| {
            let view = EventView::new(black_box(&event));
            filters.iter().filter(|f| f.matches_view(&view)).count()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
