//! `DataLoader`: batches from a dataset in a seeded order, moved to a device.

use super::Dataset;
use kiln::{Device, Error, Result, Tensor};
use kiln_core::philox::random_word;

/// A change applied to each training batch's inputs: `(inputs, epoch, batch index)`.
pub type Transform = Box<dyn Fn(&Tensor, u64, usize) -> Result<Tensor> + Send + Sync>;

pub struct DataLoader<'a> {
    dataset: &'a dyn Dataset,
    transform: Option<Transform>,
    pub batch_size: usize,
    pub shuffle: bool,
    pub drop_last: bool,
    pub seed: u64,
    pub device: Device,
}

impl<'a> DataLoader<'a> {
    pub fn new(dataset: &'a dyn Dataset, batch_size: usize, device: &Device) -> Result<Self> {
        if batch_size == 0 {
            return Err(Error::InvalidArgument {
                op: "DataLoader",
                reason: "batch size must be positive".into(),
            });
        }
        Ok(DataLoader {
            dataset,
            transform: None,
            batch_size,
            shuffle: false,
            drop_last: false,
            seed: 0,
            device: device.clone(),
        })
    }

    /// Reshuffles every epoch, reproducibly from `seed`.
    pub fn shuffled(mut self, seed: u64) -> Self {
        self.shuffle = true;
        self.seed = seed;
        self
    }

    /// Applies `transform` to the inputs of every batch (e.g. augmentation).
    pub fn with_transform(mut self, transform: Transform) -> Self {
        self.transform = Some(transform);
        self
    }

    pub fn dropping_last(mut self) -> Self {
        self.drop_last = true;
        self
    }

    pub fn dataset_len(&self) -> usize {
        self.dataset.len()
    }

    pub fn num_batches(&self) -> usize {
        let n = self.dataset.len();
        if self.drop_last {
            n / self.batch_size
        } else {
            n.div_ceil(self.batch_size)
        }
    }

    /// The sample order of `epoch`: a Fisher–Yates shuffle driven by Philox words.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dataset.len()).collect();
        if self.shuffle {
            for i in (1..order.len()).rev() {
                let j = random_word(self.seed, epoch, i as u64) as usize % (i + 1);
                order.swap(i, j);
            }
        }
        order
    }

    /// The batches of one epoch, each `(inputs, targets)` on the loader's device.
    pub fn epoch(&self, epoch: u64) -> impl Iterator<Item = Result<(Tensor, Tensor)>> + '_ {
        let order = self.order(epoch);
        let batches = self.num_batches();
        (0..batches).map(move |b| {
            let end = ((b + 1) * self.batch_size).min(order.len());
            let (x, y) = self.dataset.get_batch(&order[b * self.batch_size..end])?;
            let x = x.to_device(&self.device)?;
            let x = match &self.transform {
                Some(t) => t(&x, epoch, b)?,
                None => x,
            };
            Ok((x, y.to_device(&self.device)?))
        })
    }
}
