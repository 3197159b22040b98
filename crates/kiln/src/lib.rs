#![warn(missing_docs)]
//! kiln: GPU-accelerated tensors for Rust.
//!
//! One non-generic [`Tensor`] type runs on the CPU reference backend or on any GPU
//! wgpu reaches (Vulkan, Metal, DX12, GL). Every fallible call returns
//! [`Result`]; bad shapes, dtypes, devices and indices are reported before any GPU
//! work starts.
//!
//! ```
//! use kiln::{DType, Device, Tensor};
//! # fn main() -> kiln::Result<()> {
//! let device = Device::cpu(); // or Device::best()? to use a GPU when there is one
//! let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3], &device)?;
//! let b = Tensor::ones([3, 2], DType::F32, &device)?;
//! let c = a.matmul(&b)?.relu()?;          // [2, 2]
//! assert_eq!(c.to_vec::<f32>()?, vec![6.0, 6.0, 15.0, 15.0]);
//! let p = a.softmax(-1)?;                  // rows sum to one
//! let s = p.sum(&[-1], false)?.to_vec::<f32>()?;
//! assert!(s.iter().all(|v| (v - 1.0).abs() < 1e-6));
//! # Ok(()) }
//! ```

mod attention;
mod autograd;
mod batch_norm;
pub use batch_norm::{BatchStats, RunningStats};
mod conv;
pub use conv::Conv2dOptions;
mod create;
mod device;
mod element;
mod elementwise;
mod host_read;
mod index;
mod loss;
mod matmul;
mod norm;
mod optim;
mod pool;
mod random;
mod reduce;
mod rnn;
mod shape_ops;
mod storage;
mod tensor;
mod view;

pub use autograd::{
    grad, gradcheck, is_grad_enabled, no_grad, GradIssue, GradIssueKind, GradcheckOptions,
    GradcheckReport, Gradients, NoGradGuard,
};
pub use device::Device;
pub use element::Element;
pub use host_read::HostRead;
pub use kiln_core::{
    philox, AdamSpec, BinaryOp, DType, DTypeSet, Error, GpuErrorKind, Gradient, MovingAverageSpec,
    OpInfo, OptimizerStep, ParamUpdate, ReduceOp, Result, RmsPropSpec, SgdSpec, Shape, UnaryOp,
};
pub use kiln_wgpu::{KernelProfile, Profile};
pub use random::Rng;
pub use tensor::{Tensor, TensorId};

/// The backends, for users who need to reach below the tensor API.
pub mod backend {
    pub use kiln_cpu::threads::{
        num_threads as cpu_threads, run_on_pool as run_on_cpu_pool,
        set_num_threads as set_cpu_threads,
    };
    pub use kiln_cpu::{CpuDevice, CpuStorage};
    pub use kiln_wgpu::shader_constants;
    pub use kiln_wgpu::{
        attention_class, autotune_cache_path, list_adapters, read_autotune_cache,
        specialised_sources, AdapterSummary, AttentionSplit, AttentionWay, CacheEntries,
        ConvAlgorithm, CopyProbe, FmaProbe, FusedParams, GpuDevice, GpuStorage, Kernel, MatmulRhs,
        MatmulVariant, ParamsLayout, ParamsMember, PoolStats, RowReduction, DIRECT_UPLOAD_BYTES,
        MATMUL_GROUP_WORKGROUPS, MAX_COLUMN_GROUP, MAX_MATMUL_GROUP, MAX_PENDING,
    };
}
