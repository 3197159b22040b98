//! Seeded random tensors. A counter-based Philox generator gives the same numbers
//! on every device for the same seed: each draw takes a fresh stream number, and
//! element `i` of a draw is a pure function of (seed, stream, i).

use crate::storage::Storage;
use crate::{Device, Tensor};
use kiln_core::{philox, BackendDevice, DType, Error, HostBuffer, Result, Shape};
use kiln_cpu::CpuDevice;

/// A seeded source of random tensors.
#[derive(Clone, Debug)]
pub struct Rng {
    seed: u64,
    stream: u64,
}

impl Rng {
    /// A generator whose draws depend only on `seed`, on every device.
    pub fn new(seed: u64) -> Self {
        Rng { seed, stream: 0 }
    }

    /// A fresh seed for another generator (e.g. a dropout layer's), drawn from this one.
    pub fn next_seed(&mut self) -> u64 {
        let stream = self.next_stream();
        let word = |i| philox::random_word(self.seed, stream, i) as u64;
        word(0) | (word(1) << 32)
    }

    fn next_stream(&mut self) -> u64 {
        self.stream += 1;
        self.stream - 1
    }
}

impl Tensor {
    /// Uniform on `[0, 1)`.
    pub fn rand(
        shape: impl Into<Shape>,
        dtype: DType,
        device: &Device,
        rng: &mut Rng,
    ) -> Result<Tensor> {
        let shape = shape.into();
        dtype.require_float("rand")?;
        let (n, stream) = (shape.elem_count(), rng.next_stream());
        let storage = match device {
            Device::Cpu => Storage::Cpu(CpuDevice.rand_uniform(n, dtype, rng.seed, stream)?),
            Device::Gpu(g) => Storage::Gpu(g.rand_uniform(n, dtype, rng.seed, stream)?),
        };
        Ok(Tensor::from_storage(storage, shape))
    }

    /// Standard normal. Drawn on the host for every device (see `kiln_core::philox::normals`).
    pub fn randn(
        shape: impl Into<Shape>,
        dtype: DType,
        device: &Device,
        rng: &mut Rng,
    ) -> Result<Tensor> {
        let shape = shape.into();
        dtype.require_float("randn")?;
        let values = philox::normals(rng.seed, rng.next_stream(), shape.elem_count());
        Tensor::from_host(HostBuffer::from_f32(dtype, values), shape, device)
    }

    /// 1 with probability `p`, else 0.
    pub fn bernoulli(
        shape: impl Into<Shape>,
        p: f64,
        dtype: DType,
        device: &Device,
        rng: &mut Rng,
    ) -> Result<Tensor> {
        let shape = shape.into();
        dtype.require_float("bernoulli")?;
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::InvalidArgument {
                op: "bernoulli",
                reason: format!("probability {p} is outside [0, 1]"),
            });
        }
        let (n, stream) = (shape.elem_count(), rng.next_stream());
        let storage = match device {
            Device::Cpu => Storage::Cpu(CpuDevice.bernoulli(n, dtype, p, rng.seed, stream)?),
            Device::Gpu(g) => Storage::Gpu(g.bernoulli(n, dtype, p, rng.seed, stream)?),
        };
        Ok(Tensor::from_storage(storage, shape))
    }

    /// Zeroes each element with probability `p` and scales the rest by `1 / (1 - p)`;
    /// the identity when `train` is false.
    pub fn dropout(&self, p: f64, train: bool, rng: &mut Rng) -> Result<Tensor> {
        self.require_float("dropout")?;
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::InvalidArgument {
                op: "dropout",
                reason: format!("probability {p} is outside [0, 1]"),
            });
        }
        if !train || p == 0.0 {
            return Ok(self.clone());
        }
        if p == 1.0 {
            return self.zeros_like();
        }
        let keep = Tensor::bernoulli(
            self.shape().clone(),
            1.0 - p,
            self.dtype(),
            &self.device(),
            rng,
        )?;
        self.mul(&keep)?.mul_scalar(1.0 / (1.0 - p))
    }
}
