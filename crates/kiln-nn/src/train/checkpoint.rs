//! Checkpoints in safetensors, with PyTorch-style tensor names (`0.weight`,
//! `optimizer.adam.m.0.weight`) and string metadata (epoch, model, ...).

use crate::optim::Optimizer;
use crate::{Module, ModuleExt};
use kiln::{DType, Device, Error, Result, Tensor};
use kiln_core::HostBuffer;
use safetensors::tensor::{Dtype as StDtype, TensorView};
use std::collections::HashMap;
use std::path::Path;

/// Tensors by name, on the CPU, with the file's metadata.
#[derive(Debug)]
pub struct Checkpoint {
    pub tensors: HashMap<String, Tensor>,
    pub metadata: HashMap<String, String>,
}

/// Where an optimizer's state sits among a checkpoint's tensor names.
const OPTIMIZER_PREFIX: &str = "optimizer.";

impl Checkpoint {
    /// The optimizer state `training_state` saved, named as `Optimizer::load_state` takes it.
    pub fn optimizer_state(&self) -> HashMap<String, Tensor> {
        self.tensors
            .iter()
            .filter_map(|(n, t)| {
                n.strip_prefix(OPTIMIZER_PREFIX)
                    .map(|k| (k.to_string(), t.clone()))
            })
            .collect()
    }
}

/// What a checkpoint to resume training from holds: the model's parameters and buffers,
/// and the optimizer's state under `optimizer.`.
pub fn training_state(model: &dyn Module, optimizer: &dyn Optimizer) -> Vec<(String, Tensor)> {
    let mut state = model.state_dict();
    state.extend(
        optimizer
            .state()
            .into_iter()
            .map(|(n, t)| (format!("{OPTIMIZER_PREFIX}{n}"), t)),
    );
    state
}

fn io(path: &Path, op: &'static str, reason: impl ToString) -> Error {
    Error::Io {
        op,
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn st_dtype(d: DType) -> StDtype {
    match d {
        DType::F32 => StDtype::F32,
        DType::F16 => StDtype::F16,
        DType::I32 => StDtype::I32,
        DType::F64 => StDtype::F64,
    }
}

/// Writes `tensors` (read back from whatever device holds them) and `metadata`.
pub fn save_checkpoint(
    path: impl AsRef<Path>,
    tensors: &[(String, Tensor)],
    metadata: &HashMap<String, String>,
) -> Result<()> {
    let path = path.as_ref();
    let mut hosts = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let host = t.detach().to_device(&Device::cpu())?.contiguous()?;
        hosts.push((
            name.clone(),
            host.dtype(),
            host.dims().to_vec(),
            host_bytes(&host)?,
        ));
    }
    let views = hosts
        .iter()
        .map(|(name, dtype, dims, bytes)| {
            Ok((
                name.clone(),
                TensorView::new(st_dtype(*dtype), dims.clone(), bytes)
                    .map_err(|e| io(path, "save_checkpoint", e))?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = Some(metadata.clone());
    safetensors::serialize_to_file(views, metadata, path)
        .map_err(|e| io(path, "save_checkpoint", e))
}

fn host_bytes(t: &Tensor) -> Result<Vec<u8>> {
    Ok(match t.dtype() {
        DType::F32 => HostBuffer::F32(t.to_vec()?).as_bytes().to_vec(),
        DType::F16 => HostBuffer::F16(t.to_vec()?).as_bytes().to_vec(),
        DType::I32 => HostBuffer::I32(t.to_vec()?).as_bytes().to_vec(),
        DType::F64 => HostBuffer::F64(t.to_vec()?).as_bytes().to_vec(),
    })
}

/// Reads a checkpoint. Malformed files (bad header, truncated data, unsupported
/// dtypes) are errors.
pub fn load_checkpoint(path: impl AsRef<Path>) -> Result<Checkpoint> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| io(path, "load_checkpoint", e))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| io(path, "load_checkpoint", e))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let file = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| io(path, "load_checkpoint", e))?;
    let mut tensors = HashMap::new();
    for (name, view) in file.tensors() {
        let dtype = match view.dtype() {
            StDtype::F32 => DType::F32,
            StDtype::F16 => DType::F16,
            StDtype::I32 => DType::I32,
            StDtype::F64 => DType::F64,
            other => {
                return Err(io(
                    path,
                    "load_checkpoint",
                    format!("tensor {name}: dtype {other:?} is not supported"),
                ))
            }
        };
        let n: usize = view.shape().iter().product();
        let host = HostBuffer::from_bytes(dtype, view.data(), n);
        let t = match host {
            HostBuffer::F32(v) => Tensor::from_vec(v, view.shape().to_vec(), &Device::cpu())?,
            HostBuffer::F16(v) => Tensor::from_vec(v, view.shape().to_vec(), &Device::cpu())?,
            HostBuffer::I32(v) => Tensor::from_vec(v, view.shape().to_vec(), &Device::cpu())?,
            HostBuffer::F64(v) => Tensor::from_vec(v, view.shape().to_vec(), &Device::cpu())?,
        };
        tensors.insert(name, t);
    }
    Ok(Checkpoint { tensors, metadata })
}

/// Copies each named tensor of `checkpoint` into the matching one of `targets` (same
/// shape and dtype), on that tensor's device. A missing name is an error.
pub fn restore(checkpoint: &Checkpoint, targets: &[(String, Tensor)]) -> Result<()> {
    kiln::no_grad(|| {
        for (name, t) in targets {
            let saved = checkpoint.tensors.get(name).ok_or(Error::InvalidArgument {
                op: "restore",
                reason: format!("the checkpoint has no tensor named {name}"),
            })?;
            t.set_data(&saved.to_device(&t.device())?)?;
        }
        Ok(())
    })
}
