//! A run's results: counts, throughput and latency percentiles, as JSON and as Markdown.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The percentiles the latency distribution is sampled at, for plots.
const DISTRIBUTION_PERCENTILES: [f64; 13] =
    [0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 100.0];

/// The results of one workload against one cluster.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub workload: String,
    pub endpoints: Vec<String>,
    pub clients: usize,
    pub conns: usize,
    /// Requests that completed successfully (their latencies are in `latency_us`).
    pub ops: u64,
    pub errors: u64,
    /// The first distinct error texts, with how often each occurred.
    pub error_kinds: BTreeMap<String, u64>,
    pub seconds: f64,
    /// Successful requests per second.
    pub throughput: f64,
    pub latency_us: Latency,
    /// Workload-specific results (a counter's retries and final check, say).
    pub extra: BTreeMap<String, serde_json::Value>,
    /// Successful requests in each whole second of the run.
    pub timeline: Vec<u64>,
}

/// Latency percentiles in microseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Latency {
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    /// `(percentile, microseconds)` pairs from 0 to 100, for plotting the distribution.
    pub distribution: Vec<(f64, u64)>,
}

impl Latency {
    pub fn of(histogram: &Histogram<u64>) -> Latency {
        if histogram.is_empty() {
            return Latency::default();
        }
        Latency {
            mean: histogram.mean(),
            p50: histogram.value_at_quantile(0.50),
            p90: histogram.value_at_quantile(0.90),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
            distribution: DISTRIBUTION_PERCENTILES
                .iter()
                .map(|&p| (p, histogram.value_at_percentile(p)))
                .collect(),
        }
    }
}

/// Microseconds as a short human reading: `850µs`, `3.2ms`, `1.20s`.
pub fn duration_text(us: u64) -> String {
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.1}ms", us as f64 / 1_000.0)
    } else {
        format!("{:.2}s", us as f64 / 1_000_000.0)
    }
}

/// One run's results as a Markdown table.
pub fn markdown(reports: &[Report]) -> String {
    let mut out = String::new();
    out.push_str("| workload | clients/conns | ops | ops/s | p50 | p90 | p99 | p99.9 | max | errors |\n");
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in reports {
        let l = &r.latency_us;
        let _ = writeln!(
            out,
            "| {} | {}/{} | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
            r.workload,
            r.clients,
            r.conns,
            r.ops,
            r.throughput,
            duration_text(l.p50),
            duration_text(l.p90),
            duration_text(l.p99),
            duration_text(l.p999),
            duration_text(l.max),
            r.errors
        );
    }
    for r in reports {
        for (key, value) in &r.extra {
            let _ = writeln!(out, "\n{}: {key} = {value}", r.workload);
        }
        for (error, count) in &r.error_kinds {
            let _ = writeln!(out, "\n{}: {count} × {error}", r.workload);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Percentiles come from the histogram, and an empty run reports zeros, not a panic.
    #[test]
    fn latency_percentiles() {
        let mut histogram = crate::load::histogram();
        for us in 1..=1000 {
            histogram.record(us).unwrap();
        }
        let latency = Latency::of(&histogram);
        assert_eq!(latency.p50, 500);
        assert_eq!(latency.p99, 990);
        assert_eq!(latency.max, 1000);
        assert_eq!(latency.distribution.first(), Some(&(0.0, 1)));
        assert_eq!(Latency::of(&crate::load::histogram()).p99, 0);
    }

    #[test]
    fn durations_read_as_text() {
        assert_eq!(duration_text(850), "850µs");
        assert_eq!(duration_text(3_250), "3.2ms");
        assert_eq!(duration_text(1_200_000), "1.20s");
    }
}
