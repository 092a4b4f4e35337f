//! Webhook signatures: `X-Herald-Signature: t=<unix seconds>,v1=<hex>` where `<hex>` is
//! HMAC-SHA256 keyed by the subscription's secret over `"<t>.<body>"` (the exact bytes
//! of the request body). Receivers recompute it, compare in constant time, and reject
//! timestamps too far from their clock (replay protection); [`verify`] does exactly that.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-herald-signature";

type HmacSha256 = Hmac<Sha256>;

/// The MAC state after `"<t>.<body>"`. HMAC takes keys of any length, so this is
/// never `None` in practice.
fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Option<HmacSha256> {
    let mut mac = HmacSha256::new_from_slice(secret).ok()?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.as_bytes().chunks_exact(2).remainder().is_empty() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The header value for `body` sent at `timestamp` (Unix seconds).
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let hex = mac(secret.as_bytes(), timestamp, body)
        .map(|m| to_hex(&m.finalize().into_bytes()))
        .unwrap_or_default();
    format!("t={timestamp},v1={hex}")
}

/// Checks a header value: well formed, timestamp within `tolerance_secs` of `now`,
/// and some `v1` signature matching (constant-time comparison).
pub fn verify(secret: &str, header: &str, body: &[u8], now: i64, tolerance_secs: i64) -> bool {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", s)) => signatures.extend(from_hex(s)),
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else {
        return false;
    };
    if (now - timestamp).abs() > tolerance_secs {
        return false;
    }
    signatures
        .iter()
        .any(|s| mac(secret.as_bytes(), timestamp, body).is_some_and(|m| m.verify_slice(s).is_ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_then_verify() {
        let header = sign("s3cret", 1_700_000_000, b"{\"a\":1}");
        assert!(header.starts_with("t=1700000000,v1="));
        assert!(verify("s3cret", &header, b"{\"a\":1}", 1_700_000_100, 300));
        assert!(!verify("other", &header, b"{\"a\":1}", 1_700_000_100, 300));
        assert!(!verify("s3cret", &header, b"{\"a\":2}", 1_700_000_100, 300));
        assert!(!verify("s3cret", &header, b"{\"a\":1}", 1_700_001_000, 300));
        assert!(!verify("s3cret", "garbage", b"", 0, 300));
    }

    #[test]
    fn matches_a_known_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let mut m = HmacSha256::new_from_slice(b"Jefe").expect("key");
        m.update(b"what do ya want for nothing?");
        assert_eq!(
            to_hex(&m.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
