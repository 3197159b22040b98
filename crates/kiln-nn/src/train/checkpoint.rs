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
    /// The tensors by name.
    pub tensors: HashMap<String, Tensor>,
    /// The file's string metadata.
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

fn st_dtype(d: DType) -> StDtype {
    match d {
        DType::F32 => StDtype::F32,
        DType::F16 => StDtype::F16,
        DType::I32 => StDtype::I32,
        DType::F64 => StDtype::F64,
    }
}

/// `saved` against the tensor it would be loaded into, for `Error::StateMismatch`:
/// `None` when shape and dtype agree, else a line naming both.
pub(crate) fn mismatch(name: &str, saved: &Tensor, expected: &Tensor) -> Option<String> {
    (saved.dims() != expected.dims() || saved.dtype() != expected.dtype()).then(|| {
        format!(
            "{name} ({:?} {} saved, {:?} {} expected)",
            saved.dims(),
            saved.dtype(),
            expected.dims(),
            expected.dtype()
        )
    })
}

/// The first name of `named` that appears twice.
fn first_duplicate(named: &[(String, Tensor)]) -> Option<&String> {
    let mut seen = std::collections::HashSet::new();
    named.iter().map(|(n, _)| n).find(|n| !seen.insert(*n))
}

/// Writes `tensors` (read back from whatever device holds them) and `metadata`, into a
/// temporary file beside `path` that then replaces it: an interrupted or failed save
/// leaves the previous checkpoint as it was. Two tensors of one name are an error.
pub fn save_checkpoint(
    path: impl AsRef<Path>,
    tensors: &[(String, Tensor)],
    metadata: &HashMap<String, String>,
) -> Result<()> {
    let path = path.as_ref();
    if let Some(name) = first_duplicate(tensors) {
        let reason = format!("two tensors are named {name}");
        return Err(Error::io("save_checkpoint", path, reason));
    }
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
                    .map_err(|e| Error::io("save_checkpoint", path, e))?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = Some(metadata.clone());
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = std::path::PathBuf::from(partial);
    let written = safetensors::serialize_to_file(views, metadata, &partial)
        .map_err(|e| Error::io("save_checkpoint", path, e))
        .and_then(|()| {
            std::fs::rename(&partial, path).map_err(|e| Error::io("save_checkpoint", path, e))
        });
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
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
/// dtypes) are errors. bf16 tensors are read as f32, and int64, uint8 and bool ones as
/// i32 (kiln's dtypes), so that PyTorch's files load.
pub fn load_checkpoint(path: impl AsRef<Path>) -> Result<Checkpoint> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io("load_checkpoint", path, e))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::io("load_checkpoint", path, e))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let file = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::io("load_checkpoint", path, e))?;
    let mut tensors = HashMap::new();
    for (name, view) in file.tensors() {
        let bad =
            |reason: String| Error::io("load_checkpoint", path, format!("tensor {name}: {reason}"));
        let dtype = match view.dtype() {
            StDtype::F32 => DType::F32,
            StDtype::F16 => DType::F16,
            StDtype::I32 => DType::I32,
            StDtype::F64 => DType::F64,
            other => {
                let t = converted(other, view.data(), view.shape()).map_err(bad)?;
                tensors.insert(name, t);
                continue;
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

/// A tensor of a dtype kiln does not compute in, as the nearest one it does (as PyTorch
/// writes them: little-endian): bf16 widened to f32 (exactly), int64, uint8 and bool
/// to i32 (an error names a value that does not fit).
fn converted(dtype: StDtype, bytes: &[u8], shape: &[usize]) -> std::result::Result<Tensor, String> {
    let cpu = Device::cpu();
    let dims = shape.to_vec();
    let t = match dtype {
        StDtype::BF16 => {
            let v: Vec<f32> = bytes
                .chunks_exact(2)
                .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
                .collect();
            Tensor::from_vec(v, dims, &cpu)
        }
        StDtype::I64 => {
            let v = bytes
                .chunks_exact(8)
                .map(|b| {
                    let x = i64::from_le_bytes(b.try_into().expect("8 bytes"));
                    i32::try_from(x).map_err(|_| format!("int64 value {x} does not fit kiln's i32"))
                })
                .collect::<std::result::Result<Vec<i32>, String>>()?;
            Tensor::from_vec(v, dims, &cpu)
        }
        StDtype::U8 | StDtype::BOOL => Tensor::from_vec(
            bytes.iter().map(|&b| b as i32).collect::<Vec<i32>>(),
            dims,
            &cpu,
        ),
        other => return Err(format!("dtype {other:?} is not supported")),
    };
    t.map_err(|e| e.to_string())
}

/// A PyTorch state dict saved with safetensors (`safetensors.torch.save_file(
/// model.state_dict(), path)`), ready for `restore` into the kiln module of the same
/// architecture: its names are PyTorch's already. Dtypes convert as `load_checkpoint`
/// does; BatchNorm's `num_batches_tracked` counters are left out, since kiln's
/// BatchNorm uses a fixed momentum, for which PyTorch never reads them.
pub fn load_pytorch(path: impl AsRef<Path>) -> Result<Checkpoint> {
    let mut checkpoint = load_checkpoint(path)?;
    checkpoint
        .tensors
        .retain(|name, _| name != "num_batches_tracked" && !name.ends_with(".num_batches_tracked"));
    Ok(checkpoint)
}

/// What a non-strict `restore_non_strict` left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Targets the checkpoint has no tensor for (left as they were).
    pub missing: Vec<String>,
    /// Checkpoint tensors no target is named after (not used).
    pub unexpected: Vec<String>,
}

/// Copies each named tensor of `checkpoint` into the target of the same name, on that
/// target's device: PyTorch's `load_state_dict(strict=True)`. Every name, shape and
/// dtype is checked before anything changes; missing, unexpected and mismatched names
/// are reported together (`Error::StateMismatch`). Tensors under `optimizer.` belong to
/// the optimizer (`Checkpoint::optimizer_state`) and are not expected here.
pub fn restore(checkpoint: &Checkpoint, targets: &[(String, Tensor)]) -> Result<()> {
    restore_with(checkpoint, targets, true).map(drop)
}

/// `restore` that loads what matches and returns what did not (PyTorch's
/// `strict=False`). A tensor present on both sides with another shape or dtype is still
/// an error, and then nothing changes.
pub fn restore_non_strict(
    checkpoint: &Checkpoint,
    targets: &[(String, Tensor)],
) -> Result<RestoreReport> {
    restore_with(checkpoint, targets, false)
}

fn restore_with(
    checkpoint: &Checkpoint,
    targets: &[(String, Tensor)],
    strict: bool,
) -> Result<RestoreReport> {
    let op = "restore";
    if let Some(name) = first_duplicate(targets) {
        let reason = format!("two targets are named {name}");
        return Err(Error::InvalidArgument { op, reason });
    }
    let mut report = RestoreReport::default();
    let mut mismatched = Vec::new();
    for (name, t) in targets {
        match checkpoint.tensors.get(name) {
            None => report.missing.push(name.clone()),
            Some(saved) => mismatched.extend(mismatch(name, saved, t)),
        }
    }
    let targeted: std::collections::HashSet<&String> = targets.iter().map(|(n, _)| n).collect();
    let mut unexpected: Vec<String> = checkpoint
        .tensors
        .keys()
        .filter(|n| !n.starts_with(OPTIMIZER_PREFIX) && !targeted.contains(n))
        .cloned()
        .collect();
    unexpected.sort();
    report.unexpected = unexpected;
    report.missing.sort();
    mismatched.sort();
    let fits = mismatched.is_empty()
        && (!strict || (report.missing.is_empty() && report.unexpected.is_empty()));
    if !fits {
        return Err(Error::StateMismatch {
            op,
            missing: report.missing,
            unexpected: report.unexpected,
            mismatched,
        });
    }
    kiln::no_grad(|| {
        for (name, t) in targets {
            if let Some(saved) = checkpoint.tensors.get(name) {
                t.set_data(&saved.to_device(&t.device())?)?;
            }
        }
        Ok(())
    })?;
    Ok(report)
}
