//! How good a detector is, over a population of models whose truth is known: the share of
//! shortcut models it flags, the share of clean ones it flags (false alarms), the area under its
//! ROC curve and its true-positive rate at a fixed false-alarm rate.

/// AUROC of scores of positives (shortcut models) against negatives (clean ones): the chance
/// that a random positive scores above a random negative, ties counting one half (the
/// Mann–Whitney U over n₊·n₋). `None` when either side is empty.
pub fn auroc(positives: &[f64], negatives: &[f64]) -> Option<f64> {
    if positives.is_empty() || negatives.is_empty() {
        return None;
    }
    let mut u = 0.0;
    for &p in positives {
        for &n in negatives {
            u += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    Some(u / (positives.len() * negatives.len()) as f64)
}

/// The largest share of positives flagged by a cut "score > t" that flags at most `max_fpr` of
/// the negatives (t ranges over the negatives' scores, and below them all). `None` when either
/// side is empty.
pub fn tpr_at_fpr(positives: &[f64], negatives: &[f64], max_fpr: f64) -> Option<f64> {
    if positives.is_empty() || negatives.is_empty() {
        return None;
    }
    let share = |v: &[f64], t: f64| v.iter().filter(|&&s| s > t).count() as f64 / v.len() as f64;
    negatives
        .iter()
        .copied()
        .chain([f64::NEG_INFINITY])
        .filter(|&t| share(negatives, t) <= max_fpr)
        .map(|t| share(positives, t))
        .fold(None, |best: Option<f64>, v| {
            Some(best.map_or(v, |b| b.max(v)))
        })
}

/// The share of `flags` that are true (`None` for none).
pub fn rate(flags: &[bool]) -> Option<f64> {
    (!flags.is_empty()).then(|| flags.iter().filter(|&&f| f).count() as f64 / flags.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// By hand: positives {3, 2, 2}, negatives {2, 1}. Pairs (p > n, p = n): 3>2, 3>1, 2=2, 2>1,
    /// 2=2, 2>1 → U = 4 + 2·½ = 5 of 6.
    #[test]
    fn auroc_counts_ties_as_halves() {
        assert_eq!(auroc(&[3.0, 2.0, 2.0], &[2.0, 1.0]), Some(5.0 / 6.0));
        assert_eq!(auroc(&[1.0], &[1.0]), Some(0.5));
        assert_eq!(auroc(&[0.0, 0.1], &[5.0]), Some(0.0));
        assert_eq!(auroc(&[], &[1.0]), None);
    }

    /// Negatives {1, 2, 3, …, 20}: a cut at 19 flags one in 20 (5 %); positives above 19 count.
    #[test]
    fn tpr_at_five_percent() {
        let negatives: Vec<f64> = (1..=20).map(f64::from).collect();
        let positives = [19.5, 25.0, 18.0, 30.0];
        assert_eq!(tpr_at_fpr(&positives, &negatives, 0.05), Some(0.75));
        // With 3 negatives no cut below the largest keeps the rate ≤ 5 %.
        assert_eq!(tpr_at_fpr(&[2.0, 5.0], &[1.0, 3.0, 4.0], 0.05), Some(0.5));
        assert_eq!(rate(&[true, false, false, true]), Some(0.5));
        assert_eq!(rate(&[]), None);
    }
}
