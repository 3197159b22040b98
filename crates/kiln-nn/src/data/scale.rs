//! Feature scaling fitted on the training rows and applied to every part, as
//! scikit-learn's `StandardScaler` and `MinMaxScaler`; saved beside the weights so that
//! a checkpoint predicts from raw rows.

use kiln::{Device, Error, Result, Tensor};
use std::collections::HashMap;

/// A per-column map `x -> (x - offset) * factor` over the last dim of `[.., F]` rows.
/// NaN stays NaN, as in scikit-learn.
pub trait Scaler: Sized {
    /// Built from its saved parts (one value per column each).
    fn from_parts(offset: Vec<f32>, factor: Vec<f32>) -> Result<Self>;
    /// The value subtracted from each column.
    fn offset(&self) -> &[f32];
    /// The factor each column is then multiplied by.
    fn factor(&self) -> &[f32];

    /// The scaled rows, on `x`'s device.
    fn transform(&self, x: &Tensor) -> Result<Tensor> {
        let (offset, factor) = self.columns(x, "transform")?;
        x.sub(&offset)?.mul(&factor)
    }

    /// The rows `transform` would map to `y`: predictions back in the data's units.
    fn inverse_transform(&self, y: &Tensor) -> Result<Tensor> {
        let (offset, factor) = self.columns(y, "inverse_transform")?;
        y.div(&factor)?.add(&offset)
    }

    /// `offset` and `factor` as tensors on `x`'s device, after checking `x`'s width.
    fn columns(&self, x: &Tensor, op: &'static str) -> Result<(Tensor, Tensor)> {
        let f = self.offset().len();
        if x.dims().last() != Some(&f) {
            return Err(Error::InvalidArgument {
                op,
                reason: format!(
                    "rows of shape {:?} for a scaler fitted on {f} columns",
                    x.dims()
                ),
            });
        }
        let device = x.device();
        let dtype = x.dtype();
        Ok((
            Tensor::from_vec(self.offset().to_vec(), [f], &device)?.to_dtype(dtype)?,
            Tensor::from_vec(self.factor().to_vec(), [f], &device)?.to_dtype(dtype)?,
        ))
    }

    /// Its parts as named tensors, `{prefix}offset` and `{prefix}factor`, for a
    /// checkpoint.
    fn state(&self, prefix: &str) -> Result<Vec<(String, Tensor)>> {
        let f = self.offset().len();
        let cpu = Device::cpu();
        Ok(vec![
            (
                format!("{prefix}offset"),
                Tensor::from_vec(self.offset().to_vec(), [f], &cpu)?,
            ),
            (
                format!("{prefix}factor"),
                Tensor::from_vec(self.factor().to_vec(), [f], &cpu)?,
            ),
        ])
    }

    /// The scaler `state(prefix)` saved, from a checkpoint's tensors.
    fn load(tensors: &HashMap<String, Tensor>, prefix: &str) -> Result<Self> {
        let part = |name: &str| -> Result<Vec<f32>> {
            let key = format!("{prefix}{name}");
            match tensors.get(&key) {
                Some(t) => t.to_dtype(kiln::DType::F32)?.to_vec::<f32>(),
                None => Err(Error::InvalidArgument {
                    op: "Scaler::load",
                    reason: format!("the checkpoint holds no {key:?}"),
                }),
            }
        };
        Self::from_parts(part("offset")?, part("factor")?)
    }
}

/// Zero mean and unit variance per column (the population variance, as scikit-learn);
/// a constant column is only centred.
#[derive(Clone, Debug, PartialEq)]
pub struct StandardScaler {
    /// Each column's mean.
    pub mean: Vec<f32>,
    /// One over each column's standard deviation.
    pub inv_std: Vec<f32>,
}

impl StandardScaler {
    /// Fitted on the rows `x` `[N, F]`, ignoring NaN (a missing value) as scikit-learn.
    pub fn fit(x: &Tensor) -> Result<Self> {
        let columns = observed_columns(x, "StandardScaler::fit")?;
        let (mut mean, mut inv_std) = (Vec::new(), Vec::new());
        for column in &columns {
            let n = column.len() as f64;
            let m = column.iter().sum::<f64>() / n;
            let var = column.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / n;
            mean.push(m as f32);
            inv_std.push(if var > 0.0 {
                (1.0 / var.sqrt()) as f32
            } else {
                1.0
            });
        }
        Ok(StandardScaler { mean, inv_std })
    }
}

impl Scaler for StandardScaler {
    fn from_parts(offset: Vec<f32>, factor: Vec<f32>) -> Result<Self> {
        check_parts(&offset, &factor)?;
        Ok(StandardScaler {
            mean: offset,
            inv_std: factor,
        })
    }
    fn offset(&self) -> &[f32] {
        &self.mean
    }
    fn factor(&self) -> &[f32] {
        &self.inv_std
    }
}

/// Each column onto [0, 1] by its training minimum and maximum; a constant column is
/// only shifted.
#[derive(Clone, Debug, PartialEq)]
pub struct MinMaxScaler {
    /// Each column's minimum.
    pub min: Vec<f32>,
    /// One over each column's range.
    pub inv_range: Vec<f32>,
}

impl MinMaxScaler {
    /// Fitted on the rows `x` `[N, F]`, ignoring NaN as scikit-learn.
    pub fn fit(x: &Tensor) -> Result<Self> {
        let columns = observed_columns(x, "MinMaxScaler::fit")?;
        let (mut min, mut inv_range) = (Vec::new(), Vec::new());
        for column in &columns {
            let lo = column.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = column.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            min.push(lo as f32);
            inv_range.push(if hi > lo {
                (1.0 / (hi - lo)) as f32
            } else {
                1.0
            });
        }
        Ok(MinMaxScaler { min, inv_range })
    }
}

impl Scaler for MinMaxScaler {
    fn from_parts(offset: Vec<f32>, factor: Vec<f32>) -> Result<Self> {
        check_parts(&offset, &factor)?;
        Ok(MinMaxScaler {
            min: offset,
            inv_range: factor,
        })
    }
    fn offset(&self) -> &[f32] {
        &self.min
    }
    fn factor(&self) -> &[f32] {
        &self.inv_range
    }
}

/// The non-NaN values of each column of `x` `[N, F]`; a column with none, or an
/// infinite value, is an error.
fn observed_columns(x: &Tensor, op: &'static str) -> Result<Vec<Vec<f64>>> {
    if x.rank() != 2 || x.dims()[0] == 0 {
        return Err(Error::InvalidArgument {
            op,
            reason: format!("fits on rows [N, F] with N > 0, got {:?}", x.dims()),
        });
    }
    let f = x.dims()[1];
    let values = x.to_f64_vec()?;
    let mut columns = vec![Vec::new(); f];
    for row in values.chunks(f) {
        for (j, &v) in row.iter().enumerate() {
            if v.is_infinite() {
                return Err(Error::InvalidArgument {
                    op,
                    reason: format!("column {j} holds an infinite value"),
                });
            }
            if !v.is_nan() {
                columns[j].push(v);
            }
        }
    }
    if let Some(j) = columns.iter().position(Vec::is_empty) {
        return Err(Error::InvalidArgument {
            op,
            reason: format!("column {j} has no values, only missing ones"),
        });
    }
    Ok(columns)
}

/// An error unless the parts are one finite, non-zero factor per offset.
fn check_parts(offset: &[f32], factor: &[f32]) -> Result<()> {
    let fine = offset.len() == factor.len()
        && offset.iter().all(|v| v.is_finite())
        && factor.iter().all(|v| v.is_finite() && *v != 0.0);
    match fine {
        true => Ok(()),
        false => Err(Error::InvalidArgument {
            op: "Scaler::from_parts",
            reason: format!(
                "{} offsets and {} factors, which must match and be finite (factors non-zero)",
                offset.len(),
                factor.len()
            ),
        }),
    }
}
