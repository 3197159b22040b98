//! kiln-wgpu: kiln's GPU backend. WGSL kernels from `shaders/` run through wgpu on
//! Vulkan, Metal, DX12 or GL. Work is recorded into one command encoder and submitted
//! in batches; buffers come from a pool; each (kernel, dtype) pipeline is built once.

mod adapter;
mod alloc;
mod attention_split;
mod attention_way;
mod autotune;
mod backend;
mod bind_groups;
mod byte_span;
mod cell_updates;
mod conv_algorithm;
mod copy_pool;
mod deferred;
mod deferred_group;
mod device;
mod env_warning;
mod error_scopes;
mod fusion;
#[cfg(test)]
mod generated_check;
mod kernel_groups;
mod kernels;
mod launch;
mod loop_budget;
mod matmul_rhs;
mod matmul_variant;
mod norm_stats;
mod ops;
mod params;
mod pipelines;
mod pool;
mod probe;
mod profile;
mod readback;
mod readback_probe;
mod row_reduction;
pub mod shader_constants;
mod storage;
mod subgroup_probe;
mod timing;
mod upload;
mod wgsl_functions;

pub use adapter::{list_adapters, prefer_adapter, AdapterSummary};
pub use attention_split::AttentionSplit;
pub use attention_way::AttentionWay;
pub use autotune::{
    attention_class, cache_path as autotune_cache_path, read_cache as read_autotune_cache,
    CacheEntries,
};
pub use conv_algorithm::ConvAlgorithm;
pub use device::GpuDevice;
pub use fusion::{
    FusedParams, FusedRead, MAX_OPS as MAX_FUSED_OPS, MAX_PENDING, MAX_READS as MAX_FUSED_READS,
};
pub use kernels::{specialised_sources, Kernel};
pub use matmul_rhs::MatmulRhs;
pub use matmul_variant::MatmulVariant;
pub use ops::column_group::MAX_GROUP as MAX_COLUMN_GROUP;
pub use ops::matmul_group::{
    MAX_GROUP as MAX_MATMUL_GROUP, SMALL_BELOW as MATMUL_GROUP_WORKGROUPS,
};
pub use params::{ParamsLayout, ParamsMember};
pub use pool::PoolStats;
pub use probe::{CopyProbe, FmaProbe};
pub use profile::{KernelProfile, Profile};
pub use readback::MappedRead;
pub use readback_probe::ReadbackPhases;
pub use row_reduction::RowReduction;
pub use storage::GpuStorage;
pub use upload::DIRECT_UP_TO as DIRECT_UPLOAD_BYTES;
