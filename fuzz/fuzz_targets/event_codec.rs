//! herald-core's binary event codec (the stored form of every event): decoding arbitrary
//! bytes never panics, and whatever decodes re-encodes to bytes that decode to the same
//! event.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = herald_core::codec::decode_event(data) {
        let bytes = herald_core::codec::encode_event_to_vec(&event);
        let again = herald_core::codec::decode_event(&bytes).expect("re-encoded event decodes");
        assert_eq!(event, again);
    }
});
