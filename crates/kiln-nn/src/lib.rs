#![warn(missing_docs)]
//! kiln-nn: neural networks on kiln tensors. Modules with PyTorch's names, defaults and
//! state-dict naming; losses; optimizers and learning-rate schedules; datasets and a
//! data loader; a training loop with validation, early stopping, checkpoints and
//! curve plots; metrics; and attribution methods with their sanity checks (`explain`).

pub mod data;
pub mod distributed;
mod drawing;
pub mod explain;
pub mod functional;
mod init;
pub mod layers;
pub mod loss;
pub mod metrics;
mod module;
pub mod optim;
pub mod train;

pub use init::{kaiming_uniform, uniform};

/// The README's Rust blocks (kiln's examples and "Train your own model") are compiled
/// and run as doc tests here, where both kiln and kiln-nn are in scope.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
pub use module::{Module, ModuleExt};

/// Helpers for writing `Module` implementations outside this crate.
pub mod module_helpers {
    pub use crate::module::prefixed;
}
