//! Hooks into `fit`: code of the caller's that runs after every step and every epoch,
//! for logging, custom metrics, checkpoints of its own, or stopping early on a rule of
//! its own (Keras's callbacks, PyTorch Lightning's hooks).

use super::{EpochMetrics, History, StepOutput};
use crate::Module;
use kiln::Result;

/// Whether training goes on after a hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Go on.
    Continue,
    /// End training after this step (the epoch is then validated and recorded) or
    /// after this epoch.
    Stop,
}

/// What a hook sees after an optimizer step.
pub struct StepEnd<'a> {
    /// 1-based, as `fit` prints them.
    pub epoch: usize,
    /// 1-based within the epoch.
    pub step: usize,
    /// The step's loss and counts, still on the device: reading the loss back
    /// (`to_f64_vec`) makes the host wait for the GPU, every step.
    pub output: &'a StepOutput,
    /// The model being trained.
    pub model: &'a dyn Module,
}

/// What a hook sees after an epoch has been validated.
pub struct EpochEnd<'a> {
    /// The epoch's figures.
    pub metrics: &'a EpochMetrics,
    /// The epochs before this one.
    pub history: &'a History,
    /// In training mode; a hook that evaluates should use `evaluate`, which restores it.
    pub model: &'a dyn Module,
    /// Figures of the hook's own (name, value): kept in `EpochMetrics::extra` and
    /// printed on the epoch's line.
    pub extra: Vec<(String, f64)>,
}

/// A hook `fit` calls; both methods do nothing by default. The hooks take `&self`, so
/// one kept in `FitConfig` can be shared: keep what it records behind a `Mutex` or in
/// atomics. An error from a hook stops training with that error.
pub trait Callback: Send + Sync {
    /// After each optimizer step.
    fn on_step_end(&self, _step: &StepEnd<'_>) -> Result<Control> {
        Ok(Control::Continue)
    }

    /// After each epoch has been validated, before it is recorded in the history.
    fn on_epoch_end(&self, _epoch: &mut EpochEnd<'_>) -> Result<Control> {
        Ok(Control::Continue)
    }
}

/// A closure run at every epoch's end: `OnEpochEnd(|e| { println!(..); Ok(Control::Continue) })`.
pub struct OnEpochEnd<F>(pub F);

impl<F> Callback for OnEpochEnd<F>
where
    F: Fn(&mut EpochEnd<'_>) -> Result<Control> + Send + Sync,
{
    fn on_epoch_end(&self, epoch: &mut EpochEnd<'_>) -> Result<Control> {
        (self.0)(epoch)
    }
}

/// A closure run after every step.
pub struct OnStepEnd<F>(pub F);

impl<F> Callback for OnStepEnd<F>
where
    F: Fn(&StepEnd<'_>) -> Result<Control> + Send + Sync,
{
    fn on_step_end(&self, step: &StepEnd<'_>) -> Result<Control> {
        (self.0)(step)
    }
}
