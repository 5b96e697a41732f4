//! Percentiles over latency samples.

use serde_json::{Value, json};

/// Nearest-rank percentile of `sorted` (ascending): the smallest sample with at least `p` % of
/// the samples at or below it. `None` for no samples.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let p = p.clamp(0.0, 100.0);
    // The epsilon keeps float error (0.999 × 1000 = 999.0000000000001) from moving a rank.
    let rank = ((p / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The usual figures of a latency distribution, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub min: u64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Summary {
    /// Sorts `samples` in place and summarises them; `None` when there are none.
    pub fn of(samples: &mut [u64]) -> Option<Summary> {
        samples.sort_unstable();
        let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
        Some(Summary {
            count: samples.len(),
            min: *samples.first()?,
            p50: percentile(samples, 50.0)?,
            p99: percentile(samples, 99.0)?,
            p999: percentile(samples, 99.9)?,
            max: *samples.last()?,
            mean: sum as f64 / samples.len() as f64,
        })
    }

    /// As a JSON object with `_us` keys; `null` fields when there was nothing to summarise.
    pub fn json(summary: Option<&Summary>) -> Value {
        match summary {
            Some(s) => json!({
                "count": s.count,
                "min_us": s.min,
                "p50_us": s.p50,
                "p99_us": s.p99,
                "p999_us": s.p999,
                "max_us": s.max,
                "mean_us": (s.mean * 10.0).round() / 10.0,
            }),
            None => json!({"count": 0, "min_us": null, "p50_us": null, "p99_us": null,
                           "p999_us": null, "max_us": null, "mean_us": null}),
        }
    }
}

/// Microseconds as milliseconds with three decimals, for tables.
pub fn ms(us: u64) -> String {
    format!("{:.3} ms", us as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 99.9), Some(100));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
        // 1000 samples: p99.9 is the 999th, not the maximum.
        let w: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&w, 99.9), Some(999));
    }

    #[test]
    fn a_summary_sorts_and_reports() {
        let mut v = vec![5, 1, 4, 2, 3];
        let s = Summary::of(&mut v).unwrap();
        assert_eq!((s.count, s.min, s.p50, s.max), (5, 1, 3, 5));
        assert!((s.mean - 3.0).abs() < 1e-9);
        assert!(Summary::of(&mut []).is_none());
        assert_eq!(Summary::json(None)["count"], 0);
        assert_eq!(Summary::json(Some(&s))["p99_us"], 5);
    }
}
