//! A tensor's elements read to the host without a copy of their own.

use crate::storage::Storage;
use crate::{Element, Tensor};
use kiln_core::{Error, HostBuffer, Result};
use kiln_wgpu::MappedRead;
use std::ops::Deref;

/// A tensor's elements in row-major order on the host, from `Tensor::read_host`:
/// from a GPU, the staging buffer the readback landed in, kept mapped until this is
/// dropped; from the CPU backend, a copy. Dereferences to `&[T]`.
#[derive(Debug)]
pub struct HostRead<T: Element> {
    values: Values<T>,
}

#[derive(Debug)]
enum Values<T> {
    /// Checked to hold aligned values of `T` when made.
    Mapped(MappedRead),
    Owned(Vec<T>),
}

impl<T: Element> Deref for HostRead<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match &self.values {
            Values::Mapped(m) => T::from_bytes(m.bytes()).expect("checked when made"),
            Values::Owned(v) => v,
        }
    }
}

impl Tensor {
    /// The elements in row-major order on the host (a sync point on a GPU), without
    /// the copy into a vector of their own that `to_vec` makes: from a GPU they stay
    /// in the mapped staging buffer the readback copied them to, until the `HostRead`
    /// is dropped. `T` must match the dtype.
    ///
    /// ```
    /// # use kiln::{Device, Tensor};
    /// let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0], [3], &Device::cpu())?;
    /// let host = x.mul_scalar(2.0)?.read_host::<f32>()?;
    /// assert_eq!(&host[..], &[2.0, 4.0, 6.0]);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn read_host<T: Element>(&self) -> Result<HostRead<T>> {
        self.check_element::<T>("read_host")?;
        let values = match &*self.storage() {
            Storage::Gpu(s) => {
                let mapped = s.read_mapped("read_host", self.layout())?;
                match T::from_bytes(mapped.bytes()) {
                    Some(_) => Values::Mapped(mapped),
                    // Never seen: mapped ranges are aligned to far more than a value.
                    None => {
                        let n = self.elem_count();
                        let host = HostBuffer::from_bytes(T::DTYPE, mapped.bytes(), n);
                        Values::Owned(T::from_host(host).expect("made with T's dtype"))
                    }
                }
            }
            Storage::Cpu(_) => Values::Owned(self.to_vec()?),
        };
        Ok(HostRead { values })
    }

    /// An error unless `T` is the tensor's dtype.
    pub(crate) fn check_element<T: Element>(&self, op: &'static str) -> Result<()> {
        match T::DTYPE == self.dtype() {
            true => Ok(()),
            false => Err(Error::DTypeMismatch {
                op,
                lhs: self.dtype(),
                rhs: T::DTYPE,
            }),
        }
    }
}
