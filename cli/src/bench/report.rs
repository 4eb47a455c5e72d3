//! What a benchmark measured: requests, failures by kind, and latency percentiles; for the watch
//! workloads also the events the watchers received and their latencies.

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
            Some(status) => self.fail(kind(&status), 1),
        }
    }

    /// `count` failures of a kind that is no gRPC status (events that never came, say).
    pub fn fail(&mut self, kind: String, count: u64) {
        *self.failures.entry(kind).or_default() += count;
    }
}

/// A failure's kind: its gRPC code and message.
fn kind(status: &Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// What the watchers of a watch workload received.
pub struct Events {
    /// From each put's send to each watcher's event of it.
    pub latencies: Histogram<u64>,
    pub delivered: u64,
    /// Responses that carried them: each costs the watcher a message to decode, so fewer, fuller
    /// responses cost the client (which shares the machine) less per event.
    pub responses: u64,
    /// From the first put until the last event came.
    pub elapsed: Duration,
}

/// Every client's parts together.
pub struct Report {
    latencies: Histogram<u64>,
    failures: BTreeMap<String, u64>,
    pub elapsed: Duration,
    pub events: Option<Events>,
}

impl Default for Report {
    fn default() -> Self {
        Report { latencies: super::histogram(), failures: BTreeMap::new(), elapsed: Duration::ZERO, events: None }
    }
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

fn per_second(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
}

fn percentiles(h: &Histogram<u64>) -> Vec<(&'static str, f64)> {
    let mut all = vec![("min", ms(h.min()))];
    all.extend(PERCENTILES.iter().map(|(name, q)| (*name, ms(h.value_at_percentile(*q)))));
    all.push(("max", ms(h.max())));
    all
}

/// `min 0.100 p50 … max 2.000 mean 0.500`, in milliseconds.
fn latency_text(h: &Histogram<u64>) -> String {
    let latencies: Vec<String> = percentiles(h).iter().map(|(name, v)| format!("{name} {v:.3}")).collect();
    format!("{} mean {:.3}", latencies.join(" "), h.mean() / 1000.0)
}

/// `{"min": …, "p50": …, …, "max": …}`, in milliseconds.
fn latency_json(h: &Histogram<u64>) -> Value {
    Value::Object(percentiles(h).into_iter().map(|(name, v)| (name.to_string(), json!(v))).collect())
}

impl Report {
    pub fn add(&mut self, part: Part) {
        self.latencies.add(&part.latencies).expect("histograms with the same bounds");
        for (kind, count) in part.failures {
            *self.failures.entry(kind).or_default() += count;
        }
    }

    pub fn succeeded(&self) -> u64 {
        self.latencies.len()
    }

    fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    fn per_second(&self) -> f64 {
        per_second(self.succeeded(), self.elapsed)
    }

    /// Requests per second counted until their events reached every watcher: a server that
    /// takes writes faster than it delivers them builds a backlog, which this does not count.
    fn delivered_per_second(&self, events: &Events) -> f64 {
        per_second(self.succeeded(), events.elapsed)
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
        let _ = writeln!(text, "latency ms: {}", latency_text(&self.latencies));
        if let Some(events) = &self.events {
            let rate = per_second(events.delivered, events.elapsed);
            let _ = writeln!(
                text,
                "{} events in {:.2}s = {rate:.0}/s, {:.1} per response",
                events.delivered,
                events.elapsed.as_secs_f64(),
                events.delivered as f64 / events.responses.max(1) as f64
            );
            let _ = writeln!(text, "event latency ms: {}", latency_text(&events.latencies));
            let _ = writeln!(text, "requests with every event delivered: {:.0}/s", self.delivered_per_second(events));
        }
        for (kind, count) in &self.failures {
            let _ = writeln!(text, "failed {count}: {kind}");
        }
        text
    }

    pub fn json(&self) -> Value {
        let mut json = json!({
            "requests": self.succeeded(),
            "failed": self.failed(),
            "seconds": self.elapsed.as_secs_f64(),
            "requests_per_second": self.per_second(),
            "latency_ms": latency_json(&self.latencies),
            "mean_latency_ms": self.latencies.mean() / 1000.0,
            "failures": self.failures,
        });
        if let Some(events) = &self.events {
            json["events"] = json!(events.delivered);
            json["events_per_second"] = json!(per_second(events.delivered, events.elapsed));
            json["event_responses"] = json!(events.responses);
            json["event_latency_ms"] = latency_json(&events.latencies);
            json["mean_event_latency_ms"] = json!(events.latencies.mean() / 1000.0);
            json["delivered_requests_per_second"] = json!(self.delivered_per_second(events));
        }
        json
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
        assert!(json.get("events").is_none(), "{json}");
    }

    #[test]
    fn events_come_beside_the_requests() {
        let mut latencies = super::super::histogram();
        latencies.record(4000).unwrap();
        latencies.record(6000).unwrap();
        let mut missing = Part::new();
        missing.fail("missing events".into(), 4);
        let mut report = Report { elapsed: Duration::from_secs(1), ..Report::default() };
        report.add(missing);
        let mut puts = Part::new();
        puts.record(Duration::from_millis(1), None);
        report.add(puts);
        report.events = Some(Events { latencies, delivered: 2, responses: 1, elapsed: Duration::from_secs(2) });
        let json = report.json();
        assert_eq!((json["events"].as_u64(), json["events_per_second"].as_f64()), (Some(2), Some(1.0)), "{json}");
        assert_eq!((json["failed"].as_u64(), json["failures"]["missing events"].as_u64()), (Some(4), Some(4)), "{json}");
        // One put in 1 s, its events all in by 2 s.
        assert_eq!((json["requests_per_second"].as_f64(), json["delivered_requests_per_second"].as_f64()), (Some(1.0), Some(0.5)), "{json}");
        let max = json["event_latency_ms"]["max"].as_f64().unwrap();
        assert!((5.99..6.01).contains(&max), "{max}");
        assert!(report.text().contains("\n2 events in 2.00s = 1/s, 2.0 per response\nevent latency ms: min 4.000 "), "{}", report.text());
        assert_eq!(json["event_responses"].as_u64(), Some(1), "{json}");
        assert!(report.text().contains("\nrequests with every event delivered: 0/s\n"), "{}", report.text());
        assert!(report.text().ends_with("failed 4: missing events\n"), "{}", report.text());
    }
}
