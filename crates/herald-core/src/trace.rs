//! W3C Trace Context carried by events: the CloudEvents distributed-tracing extension
//! attributes `traceparent` and `tracestate`, their validation, and child contexts.
//!
//! Invariant: a [`TraceParent`] that parsed has a version other than `ff`, a non-zero
//! 16-byte trace id and a non-zero 8-byte parent id; [`TraceParent::to_string`] renders
//! the canonical version-00 form (55 lower-case characters).

use std::fmt;

/// Extension (and HTTP header) holding the W3C `traceparent`.
pub const EXT_TRACEPARENT: &str = "traceparent";
/// Extension (and HTTP header) holding the W3C `tracestate`.
pub const EXT_TRACESTATE: &str = "tracestate";
/// Longest `tracestate` accepted (the W3C limit a vendor must propagate).
pub const TRACESTATE_BYTES_MAX: usize = 512;
/// Most list members in a `tracestate`.
pub const TRACESTATE_MEMBERS_MAX: usize = 32;
/// Length of a version-00 `traceparent`.
const TRACEPARENT_LENGTH: usize = 55;

/// A parsed `traceparent`: `version-traceid-parentid-flags`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub flags: u8,
}

impl TraceParent {
    /// Parses a `traceparent` value per W3C Trace Context level 1 (lower-case hex only;
    /// versions above 00 may carry more fields after a `-`, which are ignored).
    pub fn parse(text: &str) -> Result<Self, String> {
        let bytes = text.as_bytes();
        if bytes.len() < TRACEPARENT_LENGTH {
            return Err(format!(
                "must be `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, got {} characters",
                bytes.len()
            ));
        }
        let version = hex_field::<1>(text, 0, "version")?[0];
        if version == 0xff {
            return Err("version ff is invalid".into());
        }
        if version == 0 && bytes.len() != TRACEPARENT_LENGTH {
            return Err(format!(
                "version 00 must be exactly {TRACEPARENT_LENGTH} characters, got {}",
                bytes.len()
            ));
        }
        if bytes.len() > TRACEPARENT_LENGTH && bytes.get(TRACEPARENT_LENGTH) != Some(&b'-') {
            return Err("fields after the flags must follow a `-`".into());
        }
        for (position, what) in [(2, "version"), (35, "trace id"), (52, "parent id")] {
            if bytes.get(position) != Some(&b'-') {
                return Err(format!("expected `-` after the {what}"));
            }
        }
        let trace_id = hex_field::<16>(text, 3, "trace id")?;
        let parent_id = hex_field::<8>(text, 36, "parent id")?;
        let flags = hex_field::<1>(text, 53, "flags")?[0];
        if trace_id == [0; 16] {
            return Err("the trace id must not be all zeros".into());
        }
        if parent_id == [0; 8] {
            return Err("the parent id must not be all zeros".into());
        }
        Ok(Self {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// The trace id as 32 lower-case hex characters.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The parent (span) id as 16 lower-case hex characters.
    pub fn parent_id_hex(&self) -> String {
        hex(&self.parent_id)
    }

    /// Whether the caller sampled (recorded) this trace.
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The same trace and flags with `span_id` as the parent: the context to send along
    /// with work caused by span `span_id`.
    pub fn child(&self, span_id: [u8; 8]) -> Self {
        Self {
            parent_id: span_id,
            ..*self
        }
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id_hex(),
            self.parent_id_hex(),
            self.flags
        )
    }
}

/// Checks a `tracestate` value: at most [`TRACESTATE_BYTES_MAX`] bytes of printable
/// ASCII, at most [`TRACESTATE_MEMBERS_MAX`] comma-separated `key=value` members.
pub fn validate_tracestate(text: &str) -> Result<(), String> {
    if text.len() > TRACESTATE_BYTES_MAX {
        return Err(format!(
            "must be at most {TRACESTATE_BYTES_MAX} bytes, got {}",
            text.len()
        ));
    }
    if let Some(c) = text.chars().find(|c| !(' '..='~').contains(c)) {
        return Err(format!("must be printable ASCII, found {c:?}"));
    }
    let members: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .collect();
    if members.len() > TRACESTATE_MEMBERS_MAX {
        return Err(format!(
            "must have at most {TRACESTATE_MEMBERS_MAX} members, got {}",
            members.len()
        ));
    }
    for member in members {
        match member.split_once('=') {
            Some((key, value)) if !key.is_empty() && !value.is_empty() => {}
            _ => return Err(format!("member {member:?} is not `key=value`")),
        }
    }
    Ok(())
}

fn hex_field<const N: usize>(text: &str, start: usize, what: &str) -> Result<[u8; N], String> {
    let digits = text
        .get(start..start + 2 * N)
        .ok_or_else(|| format!("the {what} is missing"))?;
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        let pair = digits.get(2 * i..2 * i + 2).unwrap_or("");
        if !pair
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(format!(
                "the {what} must be {} lower-case hex characters, got {digits:?}",
                2 * N
            ));
        }
        *byte = u8::from_str_radix(pair, 16)
            .map_err(|_| format!("the {what} must be lower-case hex, got {digits:?}"))?;
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_renders_the_spec_example() {
        let tp = TraceParent::parse(VALID).expect("valid");
        assert_eq!(tp.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.parent_id_hex(), "00f067aa0ba902b7");
        assert!(tp.sampled());
        assert_eq!(tp.to_string(), VALID);
        let child = tp.child([1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            child.to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0102030405060708-01"
        );
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            "0é-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(
                TraceParent::parse(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn accepts_future_versions_with_extra_fields() {
        let tp = TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-ab")
            .expect("future version");
        assert_eq!(tp.to_string(), VALID);
    }

    #[test]
    fn tracestate_rules() {
        assert!(validate_tracestate("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7").is_ok());
        assert!(validate_tracestate("").is_ok());
        assert!(validate_tracestate("novalue").is_err());
        assert!(validate_tracestate("a=\u{7}").is_err());
        assert!(validate_tracestate(&"k=v,".repeat(40)).is_err());
        assert!(validate_tracestate(&"x".repeat(600)).is_err());
    }
}
