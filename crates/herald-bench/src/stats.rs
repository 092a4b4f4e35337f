//! Latency histograms (HDR, nanoseconds, 3 significant digits) and their summary.
//!
//! Each task records into its own [`Histogram`]; they are merged once at the end, so
//! recording never contends.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest latency recorded exactly: 5 minutes. Longer ones saturate to it.
const LATENCY_NS_MAX: u64 = 300_000_000_000;

/// A new latency histogram (ns).
pub fn histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3) {
        Ok(h) => h,
        // Constant, valid arguments: only a change of the library could get here.
        Err(e) => unreachable!("hdrhistogram rejects constant bounds: {e}"),
    }
}

/// Records `latency` (saturating at the histogram's top).
pub fn record(h: &mut Histogram<u64>, latency: Duration) {
    record_ns(h, u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
}

/// Records `ns` nanoseconds (saturating).
pub fn record_ns(h: &mut Histogram<u64>, ns: u64) {
    h.saturating_record(ns.clamp(1, LATENCY_NS_MAX));
}

/// Merges `from` into `into` (same bounds, so it cannot fail; a failure is ignored).
pub fn merge(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    let _ = into.add(from);
}

/// Percentiles of a latency histogram, in microseconds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    /// Samples recorded.
    pub count: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

impl Latency {
    /// Summary of `h`, or `None` if it is empty.
    pub fn of(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Some(Self {
            count: h.len(),
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            mean_us: h.mean() / 1000.0,
        })
    }

    /// `p50 … max` on one line, in the most readable unit.
    pub fn to_text(&self) -> String {
        format!(
            "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (n={})",
            human_us(self.p50_us),
            human_us(self.p90_us),
            human_us(self.p99_us),
            human_us(self.p999_us),
            human_us(self.max_us),
            self.count
        )
    }
}

/// `850 µs`, `12.3 ms`, `1.20 s`.
pub fn human_us(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1_000_000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{:.2} s", us / 1_000_000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_in_microseconds() {
        let mut h = histogram();
        for i in 1..=1000u64 {
            record_ns(&mut h, i * 1000);
        }
        let l = Latency::of(&h).unwrap_or_else(|| unreachable!());
        assert_eq!(l.count, 1000);
        assert!((l.p50_us - 500.0).abs() < 2.0, "{l:?}");
        assert!((l.p99_us - 990.0).abs() < 2.0, "{l:?}");
        assert!((l.max_us - 1000.0).abs() < 2.0, "{l:?}");
        assert!(Latency::of(&histogram()).is_none());
    }

    #[test]
    fn merge_and_saturate() {
        let mut a = histogram();
        let mut b = histogram();
        record(&mut a, Duration::from_millis(1));
        record(&mut b, Duration::from_secs(3600));
        merge(&mut a, &b);
        assert_eq!(a.len(), 2);
        assert!(a.max() >= LATENCY_NS_MAX / 2);
    }
}
