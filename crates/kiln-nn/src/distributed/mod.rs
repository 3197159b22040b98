//! Data-parallel training: one process (a rank) per device, each with a copy of the
//! model and its own shard of the data, gradients averaged every step, so that N ranks
//! with batch B take the steps one process takes with batch N*B. `fit` does it when
//! `FitConfig::data_parallel` is set. The exchange goes through a `Collective`, which
//! this crate does not implement: kiln-dist provides one on MPI, so that kiln-nn itself
//! needs no networking library.

mod buckets;
mod replicas;

pub use buckets::{ExchangeTime, GradientBuckets};
pub(crate) use replicas::{average_buffers, broadcast_state, check_agreement, sum_over_ranks};

use kiln::{Error, Result};
use std::sync::mpsc::Receiver;
use std::sync::Arc;

/// The operations data-parallel training needs from a group of processes. Every rank
/// must make the same calls in the same order (they are collective): a rank that
/// cannot go on must end the whole group (kiln-dist aborts it) rather than leave the
/// others waiting.
pub trait Collective: Send + Sync {
    /// This process's place in the group, `0..size`.
    fn rank(&self) -> usize;
    /// The number of processes.
    fn size(&self) -> usize;
    /// Starts summing `data` element-wise over every rank; the sums arrive through the
    /// returned handle while this rank goes on computing.
    fn start_sum(&self, data: Vec<f32>) -> Result<PendingSum>;
    /// Sums `data` element-wise over every rank, in place: small figures such as losses
    /// and counts.
    fn sum_f64(&self, data: &mut [f64]) -> Result<()>;
    /// Replaces `data` on every rank with `root`'s.
    fn broadcast_f64(&self, data: &mut [f64], root: usize) -> Result<()>;
    /// Every rank's `values` (each rank passes as many), rank after rank.
    fn all_gather_u64(&self, values: &[u64]) -> Result<Vec<u64>>;
}

/// Sums being computed by the group; `wait` gives them.
pub struct PendingSum {
    receiver: Receiver<Result<Vec<f32>>>,
    rank: usize,
    size: usize,
}

impl PendingSum {
    /// A handle that `wait` answers with what `receiver` delivers, for rank `rank` of
    /// `size`.
    pub fn new(receiver: Receiver<Result<Vec<f32>>>, rank: usize, size: usize) -> Self {
        PendingSum {
            receiver,
            rank,
            size,
        }
    }

    /// Blocks until the sums arrive.
    pub fn wait(self) -> Result<Vec<f32>> {
        self.receiver.recv().map_err(|_| Error::Distributed {
            rank: self.rank,
            size: self.size,
            reason: "the exchange ended before the sums arrived".into(),
        })?
    }
}

/// PyTorch DistributedDataParallel's default bucket: 25 MiB of gradients per exchange.
pub const DEFAULT_BUCKET_BYTES: usize = 25 << 20;

/// How `fit` trains across ranks.
#[derive(Clone)]
pub struct DataParallel {
    /// The ranks' communicator.
    pub group: Arc<dyn Collective>,
    /// Gradients are exchanged in buckets of about this many bytes (f32), each started as
    /// soon as the backward pass has produced all of its gradients; 0 exchanges one
    /// parameter at a time, `usize::MAX` all of them at the end in one bucket.
    pub bucket_bytes: usize,
}

impl DataParallel {
    /// Data-parallel training over `group`, with 25 MiB buckets.
    pub fn new(group: Arc<dyn Collective>) -> Self {
        DataParallel {
            group,
            bucket_bytes: DEFAULT_BUCKET_BYTES,
        }
    }

    /// Gradients exchanged in buckets of about `bytes` (0: one per parameter).
    pub fn with_bucket_bytes(mut self, bytes: usize) -> Self {
        self.bucket_bytes = bytes;
        self
    }

    /// This process's rank, from 0.
    pub fn rank(&self) -> usize {
        self.group.rank()
    }

    /// How many ranks.
    pub fn size(&self) -> usize {
        self.group.size()
    }

    /// Rank 0 prints, plots and writes checkpoints; the others only train.
    pub fn is_first(&self) -> bool {
        self.rank() == 0
    }

    /// `Error::Distributed` from this rank.
    pub fn error(&self, reason: impl Into<String>) -> Error {
        Error::Distributed {
            rank: self.rank(),
            size: self.size(),
            reason: reason.into(),
        }
    }
}
