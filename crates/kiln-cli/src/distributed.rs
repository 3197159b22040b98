//! `--distributed`: this process as one rank of an MPI job (`mpirun -np N kiln train
//! ... --distributed`). Built only with the `distributed` feature, which needs an MPI
//! library; without it the flag says how to build one.

use kiln::Result;
use kiln_nn::distributed::DataParallel;

#[cfg(feature = "distributed")]
static GROUP: std::sync::OnceLock<std::sync::Arc<kiln_dist::MpiGroup>> = std::sync::OnceLock::new();

/// Joins the MPI job, points this rank at its own GPU (by its rank on the machine) and
/// gives it its share of the machine's cores for the CPU backend (unless
/// KILN_NUM_THREADS says otherwise).
#[cfg(feature = "distributed")]
pub fn join() -> Result<DataParallel> {
    let group = kiln_dist::MpiGroup::init()?;
    kiln::Device::prefer_gpu(group.local_rank());
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    kiln::backend::set_cpu_threads(cores / group.local_size().max(1));
    let _ = GROUP.set(group.clone());
    Ok(DataParallel::new(group))
}

#[cfg(not(feature = "distributed"))]
pub fn join() -> Result<DataParallel> {
    Err(kiln::Error::Unsupported {
        op: "train --distributed",
        reason: "this kiln was built without MPI; install an MPI library (Debian: libopenmpi-dev openmpi-bin libclang-dev) and build with `cargo build --release -p kiln-cli --features distributed`".into(),
    })
}

/// After an error in a distributed run: ends every rank (the others would wait for this
/// one). Returns when this process is not part of a job.
pub fn end_job_on(error: &kiln::Error) {
    #[cfg(feature = "distributed")]
    if let Some(group) = GROUP.get() {
        if kiln_nn::distributed::Collective::size(&**group) > 1 {
            group.abort_with(error);
        }
    }
    let _ = error;
}

/// Ends the MPI job's part in this process after a run that went well.
pub fn finish() {
    #[cfg(feature = "distributed")]
    if let Some(group) = GROUP.get() {
        group.finish();
    }
}
