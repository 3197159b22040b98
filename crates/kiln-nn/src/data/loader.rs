//! `DataLoader`: batches from a dataset in a seeded order, moved to a device.

use super::{shuffle, Dataset};
use kiln::{Device, Error, Result, Tensor};

/// A change applied to each training batch's inputs: `(inputs, epoch, batch index)`.
pub type Transform = Box<dyn Fn(&Tensor, u64, usize) -> Result<Tensor> + Send + Sync>;

/// Batches of a dataset in a seeded order, moved to a device, with an optional
/// transform of each training batch (augmentation) and an optional shard per rank.
pub struct DataLoader<'a> {
    dataset: &'a dyn Dataset,
    transform: Option<Transform>,
    /// Samples per batch (the last batch may be smaller unless `drop_last`).
    pub batch_size: usize,
    /// Reshuffle every epoch, from `seed`.
    pub shuffle: bool,
    /// Leave out the last batch when it is smaller than `batch_size`.
    pub drop_last: bool,
    /// The shuffle's seed: the same seed gives the same order on every machine.
    pub seed: u64,
    /// Where the batches go.
    pub device: Device,
    /// `(rank, ranks)`: this loader gives rank `rank`'s share of every epoch.
    pub shard: Option<(usize, usize)>,
}

impl<'a> DataLoader<'a> {
    /// Batches of `batch_size` samples of `dataset` on `device`, in order (see
    /// `shuffled`); a zero batch size is an error.
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
            shard: None,
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

    /// Gives only rank `rank` of `ranks`'s share of each epoch, for data-parallel
    /// training, as PyTorch's DistributedSampler does: the epoch's order (the same on
    /// every rank: same seed) is padded by repeating its first samples to a multiple of
    /// `ranks`, and rank r takes positions r, r + ranks, r + 2 ranks, ... So the ranks'
    /// shares are disjoint but for the padding, and batch i of every rank together is
    /// the single process's batch i of `ranks` times the size.
    pub fn sharded(mut self, rank: usize, ranks: usize) -> Result<Self> {
        if rank >= ranks {
            return Err(Error::InvalidArgument {
                op: "DataLoader::sharded",
                reason: format!("rank {rank} is not below the number of ranks, {ranks}"),
            });
        }
        self.shard = Some((rank, ranks));
        Ok(self)
    }

    /// Leaves out each epoch's last batch when it is short.
    pub fn dropping_last(mut self) -> Self {
        self.drop_last = true;
        self
    }

    /// How many samples the dataset holds (all ranks' shares together).
    pub fn dataset_len(&self) -> usize {
        self.dataset.len()
    }

    /// Samples per epoch: this rank's share when sharded.
    pub fn samples_per_epoch(&self) -> usize {
        match self.shard {
            Some((_, ranks)) => self.dataset.len().div_ceil(ranks),
            None => self.dataset.len(),
        }
    }

    /// Batches per epoch (this rank's share, when sharded).
    pub fn num_batches(&self) -> usize {
        let n = self.samples_per_epoch();
        if self.drop_last {
            n / self.batch_size
        } else {
            n.div_ceil(self.batch_size)
        }
    }

    /// The sample order of `epoch`: a Fisher–Yates shuffle driven by Philox words (then
    /// this rank's share of it when sharded).
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dataset.len()).collect();
        if self.shuffle {
            shuffle(&mut order, self.seed, epoch);
        }
        match self.shard {
            Some((rank, ranks)) if !order.is_empty() => {
                let padded = order.len().div_ceil(ranks) * ranks;
                (rank..padded)
                    .step_by(ranks)
                    .map(|i| order[i % order.len()])
                    .collect()
            }
            _ => order,
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::TensorDataset;

    /// The ranks' shares of an epoch are disjoint but for the padding, cover every
    /// sample, hold as many batches each, and batch i of all ranks together is the single
    /// loader's batch i at `ranks` times the batch size.
    #[test]
    fn sharded_loaders_split_each_epoch_between_the_ranks() {
        let cpu = Device::cpu();
        for (samples, ranks) in [(24, 3), (10, 4), (7, 2), (1, 3)] {
            let x =
                Tensor::from_vec((0..samples as i32).collect::<Vec<_>>(), [samples], &cpu).unwrap();
            let set = TensorDataset::new(x.clone(), x).unwrap();
            let single = DataLoader::new(&set, 2 * ranks, &cpu).unwrap().shuffled(7);
            let order = single.order(3);
            let shares: Vec<Vec<usize>> = (0..ranks)
                .map(|r| {
                    let loader = DataLoader::new(&set, 2, &cpu).unwrap().shuffled(7);
                    let loader = loader.sharded(r, ranks).unwrap();
                    assert_eq!(loader.num_batches(), samples.div_ceil(ranks).div_ceil(2));
                    loader.order(3)
                })
                .collect();
            let padded = samples.div_ceil(ranks) * ranks;
            let mut all: Vec<usize> = shares.iter().flatten().copied().collect();
            assert_eq!(all.len(), padded, "{samples} samples on {ranks} ranks");
            all.sort();
            all.dedup();
            assert_eq!(all, (0..samples).collect::<Vec<_>>(), "every sample once");
            if samples % (2 * ranks) == 0 {
                for (i, batch) in order.chunks(2 * ranks).enumerate() {
                    let mut together: Vec<usize> = shares
                        .iter()
                        .flat_map(|s| s[2 * i..2 * i + 2].to_vec())
                        .collect();
                    let mut batch = batch.to_vec();
                    together.sort();
                    batch.sort();
                    assert_eq!(together, batch, "batch {i}");
                }
            }
        }
        let cpu_set = TensorDataset::new(
            Tensor::zeros([2], kiln::DType::F32, &cpu).unwrap(),
            Tensor::zeros([2], kiln::DType::F32, &cpu).unwrap(),
        )
        .unwrap();
        let loader = DataLoader::new(&cpu_set, 1, &cpu).unwrap();
        assert!(loader.sharded(2, 2).is_err());
    }
}
