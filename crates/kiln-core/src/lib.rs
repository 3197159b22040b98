//! kiln-core: the vocabulary every kiln backend shares — shapes, layouts, dtypes,
//! errors, the op table and the storage contract a backend implements.

pub mod backend;
pub mod dtype;
pub mod error;
pub mod host;
pub mod host_slice;
pub mod layout;
mod op_table;
pub mod ops;
pub mod philox;
pub mod shape;
pub mod spec;

pub use backend::{
    BackendDevice, BackendStorage, LayerNormGrads, ParamUpdate, ParamUpdateInPlace,
    RunningStatsUpdate,
};
pub use dtype::{DType, DTypeSet};
pub use error::{Error, GpuErrorKind, Result};
pub use host::{copy_bytes, HostBuffer};
pub use host_slice::HostSlice;
pub use layout::Layout;
pub use ops::{BinaryOp, Gradient, OpInfo, OpKind, ReduceOp, UnaryOp};
pub use shape::{Shape, MAX_RANK};
pub use spec::*;
