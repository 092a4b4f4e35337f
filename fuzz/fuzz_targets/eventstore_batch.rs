//! The event store's JetStream message decoder (what every gateway's mirror runs on each
//! message of `<PREFIX>_ES`) and the record decoder behind it: never panic; a batch that
//! decodes encodes back to the same bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let payload = bytes::Bytes::copy_from_slice(data);
    if let Ok(records) = herald_eventstore::batch::decode(&payload) {
        assert_eq!(herald_eventstore::batch::encode(&records), data);
        for record in &records {
            let _ = herald_eventstore::record::decode(&record.value);
            let _ = herald_eventstore::record::decode_change(&record.value);
        }
    }
});
