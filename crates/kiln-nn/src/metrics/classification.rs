//! Classification metrics over class ids.

use super::paired;
use kiln::{Error, Result, Tensor};
use std::fmt::Write;

/// The share of predictions equal to their target.
pub fn accuracy(predicted: &Tensor, target: &Tensor) -> Result<f64> {
    let (p, t) = paired("accuracy", predicted, target)?;
    Ok(p.iter().zip(&t).filter(|(p, t)| p == t).count() as f64 / t.len() as f64)
}

/// Counts of (true class, predicted class) over `classes` classes, and the per-class
/// scores read from them. A class never predicted has precision 0, and one never true
/// recall 0, as scikit-learn's `zero_division` default has them (it warns; here the
/// support and the counts show it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfusionMatrix {
    classes: usize,
    /// Row-major `[true][predicted]`.
    counts: Vec<usize>,
}

impl ConfusionMatrix {
    /// From predicted and true class ids (i32 or any integral values in
    /// `0..classes`); an id outside is an error.
    pub fn new(predicted: &Tensor, target: &Tensor, classes: usize) -> Result<Self> {
        let op = "ConfusionMatrix";
        let (p, t) = paired(op, predicted, target)?;
        let mut counts = vec![0; classes * classes];
        for (&p, &t) in p.iter().zip(&t) {
            let id = |v: f64| -> Result<usize> {
                match v >= 0.0 && v < classes as f64 && v.fract() == 0.0 {
                    true => Ok(v as usize),
                    false => Err(Error::InvalidArgument {
                        op,
                        reason: format!("{v} is not a class id below {classes}"),
                    }),
                }
            };
            counts[id(t)? * classes + id(p)?] += 1;
        }
        Ok(ConfusionMatrix { classes, counts })
    }

    /// How many classes the matrix counts.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// How many samples of class `truth` were predicted as `predicted`.
    pub fn count(&self, truth: usize, predicted: usize) -> usize {
        self.counts[truth * self.classes + predicted]
    }

    /// Samples whose true class is `class`.
    pub fn support(&self, class: usize) -> usize {
        (0..self.classes).map(|p| self.count(class, p)).sum()
    }

    fn predicted_as(&self, class: usize) -> usize {
        (0..self.classes).map(|t| self.count(t, class)).sum()
    }

    /// Of the samples predicted as `class`, the share that are.
    pub fn precision(&self, class: usize) -> f64 {
        ratio(self.count(class, class), self.predicted_as(class))
    }

    /// Of the samples of `class`, the share predicted as it.
    pub fn recall(&self, class: usize) -> f64 {
        ratio(self.count(class, class), self.support(class))
    }

    /// The harmonic mean of precision and recall (0 when both are).
    pub fn f1(&self, class: usize) -> f64 {
        let (p, r) = (self.precision(class), self.recall(class));
        if p + r > 0.0 {
            2.0 * p * r / (p + r)
        } else {
            0.0
        }
    }

    /// The share of samples on the diagonal.
    pub fn accuracy(&self) -> f64 {
        let right: usize = (0..self.classes).map(|c| self.count(c, c)).sum();
        ratio(right, self.counts.iter().sum())
    }

    /// The unweighted mean of the per-class F1 scores.
    pub fn macro_f1(&self) -> f64 {
        (0..self.classes).map(|c| self.f1(c)).sum::<f64>() / self.classes.max(1) as f64
    }

    /// A table in the layout of scikit-learn's `classification_report`: precision,
    /// recall, F1 and support per class (named by `names`), then accuracy and the macro
    /// and support-weighted averages; then the matrix itself, true classes down.
    pub fn report(&self, names: &[String]) -> String {
        let name = |c: usize| names.get(c).cloned().unwrap_or_else(|| c.to_string());
        let width = (0..self.classes)
            .map(|c| name(c).len())
            .max()
            .unwrap_or(0)
            .max(12);
        let mut out = format!("{:>width$}  precision  recall  f1-score  support\n", "");
        let total: usize = self.counts.iter().sum();
        let (mut weighted, mut macro_avg) = ([0.0; 3], [0.0; 3]);
        for c in 0..self.classes {
            let scores = [self.precision(c), self.recall(c), self.f1(c)];
            let share = ratio(self.support(c), total);
            for k in 0..3 {
                macro_avg[k] += scores[k] / self.classes as f64;
                weighted[k] += scores[k] * share;
            }
            let _ = writeln!(
                out,
                "{:>width$}  {:>9.4}  {:>6.4}  {:>8.4}  {:>7}",
                name(c),
                scores[0],
                scores[1],
                scores[2],
                self.support(c)
            );
        }
        let _ = writeln!(
            out,
            "{:>width$}  {:>9}  {:>6}  {:>8.4}  {:>7}",
            "accuracy",
            "",
            "",
            self.accuracy(),
            total
        );
        for (label, s) in [("macro avg", macro_avg), ("weighted avg", weighted)] {
            let _ = writeln!(
                out,
                "{label:>width$}  {:>9.4}  {:>6.4}  {:>8.4}  {total:>7}",
                s[0], s[1], s[2]
            );
        }
        let _ = writeln!(
            out,
            "\nconfusion matrix (rows: true class, columns: predicted)"
        );
        for t in 0..self.classes {
            let row: Vec<String> = (0..self.classes)
                .map(|p| format!("{:>5}", self.count(t, p)))
                .collect();
            let _ = writeln!(out, "{:>width$} {}", name(t), row.join(""));
        }
        out
    }
}

fn ratio(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// The area under the ROC curve of a binary classifier: `scores`, higher for class 1,
/// against targets of 0 and 1. Computed as the Mann-Whitney statistic, the chance
/// that a random positive outscores a random negative, ties counting half. Targets
/// of one class only are an error (the curve is undefined), as in scikit-learn.
pub fn roc_auc(scores: &Tensor, target: &Tensor) -> Result<f64> {
    let op = "roc_auc";
    let (s, t) = paired(op, scores, target)?;
    if let Some(v) = t.iter().find(|&&v| v != 0.0 && v != 1.0) {
        return Err(Error::InvalidArgument {
            op,
            reason: format!("targets must be 0 or 1, found {v}"),
        });
    }
    if let Some(v) = s.iter().find(|v| v.is_nan()) {
        return Err(Error::InvalidArgument {
            op,
            reason: format!("the scores hold {v}"),
        });
    }
    let positives = t.iter().filter(|&&v| v == 1.0).count();
    let negatives = t.len() - positives;
    if positives == 0 || negatives == 0 {
        return Err(Error::InvalidArgument {
            op,
            reason: "the targets hold one class only; ROC AUC needs both".into(),
        });
    }
    // Ranks from 1, tied scores sharing their mean rank.
    let mut order: Vec<usize> = (0..s.len()).collect();
    order.sort_by(|&a, &b| s[a].total_cmp(&s[b]));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && s[order[j + 1]] == s[order[i]] {
            j += 1;
        }
        let mean_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += mean_rank * order[i..=j].iter().filter(|&&k| t[k] == 1.0).count() as f64;
        i = j + 1;
    }
    let (p, n) = (positives as f64, negatives as f64);
    Ok((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}
