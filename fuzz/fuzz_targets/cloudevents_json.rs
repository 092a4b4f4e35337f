//! CloudEvents JSON as HTTP publishers send it (structured and batch mode): parsing and
//! validating arbitrary bytes never panics; an accepted event renders back to JSON that
//! parses to an event with the same attributes (data may be re-serialized).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = herald_core::CloudEvent::parse_structured(data) {
        let _ = event.validate();
        let rendered = event.to_json_value();
        let again =
            herald_core::CloudEvent::from_json_value(rendered).expect("rendered event parses");
        assert_eq!(
            (&event.id, &event.source, &event.ty, &event.subject, &event.time),
            (&again.id, &again.source, &again.ty, &again.subject, &again.time)
        );
        assert_eq!(event.extensions, again.extensions);
    }
    let _ = herald_core::CloudEvent::parse_batch(data);
});
