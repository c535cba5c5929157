//! The few statistics the audit and the reports use, in one place.

/// The mean (0 for no values).
pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// The sample variance, Σ (v − mean)² / (n − 1) (0 for fewer than two values).
pub fn variance(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = mean(v);
    v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64
}

/// Mean and sample standard deviation.
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    (mean(v), variance(v).sqrt())
}

/// Welch's t of a's mean over b's: (ā − b̄) / √(s²_a/n_a + s²_b/n_b).
pub fn welch(a: &[f64], b: &[f64]) -> f64 {
    let se = (variance(a) / a.len().max(1) as f64 + variance(b) / b.len().max(1) as f64).sqrt();
    (mean(a) - mean(b)) / se.max(1e-12)
}

/// The median (0 for no values).
pub fn median(mut a: Vec<f64>) -> f64 {
    a.sort_by(f64::total_cmp);
    let n = a.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => a[n / 2],
        _ => 0.5 * (a[n / 2 - 1] + a[n / 2]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_values() {
        let v = [1.0, 2.0, 4.0, 9.0];
        assert_eq!(mean(&v), 4.0);
        // Σ (v − 4)² = 9 + 4 + 0 + 25 = 38, over n − 1 = 3.
        assert!((variance(&v) - 38.0 / 3.0).abs() < 1e-12);
        assert_eq!(median(v.to_vec()), 3.0);
        assert_eq!(median(vec![5.0, 1.0, 3.0]), 3.0);
        assert_eq!(mean_std(&[2.0]), (2.0, 0.0));
        // a = [1, 3]: mean 2, s² 2; b = [0, 0, 0]: mean 0, s² 0 → t = 2 / √(2/2) = 2.
        assert!((welch(&[1.0, 3.0], &[0.0, 0.0, 0.0]) - 2.0).abs() < 1e-12);
    }
}
