//! kiln's kernel benchmarks: the suite `kiln bench` runs (fixed shapes per kernel
//! family, rooflines probed in the same run, JSON and Markdown reports), and the
//! helpers the criterion benches in `benches/` share.

mod cases;
mod measure;
mod peer;
mod report;
mod roofline;

pub use cases::{suite, Case, Scale, Unit};
pub use measure::{time, Clock, Timing};
pub use peer::{parse_peer, PeerResult};
pub use report::{markdown, run_suite, Entry, Report};
pub use roofline::Rooflines;

use kiln::{DType, Device, Rng, Tensor};

/// The CPU, plus the GPU when one opens (`KILN_DEVICE=cpu` skips it).
pub fn devices() -> Vec<(&'static str, Device)> {
    let mut list = vec![("cpu", Device::cpu())];
    if std::env::var("KILN_DEVICE").as_deref() != Ok("cpu") {
        match Device::gpu() {
            Ok(d) => list.push(("gpu", d)),
            Err(e) => eprintln!("benchmarking the CPU only: {e}"),
        }
    }
    list
}

/// How a case's result is read to the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostReadKind {
    /// `to_vec`: out of the mapped staging buffer into a vector of its own.
    Copied,
    /// `read_host`: left in the mapped staging buffer, as burn's `into_data` leaves it.
    Mapped,
}

impl HostReadKind {
    /// Reads `x` (f32) to the host this way and lets it go.
    pub fn read(self, x: &Tensor) -> kiln::Result<()> {
        match self {
            HostReadKind::Copied => drop(std::hint::black_box(x.to_vec::<f32>()?)),
            HostReadKind::Mapped => drop(std::hint::black_box(x.read_host::<f32>()?)),
        }
        Ok(())
    }
}

/// Uniform `[-1, 1)` values; never zeros, which flatter some kernels.
pub fn input(shape: &[usize], device: &Device, seed: u64) -> kiln::Result<Tensor> {
    Tensor::rand(shape.to_vec(), DType::F32, device, &mut Rng::new(seed))?
        .mul_scalar(2.0)?
        .add_scalar(-1.0)
}
