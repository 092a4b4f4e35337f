//! The EventBridge-style filter-pattern compiler (subscription rules come from users):
//! arbitrary JSON never panics it, and a compiled pattern matches and explains an event
//! without panicking.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(pattern) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Ok(filter) = herald_core::filter::Filter::compile(&pattern) {
        let event = herald_core::CloudEvent::new("id-1", "/fuzz", "fuzz.event")
            .with_json_data(&serde_json::json!({"n": 5, "s": "abc", "a": [1, "x"], "o": {"k": null}}));
        let _ = filter.matches(&event);
        let _ = filter.explain(&event);
    }
});
