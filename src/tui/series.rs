//! The numbers behind the charts: EMA smoothing, down-sampling, windows, log scale, ETA.

use crate::runs::run_dir::MetricsRow;

/// Exponential moving average with TensorBoard's debiasing (the first points are not pulled
/// toward zero). `weight` 0 returns the points unchanged.
pub fn ema(points: &[(f64, f64)], weight: f64) -> Vec<(f64, f64)> {
    let w = weight.clamp(0.0, 0.999);
    let mut acc = 0.0;
    let mut n = 0;
    points
        .iter()
        .filter(|(_, y)| y.is_finite())
        .map(|&(x, y)| {
            acc = w * acc + (1.0 - w) * y;
            n += 1;
            (x, acc / (1.0 - w.powi(n)))
        })
        .collect()
}

/// At most `max` points: consecutive points averaged in equal buckets (the whole history
/// keeps its shape at any length).
pub fn downsample(points: &[(f64, f64)], max: usize) -> Vec<(f64, f64)> {
    let max = max.max(2);
    if points.len() <= max {
        return points.to_vec();
    }
    let per = points.len().div_ceil(max);
    points
        .chunks(per)
        .map(|c| {
            let n = c.len() as f64;
            (
                c.iter().map(|p| p.0).sum::<f64>() / n,
                c.iter().map(|p| p.1).sum::<f64>() / n,
            )
        })
        .collect()
}

/// The points with x in the last `steps` steps.
pub fn recent(points: &[(f64, f64)], steps: i64) -> &[(f64, f64)] {
    let Some(last) = points.last() else {
        return points;
    };
    let from = last.0 - steps as f64;
    let i = points.partition_point(|p| p.0 <= from);
    &points[i..]
}

/// Natural log of y (for a log-scale y axis: ratatui's Chart has none); y <= 0 is dropped.
pub fn log_y(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    points
        .iter()
        .filter(|p| p.1 > 0.0)
        .map(|&(x, y)| (x, y.ln()))
        .collect()
}

/// Seconds left to `total` steps: the median time of recent training steps times the steps
/// left. Steps that validated (and the one after, which may carry the pause), steps across a
/// restart (time going backwards or a gap in steps) and the first steps of a session
/// (warm-up) are left out; the median keeps checkpoint pauses out too.
pub fn eta_seconds(rows: &[MetricsRow], total: i64) -> Option<f64> {
    const WARMUP: i64 = 2;
    const RECENT: usize = 64;
    let mut durations = Vec::new();
    let mut since_start = 0;
    for pair in rows.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if b.step != a.step + 1 || b.elapsed_s < a.elapsed_s {
            since_start = 0;
            continue;
        }
        since_start += 1;
        if since_start <= WARMUP || a.val_loss.is_some() || b.val_loss.is_some() {
            continue;
        }
        durations.push(b.elapsed_s - a.elapsed_s);
    }
    let last = rows.last()?;
    if durations.is_empty() || last.step >= total {
        return (last.step >= total).then_some(0.0);
    }
    let from = durations.len().saturating_sub(RECENT);
    let tail = &mut durations[from..];
    tail.sort_by(|a, b| a.total_cmp(b));
    let median = tail[tail.len() / 2];
    Some(median * (total - last.step) as f64)
}

/// `1h05m`, `3m20s`, `42s`.
pub fn duration(s: f64) -> String {
    crate::train::format_duration(s)
}

/// A loss for a table cell.
pub fn loss(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into())
}

/// Tokens per second, short: `812`, `12.3k`, `1.20M`.
pub fn rate(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v >= 1e6 => format!("{:.2}M", v / 1e6),
        Some(v) if v >= 1e4 => format!("{:.1}k", v / 1e3),
        Some(v) => format!("{v:.0}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(step: i64, elapsed: f64, val: bool) -> MetricsRow {
        MetricsRow {
            step,
            elapsed_s: elapsed,
            val_loss: val.then_some(1.0),
            ..Default::default()
        }
    }

    #[test]
    fn ema_is_debiased_and_zero_weight_is_the_raw_curve() {
        let pts: Vec<(f64, f64)> = (0..5).map(|i| (i as f64, 10.0)).collect();
        let s = ema(&pts, 0.9);
        assert!(
            s.iter().all(|p| (p.1 - 10.0).abs() < 1e-9),
            "a constant stays constant from the first point: {s:?}"
        );
        let pts = vec![(0.0, 1.0), (1.0, 3.0)];
        assert_eq!(ema(&pts, 0.0), pts);
        let s = ema(&pts, 0.5);
        // (0.5*0.5 + 0.5*3) / (1 - 0.25) = 1.75 / 0.75
        assert!((s[1].1 - 1.75 / 0.75).abs() < 1e-12);
        assert_eq!(ema(&[(0.0, f64::NAN), (1.0, 2.0)], 0.5), vec![(1.0, 2.0)]);
    }

    #[test]
    fn downsampling_and_windows() {
        let pts: Vec<(f64, f64)> = (0..1000).map(|i| (i as f64, i as f64)).collect();
        let d = downsample(&pts, 100);
        assert_eq!(d.len(), 100);
        assert_eq!(d[0], (4.5, 4.5));
        assert_eq!(downsample(&pts[..10], 100).len(), 10);
        assert_eq!(recent(&pts, 10).len(), 10);
        assert_eq!(recent(&pts, 10)[0].0, 990.0);
        assert_eq!(recent(&[], 10).len(), 0);
        assert_eq!(log_y(&[(0.0, 1.0), (1.0, 0.0)]), vec![(0.0, 0.0)]);
    }

    #[test]
    fn eta_ignores_warm_up_validation_and_restarts() {
        // Steps take 1 s; step 1-2 are warm-up (10 s), step 5 validates (30 s).
        let mut rows = vec![row(0, 0.0, true)];
        let mut t = 0.0;
        for s in 1..=20 {
            t += match s {
                1 | 2 => 10.0,
                5 => 30.0,
                _ => 1.0,
            };
            rows.push(row(s, t, s == 5));
        }
        assert_eq!(eta_seconds(&rows, 100), Some(80.0));
        // A restart: time resumes from the checkpoint with a slow first step.
        rows.push(row(15, t - 5.0, false));
        rows.push(row(16, t + 20.0, false));
        assert_eq!(eta_seconds(&rows, 100), Some(84.0));
        assert_eq!(eta_seconds(&rows[..2], 100), None, "no steady step yet");
        assert_eq!(eta_seconds(&[row(100, 5.0, false)], 100), Some(0.0));
        assert_eq!(eta_seconds(&[], 100), None);
    }
}
