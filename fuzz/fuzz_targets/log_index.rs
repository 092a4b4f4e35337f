//! herald-log's sparse offset and time index entries, decoded from arbitrary file bytes:
//! never panics, whatever the file holds.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for chunk in data.chunks(8) {
        let _ = herald_log::decode_offset_entry(chunk);
    }
    for chunk in data.chunks(16) {
        let _ = herald_log::decode_time_entry(chunk);
    }
    let _ = herald_log::decode_offset_entry(data);
    let _ = herald_log::decode_time_entry(data);
});
