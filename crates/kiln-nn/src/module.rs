//! The `Module` trait: a forward pass, named parameters and buffers (dotted names, as
//! in a PyTorch state dict) and a train/eval switch.

use kiln::{Result, Tensor};

/// A layer or a model: a forward pass and its named parameters (and buffers). The
/// names are PyTorch's (`0.weight`, `blocks.1.norm1.bias`), so checkpoints and state
/// dicts match.
pub trait Module: Send + Sync {
    /// The output for a batch `x`.
    fn forward(&self, x: &Tensor) -> Result<Tensor>;

    /// Trainable tensors, named as PyTorch names them (`weight`, `layers.0.bias`).
    fn named_parameters(&self) -> Vec<(String, Tensor)>;

    /// State that is saved but not trained, such as BatchNorm's running statistics.
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// Training mode (dropout active, batch statistics) or evaluation mode.
    fn set_training(&self, _training: bool) {}
}

/// Conveniences every module gets.
pub trait ModuleExt: Module {
    /// The trainable parameters, without their names.
    fn parameters(&self) -> Vec<Tensor> {
        self.named_parameters()
            .into_iter()
            .map(|(_, t)| t)
            .collect()
    }

    /// How many trainable values.
    fn num_parameters(&self) -> usize {
        self.parameters().iter().map(Tensor::elem_count).sum()
    }

    /// Parameters and buffers: what a checkpoint holds.
    fn state_dict(&self) -> Vec<(String, Tensor)> {
        let mut all = self.named_parameters();
        all.extend(self.named_buffers());
        all
    }

    /// Converts every floating-point parameter and buffer to `dtype` in place (PyTorch's
    /// `module.to(dtype)`; `DType::F64` is `module.double()`, for the CPU). Integer
    /// buffers stay as they are. Build optimizers after converting.
    fn to_dtype(&self, dtype: kiln::DType) -> kiln::Result<()> {
        if !dtype.is_float() {
            return Err(kiln::Error::UnsupportedDType {
                op: "Module::to_dtype",
                dtype,
                reason: "parameters convert to a floating-point dtype",
            });
        }
        self.state_dict()
            .iter()
            .filter(|(_, t)| t.dtype().is_float())
            .try_for_each(|(_, t)| t.set_dtype(dtype))
    }

    /// Training mode: dropout active, batch norm on batch statistics.
    fn train(&self) {
        self.set_training(true);
    }

    /// Evaluation mode: dropout off, batch norm on running statistics.
    fn eval(&self) {
        self.set_training(false);
    }

    /// Runs `f` with the parameters as constants, so that a backward pass through this
    /// module computes no gradient of theirs (a GAN's generator step through its
    /// discriminator; PyTorch's `requires_grad_(False)` and back); trainable again
    /// after, whatever `f` returns. The parameters stay the same tensors: optimizers
    /// holding them go on stepping them.
    fn frozen<T>(&self, f: impl FnOnce() -> kiln::Result<T>) -> kiln::Result<T> {
        let trainable = self.parameters().into_iter().filter(Tensor::is_leaf_var);
        let thaw = Thaw(trainable.collect());
        for p in &thaw.0 {
            p.set_requires_grad(false)?;
        }
        f()
    }
}

/// Parameters `ModuleExt::frozen` made constants, trainable again when dropped (after
/// its closure returns, or unwinds).
struct Thaw(Vec<Tensor>);

impl Drop for Thaw {
    fn drop(&mut self) {
        for p in &self.0 {
            // A leaf always changes (only computed tensors refuse).
            let _ = p.set_requires_grad(true);
        }
    }
}

impl<M: Module + ?Sized> ModuleExt for M {}

/// `name` under `prefix` (`layers.0` + `weight` = `layers.0.weight`).
pub fn prefixed(prefix: &str, items: Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
    items
        .into_iter()
        .map(|(n, t)| (format!("{prefix}.{n}"), t))
        .collect()
}
