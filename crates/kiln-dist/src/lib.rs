//! kiln-dist: data-parallel training on MPI (Open MPI, MPICH): one process per device,
//! on one machine or many, launched by `mpirun` or a cluster scheduler. `MpiGroup` is
//! kiln-nn's `Collective` on MPI's world; `fit` with `FitConfig::data_parallel` does the
//! rest (sharded data, rank 0's weights at the start, gradients averaged in buckets).
//!
//! ```no_run
//! # fn main() -> kiln::Result<()> {
//! let group = kiln_dist::MpiGroup::init()?;
//! kiln::Device::prefer_gpu(group.local_rank());
//! let dp = kiln_nn::distributed::DataParallel::new(group.clone());
//! // ... loaders `.sharded(dp.rank(), dp.size())?`, `FitConfig { data_parallel: Some(dp), .. }`;
//! // on an error, `group.abort_with(&error)` ends every rank.
//! # Ok(()) }
//! ```

mod group;

pub use group::MpiGroup;
