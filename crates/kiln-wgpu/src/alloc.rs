//! Buffers for tensors: taken from the pool within the device's limits, poisoned with
//! NaN when a test asks for it, filled from the host.

use crate::device::GpuDevice;
use crate::kernels::Kernel;
use crate::params::FillParams;
use crate::pool::{size_class, PooledBuffer};
use kiln_core::{DType, Error, Result};
use std::sync::atomic::Ordering;

impl GpuDevice {
    /// A buffer for `n` elements of `dtype`, checked against the device's limits.
    pub(crate) fn alloc(&self, op: &'static str, n: usize, dtype: DType) -> Result<PooledBuffer> {
        self.check_alloc(op, n, dtype)?;
        let bytes = (n as u64) * dtype.size_in_bytes() as u64;
        let limit = self.binding_limit();
        // Round up to the pool's size class, but never past what one binding may hold.
        let size = size_class(bytes)
            .min(limit)
            .max(bytes.div_ceil(4) * 4)
            .max(4);
        Ok(self.inner.pool.acquire(&self.inner.device, size))
    }

    /// The error `alloc` would return for `n` elements of `dtype`, if any: work that
    /// allocates later checks when it is recorded.
    pub(crate) fn check_alloc(&self, op: &'static str, n: usize, dtype: DType) -> Result<()> {
        if !self.supports(dtype) {
            return Err(Self::unsupported(op, dtype));
        }
        let bytes = (n as u64) * dtype.size_in_bytes() as u64;
        let limit = self.binding_limit();
        if bytes > limit {
            return Err(Error::LimitExceeded {
                op,
                what: "a storage buffer of that many bytes",
                needed: bytes,
                limit,
            });
        }
        Ok(())
    }

    fn binding_limit(&self) -> u64 {
        let limits = &self.inner.limits;
        limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size)
    }

    /// A buffer for a kernel's output, poisoned when poisoning is on.
    pub(crate) fn alloc_output(
        &self,
        op: &'static str,
        n: usize,
        dtype: DType,
    ) -> Result<PooledBuffer> {
        let buffer = self.alloc(op, n, dtype)?;
        if self.inner.poison.load(Ordering::Relaxed) {
            self.fill_words(op, &buffer, u32::MAX)?;
        }
        Ok(buffer)
    }

    /// Writes `pattern` into every 32-bit word of the buffer (a kernel in the batch).
    pub(crate) fn fill_words(
        &self,
        op: &'static str,
        buffer: &PooledBuffer,
        pattern: u32,
    ) -> Result<()> {
        let words = (buffer.size() / 4) as usize;
        let params = FillParams {
            words: crate::params::to_u32(op, "buffer size", words)?,
            pattern,
            _pad0: 0,
            _pad1: 0,
        };
        self.dispatch(
            op,
            Kernel::Fill,
            &[],
            &params,
            &[buffer.buffer()],
            self.groups_1d(op, words)?,
        )
    }

    /// Uploads bytes into a fresh buffer, ahead of any work recorded after this call.
    pub(crate) fn upload_bytes(
        &self,
        op: &'static str,
        bytes: &[u8],
        n: usize,
        dtype: DType,
    ) -> Result<PooledBuffer> {
        let buffer = self.alloc(op, n, dtype)?;
        self.upload_into(op, &buffer, bytes)?;
        Ok(buffer)
    }
}
