//! The binary form of a [`CloudEvent`] inside a log record's value.
//!
//! Layout (all integers little-endian, strings as `u32 length + UTF-8 bytes`):
//! `version:u8=1 | id | source | type | specversion | flags:u8 | [subject] [time]
//! [datacontenttype] [dataschema] | data_tag:u8 (0 none, 1 JSON text, 2 bytes) [data]
//! | ext_count:u32 | (name | tag:u8 (0 string, 1 bool, 2 i64) | value)*`.
//! `flags` bit i says whether optional attribute i is present. Decoding never panics
//! and never allocates more than the input's length.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::error::CodecError;
use crate::event::{CloudEvent, Data, ExtensionValue};

const VERSION: u8 = 1;

/// Encodes `event` into `out` (appending).
pub fn encode_event(event: &CloudEvent, out: &mut Vec<u8>) {
    out.push(VERSION);
    for s in [&event.id, &event.source, &event.ty, &event.specversion] {
        put_bytes(out, s.as_bytes());
    }
    let optionals = [
        &event.subject,
        &event.time,
        &event.datacontenttype,
        &event.dataschema,
    ];
    let flags = optionals
        .iter()
        .enumerate()
        .fold(0u8, |f, (i, o)| if o.is_some() { f | (1 << i) } else { f });
    out.push(flags);
    for s in optionals.into_iter().flatten() {
        put_bytes(out, s.as_bytes());
    }
    match &event.data {
        None => out.push(0),
        Some(Data::Json(text)) => {
            out.push(1);
            put_bytes(out, text.as_bytes());
        }
        Some(Data::Binary(bytes)) => {
            out.push(2);
            put_bytes(out, bytes);
        }
    }
    out.extend_from_slice(&(event.extensions.len() as u32).to_le_bytes());
    for (name, value) in &event.extensions {
        put_bytes(out, name.as_bytes());
        match value {
            ExtensionValue::String(s) => {
                out.push(0);
                put_bytes(out, s.as_bytes());
            }
            ExtensionValue::Bool(b) => {
                out.push(1);
                out.push(u8::from(*b));
            }
            ExtensionValue::Integer(i) => {
                out.push(2);
                out.extend_from_slice(&i.to_le_bytes());
            }
        }
    }
}

/// Encodes `event` into a fresh buffer.
pub fn encode_event_to_vec(event: &CloudEvent) -> Vec<u8> {
    let mut out = Vec::with_capacity(event.approximate_size() + 64);
    encode_event(event, &mut out);
    out
}

/// Decodes an event written by [`encode_event`]. `bytes` must hold exactly one event.
pub fn decode_event(bytes: &[u8]) -> Result<CloudEvent, CodecError> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let version = r.u8()?;
    if version != VERSION {
        return Err(CodecError::UnknownVersion(version));
    }
    let id = r.string("id")?;
    let source = r.string("source")?;
    let ty = r.string("type")?;
    let specversion = r.string("specversion")?;
    let flags = r.u8()?;
    let mut optionals: [Option<String>; 4] = Default::default();
    for (i, slot) in optionals.iter_mut().enumerate() {
        if flags & (1 << i) != 0 {
            *slot = Some(r.string("optional attribute")?);
        }
    }
    let [subject, time, datacontenttype, dataschema] = optionals;
    let tag_offset = r.pos;
    let data = match r.u8()? {
        0 => None,
        1 => Some(Data::Json(r.string("data")?)),
        2 => Some(Data::Binary(Bytes::copy_from_slice(r.bytes()?))),
        tag => {
            return Err(CodecError::InvalidTag {
                what: "data",
                tag,
                offset: tag_offset,
            })
        }
    };
    let count = r.u32()?;
    let mut extensions = BTreeMap::new();
    for _ in 0..count {
        let name = r.string("extension name")?;
        let tag_offset = r.pos;
        let value = match r.u8()? {
            0 => ExtensionValue::String(r.string("extension value")?),
            1 => ExtensionValue::Bool(r.u8()? != 0),
            2 => ExtensionValue::Integer(i64::from_le_bytes(r.array::<8>()?)),
            tag => {
                return Err(CodecError::InvalidTag {
                    what: "extension",
                    tag,
                    offset: tag_offset,
                })
            }
        };
        extensions.insert(name, value);
    }
    if r.pos != bytes.len() {
        return Err(CodecError::TrailingBytes(bytes.len() - r.pos));
    }
    Ok(CloudEvent {
        id,
        source,
        specversion,
        ty,
        subject,
        time,
        datacontenttype,
        dataschema,
        data,
        extensions,
    })
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, need: usize) -> Result<&'a [u8], CodecError> {
        let have = self.buf.len() - self.pos;
        if need > have {
            return Err(CodecError::UnexpectedEof {
                offset: self.pos,
                need,
                have,
            });
        }
        let slice = &self.buf[self.pos..self.pos + need];
        self.pos += need;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.array::<4>()?))
    }

    fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    fn string(&mut self, what: &'static str) -> Result<String, CodecError> {
        let offset = self.pos;
        let bytes = self.bytes()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| CodecError::InvalidUtf8 { what, offset })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_ext() -> impl Strategy<Value = ExtensionValue> {
        prop_oneof![
            ".*".prop_map(ExtensionValue::String),
            any::<bool>().prop_map(ExtensionValue::Bool),
            any::<i64>().prop_map(ExtensionValue::Integer),
        ]
    }

    fn arb_event() -> impl Strategy<Value = CloudEvent> {
        (
            (".*", ".*", ".*", ".*"),
            proptest::array::uniform4(proptest::option::of(".*")),
            prop_oneof![
                Just(None),
                "[a-z0-9]*".prop_map(|s| Some(Data::Json(format!("\"{s}\"")))),
                proptest::collection::vec(any::<u8>(), 0..64)
                    .prop_map(|b| Some(Data::Binary(Bytes::from(b)))),
            ],
            proptest::collection::btree_map("[a-z0-9]{1,8}", arb_ext(), 0..5),
        )
            .prop_map(|((id, source, ty, specversion), opts, data, extensions)| {
                let [subject, time, datacontenttype, dataschema] = opts;
                CloudEvent {
                    id,
                    source,
                    specversion,
                    ty,
                    subject,
                    time,
                    datacontenttype,
                    dataschema,
                    data,
                    extensions,
                }
            })
    }

    proptest! {
        #[test]
        fn round_trips(event in arb_event()) {
            let bytes = encode_event_to_vec(&event);
            prop_assert_eq!(decode_event(&bytes).expect("decodes"), event);
        }

        #[test]
        fn truncation_is_an_error_not_a_panic(event in arb_event(), cut in any::<proptest::sample::Index>()) {
            let bytes = encode_event_to_vec(&event);
            let cut = cut.index(bytes.len());
            prop_assert!(decode_event(&bytes[..cut]).is_err());
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_event(&bytes);
        }
    }
}
