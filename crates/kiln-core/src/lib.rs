//! kiln-core: the vocabulary every kiln backend shares — shapes, layouts, dtypes,
//! errors, op enums and the storage contract a backend implements.

pub mod backend;
pub mod dtype;
pub mod error;
pub mod host;
pub mod layout;
pub mod op;
pub mod philox;
pub mod shape;

pub use backend::{BackendDevice, BackendStorage};
pub use dtype::DType;
pub use error::{Error, GpuErrorKind, Result};
pub use host::HostBuffer;
pub use layout::Layout;
pub use op::*;
pub use shape::{Shape, MAX_RANK};
