//! The device's own ceilings, probed in the same run as the kernels: peak f32 FMA rate
//! and copy bandwidth. Each result is also shown as a share of the ceiling it is bound by.

use crate::cases::Scale;
use crate::measure::{time, Clock};
use kiln::backend::{CopyProbe, FmaProbe};
use kiln::{Device, Result};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Rooflines {
    pub fma_gflops: f64,
    /// Bytes read plus written per second by a copy of `copy_bytes`.
    pub copy_gbs: f64,
    #[serde(default)]
    pub copy_bytes: usize,
}

const COPY_BYTES: usize = 64 << 20;
const FMA_INVOCATIONS: usize = 64 << 10;

impl Rooflines {
    /// Probes the device; `Scale::Large` uses probes four times the size (a data-centre
    /// GPU needs that many threads, and that large a copy, to reach its peak).
    pub fn measure(device: &Device, budget: Duration, scale: Scale) -> Result<Self> {
        let factor = if scale == Scale::Large { 4 } else { 1 };
        match device.as_gpu() {
            Some(g) => {
                let limit = g.summary().max_storage_buffer_binding_size as usize;
                let copy_bytes = (COPY_BYTES * factor).min(limit);
                let fma = FmaProbe::new(g, FMA_INVOCATIONS * factor)?;
                let t = time(device, None, budget, &|| fma.run())?;
                let copy = CopyProbe::new(g, copy_bytes)?;
                let c = time(device, None, budget, &|| copy.run())?;
                Ok(Rooflines {
                    fma_gflops: fma.flops() / t.median / 1e9,
                    copy_gbs: copy.bytes_moved() / c.median / 1e9,
                    copy_bytes,
                })
            }
            None => {
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
                let t = time(device, Some(Clock::WallClock), budget, &|| {
                    cpu_fma(threads);
                    Ok(())
                })?;
                let source = vec![1.0f32; COPY_BYTES / 4];
                // `time` takes a `Fn`; the target is written through a cell.
                let target = std::cell::RefCell::new(vec![0.0f32; COPY_BYTES / 4]);
                let c = time(device, Some(Clock::WallClock), budget, &|| {
                    target
                        .borrow_mut()
                        .copy_from_slice(std::hint::black_box(&source));
                    Ok(())
                })?;
                let flops = (CPU_ITERATIONS * CHAINS * fma_lanes() * 2) as f64;
                Ok(Rooflines {
                    fma_gflops: flops * threads as f64 / t.median / 1e9,
                    copy_gbs: 2.0 * COPY_BYTES as f64 / c.median / 1e9,
                    copy_bytes: COPY_BYTES,
                })
            }
        }
    }
}

const CPU_ITERATIONS: usize = 1 << 22;
/// Independent FMA chains per thread: enough in flight to cover the FMA latency.
const CHAINS: usize = 10;

/// f32 lanes of the probe's FMAs: the CPU's widest vector unit, as the kernels use it
/// (an 8-lane probe on an AVX-512 machine put matmul at 120-150% of its roof).
fn fma_lanes() -> usize {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        return 16;
    }
    8
}

/// Runs the FMA chains on every core.
fn cpu_fma(threads: usize) {
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || std::hint::black_box(fma_chains(0.5 + t as f32 * 1e-3)));
        }
    });
}

/// `CHAINS` independent chains of `fma_lanes()`-wide FMAs.
fn fma_chains(seed: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if fma_lanes() == 16 {
        // SAFETY: the CPU has the feature `fma_chains_avx512` is compiled for.
        return unsafe { fma_chains_avx512(seed) };
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features `fma_chains_avx2` is compiled for.
        return unsafe { fma_chains_avx2(seed) };
    }
    let (m, x) = (0.999f32, seed);
    let mut acc = [[seed; 8]; CHAINS];
    for _ in 0..CPU_ITERATIONS {
        for chain in acc.iter_mut() {
            for lane in chain.iter_mut() {
                *lane = *lane * m + x;
            }
        }
    }
    acc.iter().flatten().sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fma_chains_avx2(seed: f32) -> f32 {
    use std::arch::x86_64::*;
    let (m, x) = (_mm256_set1_ps(0.999), _mm256_set1_ps(seed));
    let mut acc = [x; CHAINS];
    for _ in 0..CPU_ITERATIONS {
        for a in acc.iter_mut() {
            *a = _mm256_fmadd_ps(*a, m, x);
        }
    }
    let mut lanes = [0.0f32; 8];
    let sum = acc
        .iter()
        .fold(_mm256_setzero_ps(), |s, &a| _mm256_add_ps(s, a));
    // SAFETY: `lanes` holds exactly eight f32s.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
    lanes.iter().sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fma_chains_avx512(seed: f32) -> f32 {
    use std::arch::x86_64::*;
    let (m, x) = (_mm512_set1_ps(0.999), _mm512_set1_ps(seed));
    let mut acc = [x; CHAINS];
    for _ in 0..CPU_ITERATIONS {
        for a in acc.iter_mut() {
            *a = _mm512_fmadd_ps(*a, m, x);
        }
    }
    let sum = acc
        .iter()
        .fold(_mm512_setzero_ps(), |s, &a| _mm512_add_ps(s, a));
    _mm512_reduce_add_ps(sum)
}
