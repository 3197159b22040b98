//! Where tensors live: the CPU, or one GPU adapter opened through wgpu.

use kiln_core::{Error, Result};
use kiln_wgpu::GpuDevice;
use std::fmt;
use std::sync::Mutex;

#[derive(Clone, PartialEq)]
/// Where a tensor lives and its ops run.
pub enum Device {
    /// The CPU backend, the reference every GPU kernel is checked against.
    Cpu,
    /// One GPU adapter opened through wgpu.
    Gpu(GpuDevice),
}

/// The process's GPU once one opened. A failure is not kept: the next `gpu()` tries
/// again (a driver installed meanwhile, another `WGPU_ADAPTER_NAME`).
static DEFAULT_GPU: Mutex<Option<GpuDevice>> = Mutex::new(None);

impl Device {
    /// The CPU backend.
    pub fn cpu() -> Device {
        Device::Cpu
    }

    /// The process's shared GPU device, opened on first use on the adapter chosen by
    /// `WGPU_BACKEND`, `WGPU_ADAPTER_NAME` and `WGPU_POWER_PREF`. When no adapter opens,
    /// the error is returned and a later call tries again.
    pub fn gpu() -> Result<Device> {
        // The lock is held while a device opens, so two threads never open two.
        let mut open = DEFAULT_GPU.lock().unwrap_or_else(|e| e.into_inner());
        if open.is_none() {
            *open = Some(GpuDevice::new()?);
        }
        Ok(Device::Gpu(open.clone().expect("opened above")))
    }

    /// Makes `gpu()` open the `index`-th of the machine's equally good adapters (modulo
    /// their number) rather than the first: data-parallel ranks on one machine pass their
    /// local rank, so that each drives its own GPU. Has no effect once a GPU is open.
    pub fn prefer_gpu(index: usize) {
        kiln_wgpu::prefer_adapter(index);
    }

    /// `KILN_DEVICE=cpu` or `gpu` decides. Otherwise a hardware GPU when one opens, else
    /// the CPU backend: a software adapter (lavapipe) emulates a GPU on the same cores
    /// the CPU backend uses directly, and measured several times slower (README).
    pub fn best() -> Result<Device> {
        match std::env::var("KILN_DEVICE").as_deref() {
            Ok("cpu") => Ok(Device::Cpu),
            Ok("gpu") => Device::gpu(),
            Ok(other) => Err(Error::InvalidArgument {
                op: "Device::best",
                reason: format!("KILN_DEVICE must be cpu or gpu, not {other:?}"),
            }),
            Err(_) => Ok(match Device::gpu() {
                Ok(Device::Gpu(g)) if !g.summary().is_software() => Device::Gpu(g),
                _ => Device::Cpu,
            }),
        }
    }

    /// Parses `cpu`, `gpu` or `auto` (as `best`), e.g. from a command line.
    pub fn parse(name: &str) -> Result<Device> {
        match name {
            "cpu" => Ok(Device::Cpu),
            "gpu" => Device::gpu(),
            "auto" => Device::best(),
            other => Err(Error::InvalidArgument {
                op: "Device::parse",
                reason: format!("unknown device {other:?}: use cpu, gpu or auto"),
            }),
        }
    }

    /// True for a GPU.
    pub fn is_gpu(&self) -> bool {
        matches!(self, Device::Gpu(_))
    }

    /// The GPU device, for a GPU.
    pub fn as_gpu(&self) -> Option<&GpuDevice> {
        match self {
            Device::Gpu(g) => Some(g),
            Device::Cpu => None,
        }
    }

    /// Waits until all recorded GPU work has finished (a no-op on the CPU).
    pub fn synchronize(&self) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            Device::Gpu(g) => g.synchronize(),
        }
    }

    /// Submits all recorded GPU work without waiting (a no-op on the CPU).
    pub fn flush(&self) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            Device::Gpu(g) => g.flush("flush"),
        }
    }

    /// Runs `f` and reports every GPU kernel it launched: launches, bytes bound and,
    /// where the adapter has timestamp queries, GPU time per kernel (see
    /// `kiln::Profile`). It counts everything the device runs meanwhile, from any
    /// thread, and one profile runs at a time per device. The CPU backend launches no
    /// kernels: it is an error there.
    pub fn profile<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<(T, kiln_wgpu::Profile)> {
        match self {
            Device::Gpu(g) => g.profile(f),
            Device::Cpu => Err(Error::Unsupported {
                op: "profile",
                reason: "profiles count GPU kernel launches; the CPU backend has none".into(),
            }),
        }
    }
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Gpu(g) => write!(f, "{g:?}"),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The only test of this crate's own that opens a GPU, so nothing else can have
    /// opened one first.
    #[test]
    fn a_failed_gpu_open_is_not_remembered() {
        std::env::set_var("WGPU_ADAPTER_NAME", "no adapter is called this");
        let e = Device::gpu().unwrap_err();
        assert!(matches!(e, Error::NoAdapter { .. }), "{e}");
        std::env::remove_var("WGPU_ADAPTER_NAME");
        // Opens now, where an adapter exists (CI installs lavapipe); GPU tests never skip.
        assert!(Device::gpu().unwrap().is_gpu());
    }
}
