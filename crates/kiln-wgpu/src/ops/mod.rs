//! Kernel launchers, one module per family of `shaders/`.

pub(crate) mod create;
pub(crate) mod elementwise;
pub(crate) mod index;
pub(crate) mod loss;
pub mod matmul;
pub(crate) mod reduce;
pub(crate) mod window;
