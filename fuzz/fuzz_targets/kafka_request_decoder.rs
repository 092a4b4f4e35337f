//! The Kafka request decoder path: bytes → frames → request header → request body (→ the
//! record batches of a Produce request). Must never panic, abort or allocate what the
//! input merely claims. The same property runs as a seeded test in
//! `crates/herald-kafka/src/fuzz_smoke.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;

// As in the herald binary: a claimed array length must not abort the process.
#[global_allocator]
static ALLOCATOR: herald_kafka::LazyLargeAllocator = herald_kafka::LazyLargeAllocator;

fuzz_target!(|data: &[u8]| {
    herald_kafka::codec::exercise_decoder(data, 1 << 20);
});
