//! Datasets: anything that can hand out a batch of (input, target) by sample index.

use kiln::{Device, Error, Result, Tensor};

/// Samples by index: what a `DataLoader` draws batches from.
pub trait Dataset: Send + Sync {
    /// How many samples.
    fn len(&self) -> usize;

    /// True when there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The samples at `indices`, stacked along a new first dim, on the CPU.
    fn get_batch(&self, indices: &[usize]) -> Result<(Tensor, Tensor)>;
}

/// Inputs and targets held in memory; dim 0 indexes samples.
#[derive(Clone, Debug)]
pub struct TensorDataset {
    /// `[samples, ..]`: what the model reads.
    pub inputs: Tensor,
    /// `[samples, ..]`: class ids (i32) or values to predict.
    pub targets: Tensor,
}

impl TensorDataset {
    /// Pairs `inputs` with `targets`; both must have the same number of samples (dim 0).
    pub fn new(inputs: Tensor, targets: Tensor) -> Result<Self> {
        if inputs.rank() == 0 || targets.rank() == 0 || inputs.dims()[0] != targets.dims()[0] {
            return Err(Error::ShapeMismatch {
                op: "TensorDataset",
                lhs: inputs.shape().clone(),
                rhs: targets.shape().clone(),
            });
        }
        Ok(TensorDataset { inputs, targets })
    }

    /// The first `n` samples (all of them if there are fewer).
    pub fn take(&self, n: usize) -> Result<TensorDataset> {
        let n = n.min(self.len());
        TensorDataset::new(self.inputs.narrow(0, 0, n)?, self.targets.narrow(0, 0, n)?)
    }

    /// The samples at `indices`, in that order, as a dataset of their own (a copy).
    pub fn select(&self, indices: &[usize]) -> Result<TensorDataset> {
        let (inputs, targets) = self.get_batch(indices)?;
        TensorDataset::new(inputs, targets)
    }

    /// Splits off the last `fraction` of the samples as they lie, unshuffled (e.g. 0.1
    /// of a shuffled set for validation). For a file sorted by class that gives a
    /// one-class part: use `train_test_split` or `stratified_split` there.
    pub fn split(&self, fraction: f64) -> Result<(TensorDataset, TensorDataset)> {
        if !(0.0..1.0).contains(&fraction) {
            return Err(Error::InvalidArgument {
                op: "split",
                reason: format!("fraction {fraction} is outside [0, 1)"),
            });
        }
        let second = (self.len() as f64 * fraction).round() as usize;
        let first = self.len() - second;
        let part = |start: usize, len: usize| -> Result<TensorDataset> {
            TensorDataset::new(
                self.inputs.narrow(0, start, len)?,
                self.targets.narrow(0, start, len)?,
            )
        };
        Ok((part(0, first)?, part(first, second)?))
    }
}

impl Dataset for TensorDataset {
    fn len(&self) -> usize {
        self.inputs.dims()[0]
    }

    fn get_batch(&self, indices: &[usize]) -> Result<(Tensor, Tensor)> {
        if let Some(&i) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(Error::IndexOutOfRange {
                op: "get_batch",
                index: i as i64,
                size: self.len(),
            });
        }
        let ids: Vec<i32> = indices.iter().map(|&i| i as i32).collect();
        let ids = Tensor::from_vec(ids, [indices.len()], &Device::cpu())?;
        let pick = |t: &Tensor| -> Result<Tensor> {
            let t = if t.device().is_gpu() {
                t.to_device(&Device::cpu())?
            } else {
                t.clone()
            };
            t.index_select(0, &ids)
        };
        Ok((pick(&self.inputs)?, pick(&self.targets)?))
    }
}

/// Some of another dataset's samples, by index, without copying them (PyTorch's
/// `Subset`).
pub struct Subset<'a> {
    dataset: &'a dyn Dataset,
    indices: Vec<usize>,
}

impl<'a> Subset<'a> {
    /// The samples of `dataset` at `indices`; an index past its end is an error.
    pub fn new(dataset: &'a dyn Dataset, indices: Vec<usize>) -> Result<Self> {
        if let Some(&i) = indices.iter().find(|&&i| i >= dataset.len()) {
            return Err(Error::IndexOutOfRange {
                op: "Subset",
                index: i as i64,
                size: dataset.len(),
            });
        }
        Ok(Subset { dataset, indices })
    }

    /// The indices into the underlying dataset, in this subset's order.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }
}

impl Dataset for Subset<'_> {
    fn len(&self) -> usize {
        self.indices.len()
    }

    fn get_batch(&self, indices: &[usize]) -> Result<(Tensor, Tensor)> {
        let mapped = indices
            .iter()
            .map(|&i| {
                self.indices.get(i).copied().ok_or(Error::IndexOutOfRange {
                    op: "Subset",
                    index: i as i64,
                    size: self.indices.len(),
                })
            })
            .collect::<Result<Vec<usize>>>()?;
        self.dataset.get_batch(&mapped)
    }
}
