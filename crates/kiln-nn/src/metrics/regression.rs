//! Regression metrics.

use super::paired;
use kiln::{Result, Tensor};

/// The mean of (prediction - target)^2.
pub fn mean_squared_error(predicted: &Tensor, target: &Tensor) -> Result<f64> {
    let (p, t) = paired("mean_squared_error", predicted, target)?;
    Ok(p.iter()
        .zip(&t)
        .map(|(p, t)| (p - t) * (p - t))
        .sum::<f64>()
        / t.len() as f64)
}

/// The mean of |prediction - target|.
pub fn mean_absolute_error(predicted: &Tensor, target: &Tensor) -> Result<f64> {
    let (p, t) = paired("mean_absolute_error", predicted, target)?;
    Ok(p.iter().zip(&t).map(|(p, t)| (p - t).abs()).sum::<f64>() / t.len() as f64)
}

/// The coefficient of determination, 1 - SS_residual / SS_total: 1 for a perfect fit,
/// 0 for predicting the targets' mean, negative for worse. For constant targets it is
/// 1 when the predictions match them and 0 otherwise, as scikit-learn has it.
pub fn r2_score(predicted: &Tensor, target: &Tensor) -> Result<f64> {
    let (p, t) = paired("r2_score", predicted, target)?;
    let mean = t.iter().sum::<f64>() / t.len() as f64;
    let residual: f64 = p.iter().zip(&t).map(|(p, t)| (t - p) * (t - p)).sum();
    let total: f64 = t.iter().map(|t| (t - mean) * (t - mean)).sum();
    Ok(match (total > 0.0, residual > 0.0) {
        (true, _) => 1.0 - residual / total,
        (false, false) => 1.0,
        (false, true) => 0.0,
    })
}
