//! kiln-wgpu: kiln's GPU backend. WGSL kernels from `shaders/` run through wgpu on
//! Vulkan, Metal, DX12 or GL. Work is recorded into one command encoder and submitted
//! in batches; buffers come from a pool; each (kernel, dtype) pipeline is built once.

mod adapter;
mod device;
mod kernels;
mod ops;
mod params;
mod pool;
mod probe;
mod storage;
mod timing;

pub use adapter::{list_adapters, AdapterSummary};
pub use device::GpuDevice;
pub use kernels::{specialised_sources, Kernel};
pub use ops::matmul::MatmulVariant;
pub use pool::PoolStats;
pub use probe::{CopyProbe, FmaProbe};
pub use storage::GpuStorage;
