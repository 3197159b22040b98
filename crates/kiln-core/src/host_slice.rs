//! Host values borrowed: what an upload reads, without a copy of its own.

use crate::{DType, HostBuffer};
use half::f16;

/// A borrowed slice of host values of one dtype.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum HostSlice<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    I32(&'a [i32]),
    F64(&'a [f64]),
}

impl<'a> HostSlice<'a> {
    pub fn dtype(self) -> DType {
        match self {
            HostSlice::F32(_) => DType::F32,
            HostSlice::F16(_) => DType::F16,
            HostSlice::I32(_) => DType::I32,
            HostSlice::F64(_) => DType::F64,
        }
    }

    pub fn len(self) -> usize {
        match self {
            HostSlice::F32(v) => v.len(),
            HostSlice::F16(v) => v.len(),
            HostSlice::I32(v) => v.len(),
            HostSlice::F64(v) => v.len(),
        }
    }

    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// The raw bytes, little-endian as GPUs store them.
    pub fn as_bytes(self) -> &'a [u8] {
        fn bytes<T>(v: &[T]) -> &[u8] {
            // SAFETY: f32, f16, i32 and f64 are plain old data with no padding.
            unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
        }
        match self {
            HostSlice::F32(v) => bytes(v),
            HostSlice::F16(v) => bytes(v),
            HostSlice::I32(v) => bytes(v),
            HostSlice::F64(v) => bytes(v),
        }
    }

    /// The values copied into a buffer of their own.
    pub fn to_buffer(self) -> HostBuffer {
        match self {
            HostSlice::F32(v) => HostBuffer::F32(v.to_vec()),
            HostSlice::F16(v) => HostBuffer::F16(v.to_vec()),
            HostSlice::I32(v) => HostBuffer::I32(v.to_vec()),
            HostSlice::F64(v) => HostBuffer::F64(v.to_vec()),
        }
    }
}

impl HostBuffer {
    /// The values, borrowed.
    pub fn as_slice(&self) -> HostSlice<'_> {
        match self {
            HostBuffer::F32(v) => HostSlice::F32(v),
            HostBuffer::F16(v) => HostSlice::F16(v),
            HostBuffer::I32(v) => HostSlice::I32(v),
            HostBuffer::F64(v) => HostSlice::F64(v),
        }
    }
}
