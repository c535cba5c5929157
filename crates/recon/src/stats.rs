//! Ranking the runs of a search, and how far two rankings agree.

use serde::{Deserialize, Serialize};

use crate::search::RunSummary;

/// How runs are ranked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RankBy {
    /// The label-free layer-1 KKT residual (lower is better).
    Kkt,
    /// The score S against the training set (higher is better).
    Score,
}

/// The usable runs (indices into `runs`), best first by `by`.
pub fn rank(runs: &[RunSummary], usable: &[usize], by: RankBy) -> Vec<usize> {
    let mut order = usable.to_vec();
    match by {
        RankBy::Kkt => {
            order.sort_by(|&a, &b| runs[a].layer1_residual.total_cmp(&runs[b].layer1_residual))
        }
        RankBy::Score => order.sort_by(|&a, &b| {
            let score = |i: usize| runs[i].score.unwrap_or(f64::NEG_INFINITY);
            score(b).total_cmp(&score(a))
        }),
    }
    order
}

/// Spearman's rank correlation of two rankings of the same items.
pub fn spearman(a: &[usize], b: &[usize]) -> f64 {
    let n = a.len();
    if n < 2 {
        return 1.0;
    }
    let pos = |r: &[usize]| {
        let mut p = vec![0usize; r.iter().max().map_or(0, |m| m + 1)];
        for (rank, &item) in r.iter().enumerate() {
            p[item] = rank;
        }
        p
    };
    let (pa, pb) = (pos(a), pos(b));
    let d2: f64 = a
        .iter()
        .map(|&i| (pa[i] as f64 - pb[i] as f64).powi(2))
        .sum();
    1.0 - 6.0 * d2 / (n as f64 * ((n * n) as f64 - 1.0))
}
