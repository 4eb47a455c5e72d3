//! What a benchmark measured: requests, failures by kind, and latency percentiles.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tonic::Status;

/// Percentiles reported, as etcd's tool and the matrix name them.
const PERCENTILES: [(&str, f64); 4] = [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9)];

/// One client's share.
pub struct Part {
    latencies: Histogram<u64>,
    failures: BTreeMap<String, u64>,
}

impl Part {
    pub fn new() -> Self {
        Part { latencies: super::histogram(), failures: BTreeMap::new() }
    }

    pub fn record(&mut self, took: Duration, failure: Option<Status>) {
        match failure {
            None => self.latencies.saturating_record(took.as_micros().max(1) as u64),
            Some(status) => *self.failures.entry(kind(&status)).or_default() += 1,
        }
    }
}

/// A failure's kind: its gRPC code and message.
fn kind(status: &Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// Every client's parts together.
pub struct Report {
    latencies: Histogram<u64>,
    failures: BTreeMap<String, u64>,
    pub elapsed: Duration,
}

impl Default for Report {
    fn default() -> Self {
        Report { latencies: super::histogram(), failures: BTreeMap::new(), elapsed: Duration::ZERO }
    }
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

impl Report {
    pub fn add(&mut self, part: Part) {
        self.latencies.add(&part.latencies).expect("histograms with the same bounds");
        for (kind, count) in part.failures {
            *self.failures.entry(kind).or_default() += count;
        }
    }

    fn succeeded(&self) -> u64 {
        self.latencies.len()
    }

    fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    fn per_second(&self) -> f64 {
        self.succeeded() as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    fn percentiles(&self) -> Vec<(&'static str, f64)> {
        let h = &self.latencies;
        let mut all = vec![("min", ms(h.min()))];
        all.extend(PERCENTILES.iter().map(|(name, q)| (*name, ms(h.value_at_percentile(*q)))));
        all.push(("max", ms(h.max())));
        all
    }

    pub fn text(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "{} requests in {:.2}s = {:.0}/s, {} failed",
            self.succeeded(),
            self.elapsed.as_secs_f64(),
            self.per_second(),
            self.failed()
        );
        let latencies: Vec<String> = self.percentiles().iter().map(|(name, v)| format!("{name} {v:.3}")).collect();
        let _ = writeln!(text, "latency ms: {} mean {:.3}", latencies.join(" "), self.latencies.mean() / 1000.0);
        for (kind, count) in &self.failures {
            let _ = writeln!(text, "failed {count}: {kind}");
        }
        text
    }

    pub fn json(&self) -> Value {
        let latency: serde_json::Map<String, Value> =
            self.percentiles().into_iter().map(|(name, v)| (name.to_string(), json!(v))).collect();
        json!({
            "requests": self.succeeded(),
            "failed": self.failed(),
            "seconds": self.elapsed.as_secs_f64(),
            "requests_per_second": self.per_second(),
            "latency_ms": latency,
            "mean_latency_ms": self.latencies.mean() / 1000.0,
            "failures": self.failures,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_add_up_and_failures_are_kept_by_kind() {
        let mut one = Part::new();
        one.record(Duration::from_millis(1), None);
        one.record(Duration::from_millis(3), None);
        one.record(Duration::ZERO, Some(Status::invalid_argument("etcdserver: request is too large")));
        let mut two = Part::new();
        two.record(Duration::from_millis(2), None);
        two.record(Duration::ZERO, Some(Status::invalid_argument("etcdserver: request is too large")));
        two.record(Duration::ZERO, Some(Status::unavailable("etcdserver: no leader")));
        let mut report = Report { elapsed: Duration::from_secs(1), ..Report::default() };
        report.add(one);
        report.add(two);
        let json = report.json();
        assert_eq!(json["requests"], 3);
        assert_eq!(json["failed"], 3);
        assert_eq!(json["failures"]["InvalidArgument: etcdserver: request is too large"], 2);
        assert_eq!(json["failures"]["Unavailable: etcdserver: no leader"], 1);
        assert_eq!(json["requests_per_second"], 3.0);
        let max = json["latency_ms"]["max"].as_f64().unwrap();
        assert!((2.99..3.01).contains(&max), "{max}");
        assert!(report.text().starts_with("3 requests in 1.00s = 3/s, 3 failed\n"), "{}", report.text());
    }
}
