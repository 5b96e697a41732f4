//! Latency histograms as PNG, drawn with plotters' bitmap backend.
//!
//! Text is drawn from the public-domain 8×8 bitmap font of `font8x8`, pixel by pixel, so the
//! picture needs no system fonts, no fontconfig and no font file.

use crate::stats::percentile;
use plotters::prelude::*;
use std::path::Path;

const W: u32 = 1000;
const H: u32 = 560;
const LEFT: i32 = 90;
const RIGHT: i32 = 30;
const TOP: i32 = 60;
const BOTTOM: i32 = 70;
const BUCKETS: usize = 60;

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;
type PlotResult = Result<(), Box<dyn std::error::Error>>;

/// A vertical line drawn across the histogram at a value, with its label.
#[derive(Debug, Clone)]
pub struct Mark {
    pub label: String,
    pub us: u64,
}

/// Log-spaced bucket edges covering `lo..=hi` (microseconds): `BUCKETS` + 1 edges.
pub fn bucket_edges(lo: u64, hi: u64) -> Vec<f64> {
    let lo = (lo.max(1) as f64) * 0.999;
    let hi = (hi.max(1) as f64 * 1.001).max(lo * 1.01);
    let ratio = (hi / lo).powf(1.0 / BUCKETS as f64);
    (0..=BUCKETS).map(|k| lo * ratio.powi(k as i32)).collect()
}

/// How many of `samples` fall in each bucket of `edges`.
pub fn bucket_counts(samples: &[u64], edges: &[f64]) -> Vec<u64> {
    let mut counts = vec![0u64; edges.len().saturating_sub(1)];
    for &s in samples {
        let x = s.max(1) as f64;
        let i = edges[1..].partition_point(|&e| e < x);
        let last = counts.len().saturating_sub(1);
        if let Some(c) = counts.get_mut(i.min(last)) {
            *c += 1;
        }
    }
    counts
}

fn text(area: &Area, x: i32, y: i32, s: &str, scale: i32, color: &RGBColor) -> PlotResult {
    for (n, ch) in s.chars().enumerate() {
        let code = if ch.is_ascii() {
            ch as usize
        } else {
            b'?' as usize
        };
        let glyph = font8x8::legacy::BASIC_LEGACY[code];
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) != 0 {
                    let px = x + (n as i32 * 8 + col) * scale;
                    let py = y + row as i32 * scale;
                    for dy in 0..scale {
                        for dx in 0..scale {
                            area.draw_pixel((px + dx, py + dy), color)?;
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

fn text_width(s: &str, scale: i32) -> i32 {
    s.chars().count() as i32 * 8 * scale
}

/// A duration in microseconds, short: `850us`, `4.2ms`, `1.5s`.
pub fn short_duration(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.0}us")
    } else if us < 1_000_000.0 {
        let ms = us / 1000.0;
        if ms < 10.0 {
            format!("{ms:.1}ms")
        } else {
            format!("{ms:.0}ms")
        }
    } else {
        format!("{:.2}s", us / 1_000_000.0)
    }
}

/// Writes a histogram of `samples_us` (log-scaled time axis) to `path` as PNG, with p50, p99
/// and p99.9 marked, plus any `extra` marks.
pub fn histogram(path: &Path, title: &str, samples_us: &[u64], extra: &[Mark]) -> PlotResult {
    let mut sorted = samples_us.to_vec();
    sorted.sort_unstable();
    let root = BitMapBackend::new(path, (W, H)).into_drawing_area();
    root.fill(&WHITE)?;
    text(&root, LEFT, 16, title, 2, &BLACK)?;
    let (Some(&lo), Some(&hi)) = (sorted.first(), sorted.last()) else {
        text(&root, LEFT, H as i32 / 2, "no samples", 2, &RED)?;
        root.present()?;
        return Ok(());
    };
    let lo_edge = extra.iter().map(|m| m.us).fold(lo, u64::min);
    let hi_edge = extra.iter().map(|m| m.us).fold(hi, u64::max);
    let edges = bucket_edges(lo_edge, hi_edge);
    let counts = bucket_counts(&sorted, &edges);
    let peak = counts.iter().copied().max().unwrap_or(1).max(1);
    let (x0, x1) = (LEFT, W as i32 - RIGHT);
    let (y0, y1) = (TOP, H as i32 - BOTTOM);
    let (log_lo, log_hi) = (edges[0].ln(), edges[BUCKETS].ln());
    let x_of = |us: f64| x0 + ((us.ln() - log_lo) / (log_hi - log_lo) * f64::from(x1 - x0)) as i32;
    let y_of = |c: u64| y1 - ((c as f64 / peak as f64) * f64::from(y1 - y0)) as i32;

    let bar = RGBColor(70, 110, 180);
    for (k, &c) in counts.iter().enumerate() {
        if c > 0 {
            let (a, b) = (x_of(edges[k]), x_of(edges[k + 1]));
            root.draw(&Rectangle::new(
                [(a, y_of(c)), ((b - 1).max(a), y1)],
                bar.filled(),
            ))?;
        }
    }
    let axis = BLACK.stroke_width(1);
    root.draw(&PathElement::new(vec![(x0, y1), (x1, y1)], axis))?;
    root.draw(&PathElement::new(vec![(x0, y0), (x0, y1)], axis))?;
    // Count axis: zero and the peak.
    text(&root, x0 - 10 - text_width("0", 1), y1 - 4, "0", 1, &BLACK)?;
    let peak_label = peak.to_string();
    text(
        &root,
        x0 - 10 - text_width(&peak_label, 1),
        y0 - 4,
        &peak_label,
        1,
        &BLACK,
    )?;
    text(&root, 8, y0 + 20, "count", 1, &BLACK)?;
    // Time axis: 1-2-5 ticks inside the range.
    let mut tick = 1.0f64;
    let mut last_label_end = i32::MIN;
    while tick <= edges[BUCKETS] {
        for m in [1.0, 2.0, 5.0] {
            let v = tick * m;
            if v >= edges[0] && v <= edges[BUCKETS] {
                let x = x_of(v);
                root.draw(&PathElement::new(vec![(x, y1), (x, y1 + 5)], axis))?;
                let label = short_duration(v);
                let lx = x - text_width(&label, 1) / 2;
                if lx > last_label_end + 6 {
                    text(&root, lx, y1 + 10, &label, 1, &BLACK)?;
                    last_label_end = lx + text_width(&label, 1);
                }
            }
        }
        tick *= 10.0;
    }
    text(&root, x0, H as i32 - 24, "latency (log scale)", 1, &BLACK)?;

    let mut marks: Vec<(Mark, RGBColor)> = Vec::new();
    for (name, p, color) in [
        ("p50", 50.0, RGBColor(0, 140, 0)),
        ("p99", 99.0, RGBColor(220, 120, 0)),
        ("p99.9", 99.9, RGBColor(200, 0, 0)),
    ] {
        if let Some(v) = percentile(&sorted, p) {
            marks.push((
                Mark {
                    label: name.into(),
                    us: v,
                },
                color,
            ));
        }
    }
    marks.extend(extra.iter().cloned().map(|m| (m, RGBColor(120, 0, 160))));
    for (i, (mark, color)) in marks.iter().enumerate() {
        let x = x_of(mark.us.max(1) as f64);
        root.draw(&PathElement::new(
            vec![(x, y0), (x, y1)],
            color.stroke_width(2),
        ))?;
        let label = format!("{} {}", mark.label, short_duration(mark.us as f64));
        let lx = (x + 4).min(x1 - text_width(&label, 1));
        text(&root, lx, y0 + 4 + 12 * i as i32, &label, 1, color)?;
    }
    let summary = format!(
        "n={}  min={}  max={}",
        sorted.len(),
        short_duration(lo as f64),
        short_duration(hi as f64)
    );
    text(&root, LEFT, 40, &summary, 1, &BLACK)?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_sample() {
        let samples = [1, 10, 100, 1000, 10_000, 250, 250];
        let edges = bucket_edges(1, 10_000);
        assert_eq!(edges.len(), BUCKETS + 1);
        let counts = bucket_counts(&samples, &edges);
        assert_eq!(counts.iter().sum::<u64>(), samples.len() as u64);
        // A single value still gets a bucket.
        let edges = bucket_edges(5, 5);
        assert_eq!(bucket_counts(&[5, 5], &edges).iter().sum::<u64>(), 2);
    }

    #[test]
    fn durations_read_short() {
        assert_eq!(short_duration(850.0), "850us");
        assert_eq!(short_duration(4200.0), "4.2ms");
        assert_eq!(short_duration(1_500_000.0), "1.50s");
    }

    #[test]
    fn a_histogram_renders_to_png_without_system_fonts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.png");
        let samples: Vec<u64> = (1..2000u64).map(|i| 200 + (i * i) % 5000).collect();
        histogram(
            &path,
            "test histogram",
            &samples,
            &[Mark {
                label: "timeout".into(),
                us: 3000,
            }],
        )
        .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert!(bytes.len() > 1000);
        let empty = dir.path().join("e.png");
        histogram(&empty, "nothing", &[], &[]).unwrap();
        assert!(empty.exists());
    }
}
