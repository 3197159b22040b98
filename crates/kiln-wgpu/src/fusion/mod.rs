//! Elementwise fusion. On a GPU device with fusion on (the default; `KILN_FUSION=0` or
//! `GpuDevice::set_fusion(false)` turns it off), the elementwise ops (unary, binary
//! with broadcasting, `where`, casts to a float dtype) do not launch: each returns a
//! pending storage holding its op and inputs (`expr`). When something needs the
//! buffer (a kernel that is not elementwise, a read to the host, `synchronize`), the
//! pending storage and every pending input it reads at the same element index, or
//! through a broadcast (`Expr::through`), are lowered into one program (`program`),
//! written out as one WGSL kernel (`wgsl`) and launched (`run`). A storage nothing reaches any more never runs. Before there are
//! more than `MAX_PENDING` live pending storages, recording runs them all, as a sync
//! point would.
//!
//! Fusing never launches more kernels than running each op would: every kernel runs
//! one storage that something needed, and each storage runs at most once.
//!
//! Kernels that read inputs through load sections of their WGSL compute a pending
//! input in their loads (`prologue`); a deferred launch (`crate::deferred`: a matmul,
//! a reduction) computes the expression that reads its output in its stores
//! (`epilogue`).
//!
//! `KILN_DUMP_KERNELS=DIR` writes each generated kernel to `DIR` when it is built.

mod epilogue;
mod expr;
mod group;
mod program;
mod prologue;
mod run;
mod wgsl;

pub(crate) use epilogue::Epilogue;
pub(crate) use expr::{record, record_pad, Arg, Expr, FusedOp, Window};
pub(crate) use group::run_together;
pub(crate) use run::{run, PendingList};
pub(crate) use wgsl::has_store_section;
pub use wgsl::{FusedParams, FusedRead};

/// Pending ops one kernel may compute (bounds its size and the scalars it carries).
pub const MAX_OPS: usize = 32;
/// Buffers one kernel may read; with its output it stays within WebGPU's default of
/// eight storage buffers per shader stage.
pub const MAX_READS: usize = 7;
/// Live pending storages a device holds at most: recording runs them all (as
/// `synchronize` does) before there are more.
pub const MAX_PENDING: usize = 1 << 12;
/// Scalar parameter slots: two per op.
const MAX_SCALARS: usize = 2 * MAX_OPS;
