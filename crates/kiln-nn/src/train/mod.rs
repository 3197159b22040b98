//! Training: the `fit` loop (validation each epoch, metrics, early stopping, learning-
//! rate schedules, progress bars), hooks into it (`Callback`), checkpoints in safetensors, and curve plots.

mod callback;
mod checkpoint;
mod fit;
mod image;
mod plot;
mod run_state;

pub use callback::{Callback, Control, EpochEnd, OnEpochEnd, OnStepEnd, StepEnd};
pub(crate) use checkpoint::mismatch;
pub use checkpoint::{
    load_checkpoint, load_pytorch, restore, restore_non_strict, save_checkpoint, training_state,
    Checkpoint, RestoreReport,
};
pub use fit::{
    classification_step, evaluate, fit, next_token_step, regression_step, train_step,
    EarlyStopping, EpochMetrics, FitConfig, History, StepOutput,
};
pub use image::{save_image_grid, Palette};
pub use plot::plot_history;
pub use run_state::RunState;
