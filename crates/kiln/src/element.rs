//! Rust types that map to kiln dtypes, for moving data in and out of tensors.

use half::f16;
use kiln_core::{DType, HostBuffer, HostSlice};

/// A Rust scalar type kiln stores: `f32`, `half::f16` or `i32`.
pub trait Element: Copy + Send + Sync + 'static {
    /// The dtype this type is stored as.
    const DTYPE: DType;
    /// The values as a host buffer of that dtype.
    fn into_host(data: Vec<Self>) -> HostBuffer;
    /// The values when `host` holds this type.
    fn from_host(host: HostBuffer) -> Option<Vec<Self>>;
    /// The values borrowed, as a host slice of that dtype.
    fn host_slice(data: &[Self]) -> HostSlice<'_>;
    /// The values `bytes` hold (little-endian, as devices store them); `None` when
    /// they are not aligned for the type.
    fn from_bytes(bytes: &[u8]) -> Option<&[Self]>;
}

/// `bytes` as values of a plain numeric type, where aligned for it.
fn cast<T: Element>(bytes: &[u8]) -> Option<&[T]> {
    // SAFETY: called only for f32, f16, i32 and f64, which have no padding and for
    // which every bit pattern is a value.
    let (head, body, tail) = unsafe { bytes.align_to::<T>() };
    (head.is_empty() && tail.is_empty()).then_some(body)
}

impl Element for f32 {
    fn from_bytes(bytes: &[u8]) -> Option<&[Self]> {
        cast(bytes)
    }
    const DTYPE: DType = DType::F32;
    fn into_host(data: Vec<Self>) -> HostBuffer {
        HostBuffer::F32(data)
    }
    fn host_slice(data: &[Self]) -> HostSlice<'_> {
        HostSlice::F32(data)
    }
    fn from_host(host: HostBuffer) -> Option<Vec<Self>> {
        match host {
            HostBuffer::F32(v) => Some(v),
            _ => None,
        }
    }
}

impl Element for f16 {
    fn from_bytes(bytes: &[u8]) -> Option<&[Self]> {
        cast(bytes)
    }
    const DTYPE: DType = DType::F16;
    fn into_host(data: Vec<Self>) -> HostBuffer {
        HostBuffer::F16(data)
    }
    fn host_slice(data: &[Self]) -> HostSlice<'_> {
        HostSlice::F16(data)
    }
    fn from_host(host: HostBuffer) -> Option<Vec<Self>> {
        match host {
            HostBuffer::F16(v) => Some(v),
            _ => None,
        }
    }
}

impl Element for i32 {
    fn from_bytes(bytes: &[u8]) -> Option<&[Self]> {
        cast(bytes)
    }
    const DTYPE: DType = DType::I32;
    fn into_host(data: Vec<Self>) -> HostBuffer {
        HostBuffer::I32(data)
    }
    fn host_slice(data: &[Self]) -> HostSlice<'_> {
        HostSlice::I32(data)
    }
    fn from_host(host: HostBuffer) -> Option<Vec<Self>> {
        match host {
            HostBuffer::I32(v) => Some(v),
            _ => None,
        }
    }
}

impl Element for f64 {
    fn from_bytes(bytes: &[u8]) -> Option<&[Self]> {
        cast(bytes)
    }
    const DTYPE: DType = DType::F64;
    fn into_host(data: Vec<Self>) -> HostBuffer {
        HostBuffer::F64(data)
    }
    fn host_slice(data: &[Self]) -> HostSlice<'_> {
        HostSlice::F64(data)
    }
    fn from_host(host: HostBuffer) -> Option<Vec<Self>> {
        match host {
            HostBuffer::F64(v) => Some(v),
            _ => None,
        }
    }
}
