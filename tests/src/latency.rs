//! Latency figures as the benchmarks print them.

use hdrhistogram::Histogram;

/// "p50 … p90 … p99 … max …" in milliseconds of a histogram of microseconds.
pub fn percentiles(latencies: &Histogram<u64>) -> String {
    let ms = |micros: u64| micros as f64 / 1000.0;
    format!(
        "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(latencies.value_at_quantile(0.5)),
        ms(latencies.value_at_quantile(0.9)),
        ms(latencies.value_at_quantile(0.99)),
        ms(latencies.max())
    )
}
