//! Helpers shared by the criterion benches in `benches/`: the devices to measure and
//! a seeded input maker.

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

/// Uniform `[-1, 1)` values; never zeros, which flatter some kernels.
pub fn input(shape: &[usize], device: &Device, seed: u64) -> Tensor {
    Tensor::rand(shape.to_vec(), DType::F32, device, &mut Rng::new(seed))
        .and_then(|t| t.mul_scalar(2.0)?.add_scalar(-1.0))
        .expect("benchmark input")
}
