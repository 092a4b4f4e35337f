//! herald-log's record-batch decoder (what recovery and reads run on every byte of a
//! segment): never panics; a batch that decodes yields exactly `record_count` records.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = herald_log::batch::decode_header(data);
    if let Ok(batch) = herald_log::decode_batch(data) {
        let count = batch.records().count();
        assert_eq!(count as u64, u64::from(batch.header.record_count));
    }
});
