//! Keeping the ranks' copies of a model the same: checking that they hold the same
//! model and data, starting them from rank 0's weights, and averaging the buffers
//! (batch-norm statistics) that each rank updates from its own shard.

use super::DataParallel;
use crate::module::{Module, ModuleExt};
use kiln::{DType, Device, Result, Tensor};

/// What every rank must agree on before the first exchange: the model's tensors (names,
/// shapes, dtypes), that its loaders give it its own share (`sharded`), and the number
/// of batches per epoch, since a rank with one batch more would wait forever for the
/// others. Every rank learns what any rank got wrong, so all of them stop together.
pub(crate) fn check_agreement(
    dp: &DataParallel,
    model: &dyn Module,
    sharded: bool,
    train_batches: usize,
    val_batches: usize,
) -> Result<()> {
    let state = model.state_dict();
    let mut description = String::new();
    for (name, t) in &state {
        description += &format!("{name} {:?} {};", t.dims(), t.dtype());
    }
    let mine = [
        fnv1a(description.as_bytes()),
        state.len() as u64,
        train_batches as u64,
        val_batches as u64,
        sharded as u64,
    ];
    let all = dp.group.all_gather_u64(&mine)?;
    let (first, _) = all.split_at(mine.len());
    let mut differences = Vec::new();
    for (rank, theirs) in all.chunks(mine.len()).enumerate() {
        if theirs[4] == 0 {
            differences.push(format!(
                "rank {rank}'s training and validation loaders are not DataLoader::sharded({rank}, {}), so it would not train on its own share",
                dp.size()
            ));
        }
        if rank == 0 {
            continue;
        }
        if theirs[0] != first[0] || theirs[1] != first[1] {
            differences.push(format!(
                "rank {rank}'s model ({} tensors) is not rank 0's ({} tensors): names, shapes or dtypes differ",
                theirs[1], first[1]
            ));
        }
        if theirs[2] != first[2] || theirs[3] != first[3] {
            differences.push(format!(
                "rank {rank} has {} training and {} validation batches per epoch, rank 0 {} and {}: give every rank the same data and batch size",
                theirs[2], theirs[3], first[2], first[3]
            ));
        }
    }
    match differences.is_empty() {
        true => Ok(()),
        false => Err(dp.error(differences.join("; "))),
    }
}

/// FNV-1a: a hash that is the same in every process and build.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Gives every rank rank 0's parameters and buffers (exactly: f64 holds every dtype's
/// values).
pub(crate) fn broadcast_state(dp: &DataParallel, model: &dyn Module) -> Result<()> {
    kiln::no_grad(|| {
        for (_, t) in model.state_dict() {
            let mut values = t.to_f64_vec()?;
            dp.group.broadcast_f64(&mut values, 0)?;
            if !dp.is_first() {
                t.set_data(&from_host(values, &t)?)?;
            }
        }
        Ok(())
    })
}

/// Averages the float buffers over the ranks, so that evaluation and checkpoints see one
/// set of batch-norm statistics.
pub(crate) fn average_buffers(dp: &DataParallel, model: &dyn Module) -> Result<()> {
    let size = dp.size() as f64;
    kiln::no_grad(|| {
        for (_, t) in model.named_buffers() {
            if t.dtype() == DType::I32 {
                continue;
            }
            let mut values = t.to_f64_vec()?;
            dp.group.sum_f64(&mut values)?;
            values.iter_mut().for_each(|v| *v /= size);
            t.set_data(&from_host(values, &t)?)?;
        }
        Ok(())
    })
}

/// `values` as a tensor like `like`: its shape, dtype and device.
fn from_host(values: Vec<f64>, like: &Tensor) -> Result<Tensor> {
    Tensor::from_vec(values, like.dims().to_vec(), &Device::cpu())?
        .to_dtype(like.dtype())?
        .to_device(&like.device())
}

/// Sums `values` over the ranks, in place.
pub(crate) fn sum_over_ranks(dp: &DataParallel, values: &mut [f64]) -> Result<()> {
    dp.group.sum_f64(values)
}
