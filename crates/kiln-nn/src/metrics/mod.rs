//! Metrics for a trained model's predictions, with scikit-learn's definitions:
//! accuracy, the confusion matrix and per-class precision, recall and F1, and ROC AUC
//! for classifiers (`classification.rs`); mean squared and absolute error and R^2 for
//! regression (`regression.rs`). Each takes predictions and targets as tensors of the
//! same length, on any device.

mod classification;
mod regression;

pub use classification::{accuracy, roc_auc, ConfusionMatrix};
pub use regression::{mean_absolute_error, mean_squared_error, r2_score};

use kiln::{Error, Result, Tensor};

/// `predicted` and `target` on the host, as f64, after checking they are the same
/// non-zero number of values.
fn paired(op: &'static str, predicted: &Tensor, target: &Tensor) -> Result<(Vec<f64>, Vec<f64>)> {
    if predicted.elem_count() != target.elem_count() || target.elem_count() == 0 {
        return Err(Error::InvalidArgument {
            op,
            reason: format!(
                "{} predictions for {} targets: one per target, and at least one",
                predicted.elem_count(),
                target.elem_count()
            ),
        });
    }
    Ok((predicted.to_f64_vec()?, target.to_f64_vec()?))
}
