//! Criterion: the binary event codec on a 1 KiB CloudEvent (binary data, a partition
//! key, a subject and a time, the shape of a typical publish).
//!
//! `cargo bench -p herald-core --bench codec`

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use herald_core::codec::{decode_event, encode_event};
use herald_core::{CloudEvent, Data};

fn event_1k() -> CloudEvent {
    let mut event = CloudEvent::new("order-0001234", "/shop/checkout", "order.created")
        .with_extension("partitionkey", "customer-42")
        .with_extension("correlationid", "order-0001234");
    event.subject = Some("orders/1234".into());
    event.time = Some("2026-01-01T00:00:00.000Z".into());
    event.datacontenttype = Some("application/octet-stream".into());
    event.data = Some(Data::Binary(Bytes::from(vec![0x5au8; 1024])));
    event
}

fn codec(c: &mut Criterion) {
    let event = event_1k();
    let mut encoded = Vec::new();
    encode_event(&event, &mut encoded);
    let mut group = c.benchmark_group("codec_1k_event");
    group.throughput(Throughput::Bytes(encoded.len() as u64));
    group.bench_function("encode", |b| {
        let mut buffer = Vec::with_capacity(2048);
        b.iter(|| {
            buffer.clear();
            encode_event(black_box(&event), &mut buffer);
            black_box(buffer.len())
        })
    });
    group.bench_function("decode", |b| {
        b.iter(|| decode_event(black_box(&encoded)).map(|e| black_box(e.id.len())))
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
