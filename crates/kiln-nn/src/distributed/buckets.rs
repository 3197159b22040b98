//! Gradients averaged over the ranks in buckets, each exchanged as soon as the backward
//! pass has finished all of its gradients, so that the exchange overlaps the rest of
//! the pass (PyTorch DDP's reducer). Every exchange is staged through host memory, which
//! works for any device.

use super::{Collective, DataParallel, PendingSum};
use crate::module::Module;
use kiln::{DType, Gradients, Result, Tensor, TensorId};
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// Where the training thread's time went on the exchange, summed over steps.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ExchangeTime {
    /// Reading gradients back to the host and uploading the averages. On a GPU the
    /// readback also waits for the kernels before it.
    pub staging_seconds: f64,
    /// Waiting for the other ranks' sums after the backward pass.
    pub waiting_seconds: f64,
}

/// The model's parameters grouped into buckets, fixed once: every rank forms the same
/// buckets in the same order, and exchanges them in that order.
pub struct GradientBuckets {
    group: Arc<dyn Collective>,
    /// Each bucket's parameters, the last of the model's first: a backward pass
    /// finishes the last layers' gradients first.
    buckets: Vec<Vec<Tensor>>,
    /// Which bucket each parameter is in.
    bucket_of: HashMap<TensorId, usize>,
    /// Bytes exchanged per step (f32 gradients), for reports.
    pub bytes_per_step: usize,
    time: Cell<ExchangeTime>,
}

/// Where a step's exchange stands: how many gradients of each bucket are ready, and
/// the exchanges started so far (in bucket order).
struct Progress {
    ready: Vec<usize>,
    started: Vec<PendingSum>,
}

impl GradientBuckets {
    /// Groups `model`'s parameters into buckets of about the group's bucket size, last
    /// layer first (the order the backward pass completes them).
    pub fn new(model: &dyn Module, data_parallel: &DataParallel) -> Self {
        let params: Vec<Tensor> = model
            .named_parameters()
            .into_iter()
            .rev()
            .map(|(_, p)| p)
            .collect();
        let mut buckets: Vec<Vec<Tensor>> = Vec::new();
        let mut bytes = 0;
        for p in params {
            let size = p.elem_count() * 4;
            match buckets.last_mut() {
                Some(last) if !last.is_empty() && bytes + size <= data_parallel.bucket_bytes => {
                    last.push(p);
                    bytes += size;
                }
                _ => {
                    buckets.push(vec![p]);
                    bytes = size;
                }
            }
        }
        let bucket_of = buckets
            .iter()
            .enumerate()
            .flat_map(|(b, ps)| ps.iter().map(move |p| (p.id(), b)))
            .collect();
        let bytes_per_step = buckets.iter().flatten().map(|p| p.elem_count() * 4).sum();
        GradientBuckets {
            group: data_parallel.group.clone(),
            buckets,
            bucket_of,
            bytes_per_step,
            time: Cell::default(),
        }
    }

    /// How many buckets a step exchanges.
    pub fn num_buckets(&self) -> usize {
        self.buckets.len()
    }

    /// The time spent on the exchange since the last call.
    pub fn take_time(&self) -> ExchangeTime {
        self.time.take()
    }

    fn add_time(&self, staging: f64, waiting: f64) {
        let mut t = self.time.get();
        t.staging_seconds += staging;
        t.waiting_seconds += waiting;
        self.time.set(t);
    }

    /// The backward pass of `loss` with every parameter's gradient averaged over the
    /// ranks. A parameter this rank gave no gradient counts as zeros in the sum; it gets
    /// the average if another rank's gradient made it non-zero.
    pub fn backward(&self, loss: &Tensor) -> Result<Gradients> {
        let mut grads = Gradients::default();
        let mut progress = Progress {
            ready: vec![0; self.buckets.len()],
            started: Vec::with_capacity(self.buckets.len()),
        };
        loss.backward_with(&mut grads, &mut |var, grads| {
            let Some(&b) = self.bucket_of.get(&var.id()) else {
                return Ok(());
            };
            progress.ready[b] += 1;
            // In bucket order only: every rank must start the same exchanges in the
            // same order.
            while let Some(next) = self.buckets.get(progress.started.len()) {
                if progress.ready[progress.started.len()] < next.len() {
                    break;
                }
                progress.started.push(self.start(next, grads)?);
            }
            Ok(())
        })?;
        for b in progress.started.len()..self.buckets.len() {
            progress.started.push(self.start(&self.buckets[b], &grads)?);
        }
        let size = self.group.size() as f32;
        for (params, pending) in self.buckets.iter().zip(progress.started) {
            let waiting = Instant::now();
            let sums = pending.wait()?;
            let staging = Instant::now();
            self.add_time(0.0, (staging - waiting).as_secs_f64());
            let had_none: Vec<bool> = params.iter().map(|p| grads.get(p).is_none()).collect();
            let mean: Vec<f32> = sums.iter().map(|s| s / size).collect();
            let flat = Tensor::from_vec(mean, [sums.len()], &params[0].device())?;
            let mut offset = 0;
            for (p, none) in params.iter().zip(had_none) {
                let n = p.elem_count();
                let part = flat.narrow(0, offset, n)?;
                offset += n;
                if none && sums[offset - n..offset].iter().all(|&s| s == 0.0) {
                    continue;
                }
                let g = part.reshape(p.dims().to_vec())?.to_dtype(p.dtype())?;
                grads.insert(p, g);
            }
            self.add_time(staging.elapsed().as_secs_f64(), 0.0);
        }
        Ok(grads)
    }

    /// Reads the bucket's gradients back (zeros where there is none), in one f32
    /// vector, and starts its sum over the ranks.
    fn start(&self, params: &[Tensor], grads: &Gradients) -> Result<PendingSum> {
        let staging = Instant::now();
        let flat = params
            .iter()
            .map(|p| match grads.get(p) {
                Some(g) => g.detach().to_dtype(DType::F32)?.reshape([p.elem_count()]),
                None => Tensor::zeros([p.elem_count()], DType::F32, &p.device()),
            })
            .collect::<Result<Vec<_>>>()?;
        let host = Tensor::cat(&flat, 0)?.to_vec::<f32>()?;
        self.add_time(staging.elapsed().as_secs_f64(), 0.0);
        self.group.start_sum(host)
    }
}
