//! Tensor data in host memory: what crosses between the user, the CPU backend and
//! GPU uploads and readbacks.

use crate::{DType, Error, Result};
use half::f16;
use std::mem::MaybeUninit;

/// A vector of `n` copies of `value`, failing with `HostOutOfMemory` rather than
/// aborting the process when the allocation cannot be made.
pub fn try_filled<T: Clone>(op: &'static str, n: usize, value: T) -> Result<Vec<T>> {
    let mut v = Vec::new();
    let bytes = (n as u64).saturating_mul(std::mem::size_of::<T>() as u64);
    v.try_reserve_exact(n)
        .map_err(|_| Error::HostOutOfMemory { op, bytes })?;
    v.resize(n, value);
    Ok(v)
}

#[derive(Clone, Debug, PartialEq)]
pub enum HostBuffer {
    F32(Vec<f32>),
    F16(Vec<f16>),
    I32(Vec<i32>),
    F64(Vec<f64>),
}

impl HostBuffer {
    pub fn dtype(&self) -> DType {
        self.as_slice().dtype()
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn zeros(dtype: DType, n: usize) -> Self {
        match dtype {
            DType::F32 => HostBuffer::F32(vec![0.0; n]),
            DType::F16 => HostBuffer::F16(vec![f16::ZERO; n]),
            DType::I32 => HostBuffer::I32(vec![0; n]),
            DType::F64 => HostBuffer::F64(vec![0.0; n]),
        }
    }

    /// `n` copies of `value` in `dtype`, or `HostOutOfMemory` instead of an abort.
    pub fn try_full(op: &'static str, dtype: DType, n: usize, value: f64) -> Result<Self> {
        Ok(match dtype {
            DType::F32 => HostBuffer::F32(try_filled(op, n, value as f32)?),
            DType::F16 => HostBuffer::F16(try_filled(op, n, f16::from_f64(value))?),
            DType::I32 => HostBuffer::I32(try_filled(op, n, value as i32)?),
            DType::F64 => HostBuffer::F64(try_filled(op, n, value)?),
        })
    }

    /// Values as f64 (exact for every dtype kiln holds).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match self {
            HostBuffer::F32(v) => v.iter().map(|&x| x as f64).collect(),
            HostBuffer::F16(v) => v.iter().map(|&x| x.to_f64()).collect(),
            HostBuffer::I32(v) => v.iter().map(|&x| x as f64).collect(),
            HostBuffer::F64(v) => v.clone(),
        }
    }

    /// Values as f32; i32 values beyond 2^24 round.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match self {
            HostBuffer::F32(v) => v.clone(),
            HostBuffer::F16(v) => v.iter().map(|&x| x.to_f32()).collect(),
            HostBuffer::I32(v) => v.iter().map(|&x| x as f32).collect(),
            HostBuffer::F64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// Converts f32 values to `dtype` (round to nearest; i32 truncates towards zero
    /// and saturates, as a cast does on the GPU).
    pub fn from_f32(dtype: DType, v: Vec<f32>) -> Self {
        match dtype {
            DType::F32 => HostBuffer::F32(v),
            DType::F16 => HostBuffer::F16(v.into_iter().map(f16::from_f32).collect()),
            DType::I32 => HostBuffer::I32(v.into_iter().map(|x| x as i32).collect()),
            DType::F64 => HostBuffer::F64(v.into_iter().map(|x| x as f64).collect()),
        }
    }

    /// Converts f64 values to `dtype`, rounding once.
    pub fn from_f64(dtype: DType, v: Vec<f64>) -> Self {
        match dtype {
            DType::F32 => HostBuffer::F32(v.into_iter().map(|x| x as f32).collect()),
            DType::F16 => HostBuffer::F16(v.into_iter().map(f16::from_f64).collect()),
            DType::I32 => HostBuffer::I32(v.into_iter().map(|x| x as i32).collect()),
            DType::F64 => HostBuffer::F64(v),
        }
    }

    /// The raw bytes, little-endian as GPUs store them.
    pub fn as_bytes(&self) -> &[u8] {
        self.as_slice().as_bytes()
    }

    /// Rebuilds a buffer of `n` elements from raw little-endian bytes.
    pub fn from_bytes(dtype: DType, bytes: &[u8], n: usize) -> Self {
        // SAFETY: copy_bytes writes every byte of its destination.
        unsafe { Self::from_bytes_with(dtype, bytes, n, copy_bytes) }
    }

    /// `from_bytes`, moving the bytes with `copy(destination, source)` (the same
    /// length): a GPU readback copies a large mapped range on several threads. The
    /// destination is not zeroed first: zeroing a reused 16 MiB block cost about as much
    /// as the copy.
    ///
    /// # Safety
    /// `copy` must write every byte of its destination.
    pub unsafe fn from_bytes_with(
        dtype: DType,
        bytes: &[u8],
        n: usize,
        copy: impl FnOnce(&mut [MaybeUninit<u8>], &[u8]),
    ) -> Self {
        // One copy into an aligned vector (the host is little-endian, as GPU buffers
        // are), straight from the mapped staging buffer.
        unsafe fn collect<T: bytemuck::Pod>(
            bytes: &[u8],
            copy: impl FnOnce(&mut [MaybeUninit<u8>], &[u8]),
        ) -> Vec<T> {
            let len = bytes.len() / std::mem::size_of::<T>();
            let size = len * std::mem::size_of::<T>();
            let mut out = Vec::<T>::with_capacity(len);
            // SAFETY: the first `len` elements of spare capacity, viewed as their bytes
            // (MaybeUninit<u8> has no validity requirement).
            let dst = unsafe {
                std::slice::from_raw_parts_mut(
                    out.spare_capacity_mut()
                        .as_mut_ptr()
                        .cast::<MaybeUninit<u8>>(),
                    size,
                )
            };
            copy(dst, &bytes[..size]);
            // SAFETY: the caller's `copy` wrote every byte of the first `len` elements,
            // and any bytes are a valid T (Pod).
            unsafe { out.set_len(len) };
            out
        }
        let bytes = &bytes[..n * dtype.size_in_bytes()];
        // SAFETY: the caller's contract on `copy` is collect's.
        unsafe {
            match dtype {
                DType::F32 => HostBuffer::F32(collect(bytes, copy)),
                DType::F16 => HostBuffer::F16(collect(bytes, copy)),
                DType::I32 => HostBuffer::I32(collect(bytes, copy)),
                DType::F64 => HostBuffer::F64(collect(bytes, copy)),
            }
        }
    }
}

/// Writes every byte of `dst` from `src`, which has the same length.
pub fn copy_bytes(dst: &mut [MaybeUninit<u8>], src: &[u8]) {
    assert_eq!(dst.len(), src.len(), "copy_bytes: lengths differ");
    // SAFETY: the same length, and no overlap: `dst` is memory no one else references.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr().cast::<u8>(), src.len()) }
}

// `from_bytes` and the uploads reinterpret GPU bytes (little-endian) as host numbers.
const _: () = assert!(
    cfg!(target_endian = "little"),
    "kiln needs a little-endian host"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_copied_by_a_caller_land_in_place() {
        // Ragged lengths, and a copy in pieces as a GPU readback makes it.
        for n in [0, 1, 5000, 70_001] {
            let bytes: Vec<u8> = (0..n * 4 + 12).map(|i| (i * 31 + i / 4096) as u8).collect();
            let pieces = |dst: &mut [MaybeUninit<u8>], src: &[u8]| {
                for (d, s) in dst.chunks_mut(4093).zip(src.chunks(4093)) {
                    copy_bytes(d, s);
                }
            };
            // SAFETY: the pieces cover the whole destination.
            let host = unsafe { HostBuffer::from_bytes_with(DType::F32, &bytes, n, pieces) };
            assert_eq!(host.as_bytes(), &bytes[..n * 4], "{n} elements");
            let plain = HostBuffer::from_bytes(DType::I32, &bytes, n);
            assert_eq!(plain.as_bytes(), &bytes[..n * 4], "{n} elements, one copy");
        }
    }
}
