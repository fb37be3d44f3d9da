//! The seed's learning-rate schedule, a factor applied to both optimizers: linear warm-up
//! over `warmup` steps, constant, then linear warm-down to 0 over the last `warmdown` steps.

/// The factor for 0-based optimizer step `step` of `steps` (PyTorch's LambdaLR as the seed
/// configured it: `(steps - step) / warmdown` in the warm-down).
pub fn lr_factor(step: i64, steps: i64, warmup: i64, warmdown: i64) -> f64 {
    if step < warmup {
        (step + 1) as f64 / warmup as f64
    } else if step < steps - warmdown {
        1.0
    } else {
        (steps - step) as f64 / warmdown as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_schedule() {
        // No warm-up, 6200 steps, warm-down over the last 1800.
        assert_eq!(lr_factor(0, 6200, 0, 1800), 1.0);
        assert_eq!(lr_factor(4399, 6200, 0, 1800), 1.0);
        assert_eq!(lr_factor(4400, 6200, 0, 1800), 1.0);
        assert!((lr_factor(5300, 6200, 0, 1800) - 0.5).abs() < 1e-12);
        assert!((lr_factor(6199, 6200, 0, 1800) - 1.0 / 1800.0).abs() < 1e-12);
        // Warm-up.
        assert_eq!(lr_factor(0, 100, 10, 0), 0.1);
        assert_eq!(lr_factor(9, 100, 10, 0), 1.0);
        assert_eq!(lr_factor(99, 100, 10, 0), 1.0);
    }
}
