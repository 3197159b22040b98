//! `GpuStorage`: a tensor's buffer on a GPU, or the work that will fill it: a fused
//! elementwise expression, a deferred launch that may take its consumer as an
//! epilogue (`fusion`, `deferred`), or another storage's deferred launch that writes
//! this one too (a side output). The backend contract over it is in `backend.rs`, the
//! launchers in `ops/`.

use crate::deferred::Deferred;
use crate::device::GpuDevice;
use crate::fusion::Expr;
use crate::pool::PooledBuffer;
use kiln_core::{DType, Error, GpuErrorKind, Layout, Result, Shape};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, TryLockError, Weak};

#[derive(Clone)]
pub struct GpuStorage {
    pub(crate) data: Arc<StorageData>,
    pub(crate) dtype: DType,
    /// Elements the buffer holds (it may be larger: pool size classes).
    pub(crate) len: usize,
    pub(crate) device: GpuDevice,
    /// For i32 data: bounds every element is known to lie within, kept from the host
    /// values it was made of, so that an index check needs no readback. `None` when
    /// a kernel wrote it.
    pub(crate) value_range: Option<(i32, i32)>,
}

/// What clones of one storage share: the buffer once it exists, and until then the
/// expression or the deferred launch that computes it.
pub(crate) struct StorageData {
    buffer: OnceLock<PooledBuffer>,
    /// Taken (set to `None`) when the expression has run, which also lets go of its
    /// inputs. The lock is held while it runs, so it runs once.
    pub(crate) expr: Mutex<Option<Expr>>,
    /// Likewise for a deferred launch, which a consumer may run with itself as the
    /// launch's epilogue (the launch's own buffer is filled then too).
    pub(crate) deferred: Mutex<Option<Box<dyn Deferred>>>,
    /// For a side output: the storage whose deferred launch fills this one as well,
    /// held to run that launch, never to read its buffer. Taken once filled.
    side_of: Mutex<Option<Arc<StorageData>>>,
    /// How many side outputs hold this storage so (`fusion::epilogue::seal_if_private`
    /// discounts them).
    pub(crate) followers: AtomicUsize,
    /// When its work was recorded, in the order of all pending storages: a storage's
    /// pending inputs were recorded before it (0 for a storage made with its buffer).
    pub(crate) recorded: u64,
    /// Runs in progress that mean to take its deferred launch into a launch of their
    /// own (`LaunchClaim`): a launch of several leaves it to them.
    claims: AtomicUsize,
}

/// While held, marks a storage's deferred launch as one a run in progress will take
/// into a launch of its own: an expression's, as its epilogue; a recurrent step's
/// (`deferred_group` leaves it out of its launches). A launch a group locked before
/// the claim may be gone: the claimant asks whether it is still deferred after
/// claiming. It holds the storage weakly: whether anything else holds it decides
/// whether an epilogue writes the launch's own output (`fusion::epilogue::seal_if_private`).
pub(crate) struct LaunchClaim(Weak<StorageData>);

impl LaunchClaim {
    pub(crate) fn new(data: &Arc<StorageData>) -> Self {
        data.claims.fetch_add(1, Ordering::SeqCst);
        LaunchClaim(Arc::downgrade(data))
    }
}

impl Drop for LaunchClaim {
    fn drop(&mut self) {
        if let Some(data) = self.0.upgrade() {
            data.claims.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// The count `StorageData::recorded` takes its values from.
static RECORDED: AtomicU64 = AtomicU64::new(1);

impl GpuStorage {
    pub(crate) fn new(buffer: PooledBuffer, dtype: DType, len: usize, device: &GpuDevice) -> Self {
        let data = StorageData {
            buffer: OnceLock::from(buffer),
            expr: Mutex::new(None),
            deferred: Mutex::new(None),
            side_of: Mutex::new(None),
            followers: AtomicUsize::new(0),
            recorded: 0,
            claims: AtomicUsize::new(0),
        };
        GpuStorage {
            data: Arc::new(data),
            dtype,
            len,
            device: device.clone(),
            value_range: None,
        }
    }

    /// Storage computed later by `expr`: when a kernel or the host needs its buffer,
    /// or at the device's next `synchronize`.
    pub(crate) fn pending(
        expr: Expr,
        dtype: DType,
        len: usize,
        device: &GpuDevice,
    ) -> Result<Self> {
        Self::pending_data(Some(expr), None, dtype, len, device)
    }

    /// Storage a deferred launch fills later: when something needs its buffer, or
    /// with the elementwise expression that reads it (as its epilogue).
    pub(crate) fn deferred(
        launch: Box<dyn Deferred>,
        dtype: DType,
        len: usize,
        device: &GpuDevice,
    ) -> Result<Self> {
        Self::pending_data(None, Some(launch), dtype, len, device)
    }

    fn pending_data(
        expr: Option<Expr>,
        launch: Option<Box<dyn Deferred>>,
        dtype: DType,
        len: usize,
        device: &GpuDevice,
    ) -> Result<Self> {
        let data = Arc::new(StorageData {
            buffer: OnceLock::new(),
            expr: Mutex::new(expr),
            deferred: Mutex::new(launch),
            side_of: Mutex::new(None),
            followers: AtomicUsize::new(0),
            recorded: RECORDED.fetch_add(1, Ordering::Relaxed),
            claims: AtomicUsize::new(0),
        });
        device.track_pending(&data)?;
        Ok(GpuStorage {
            data,
            dtype,
            len,
            device: device.clone(),
            value_range: None,
        })
    }

    /// A further output of a deferred launch, `len` elements of `dtype`: empty until
    /// `follow` names the launch's storage, which fills this one when its launch runs,
    /// alone or with an epilogue. Asking for this buffer first runs the launch alone.
    pub(crate) fn side_output(dtype: DType, len: usize, device: &GpuDevice) -> Result<Self> {
        Self::pending_data(None, None, dtype, len, device)
    }

    /// Makes this side output wait on `primary`'s launch.
    pub(crate) fn follow(&self, primary: &GpuStorage) {
        primary.data.followers.fetch_add(1, Ordering::SeqCst);
        *self.data.side_of.lock().unwrap() = Some(primary.data.clone());
    }

    /// The same storage, known to hold values within `[min, max]` (i32).
    pub(crate) fn with_range(mut self, min: i32, max: i32) -> Self {
        self.value_range = Some((min, max));
        self
    }

    /// Bounds of every element, for i32 storage made from known values (see
    /// `value_range`); a range check within them needs no readback.
    pub fn known_range(&self) -> Option<(i32, i32)> {
        self.value_range
    }

    /// Elements the storage holds.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn device(&self) -> &GpuDevice {
        &self.device
    }

    /// `pieces` (storages of one device and dtype, each with its layout) side by side
    /// along `dim` in a new compact storage of `shape`; their lengths along `dim` add up
    /// to `shape`'s, and their other dims are `shape`'s.
    pub fn cat(pieces: &[(&GpuStorage, &Layout)], dim: usize, shape: &Shape) -> Result<GpuStorage> {
        crate::ops::cat::cat(pieces, dim, shape)
    }

    /// Whether its expression has yet to run (see `fusion`).
    pub fn is_pending(&self) -> bool {
        self.data.buffer.get().is_none()
    }

    /// Runs its pending expression or deferred launch now, if it has one: for a value
    /// kept from step to step, which pending would hold every input it reads.
    pub fn realize(&self) -> Result<()> {
        self.buffer().map(drop)
    }

    /// Whether this handle alone holds the data, its value computed: no other handle,
    /// and no work still to run that reads it, so a kernel may write over it.
    pub(crate) fn exclusive(&self) -> Result<bool> {
        self.buffer()?;
        Ok(Arc::strong_count(&self.data) == 1)
    }

    /// Whether it is a deferred launch that has yet to run.
    pub(crate) fn is_deferred(&self) -> bool {
        self.data.deferred.lock().unwrap().is_some()
    }

    /// The buffer, running the pending expression first if there is one.
    pub(crate) fn buffer(&self) -> Result<&PooledBuffer> {
        if let Some(b) = self.data.buffer.get() {
            return Ok(b);
        }
        crate::fusion::run(&self.data, &self.device)?;
        self.data.buffer.get().ok_or_else(|| Error::Gpu {
            op: "fusion",
            kind: GpuErrorKind::Internal,
            message: "a fused expression ran without producing its buffer".into(),
        })
    }

    pub(crate) fn raw(&self) -> Result<&wgpu::Buffer> {
        Ok(self.buffer()?.buffer())
    }
}

impl StorageData {
    /// Whether a run in progress means to take its launch (`LaunchClaim`).
    pub(crate) fn claimed(&self) -> bool {
        self.claims.load(Ordering::SeqCst) > 0
    }

    /// Whether it still has an expression or a deferred launch to run. A slot another
    /// thread holds counts as work (it is being run or fused now): waiting for it here,
    /// under the device's pending list, deadlocked with a thread that held the slot and
    /// wanted the list (`column_group::run_with_others`), in CI's training tests.
    pub(crate) fn has_work(&self) -> bool {
        fn holds<T>(slot: &Mutex<Option<T>>) -> bool {
            match slot.try_lock() {
                Ok(held) => held.is_some(),
                Err(TryLockError::WouldBlock) => true,
                Err(TryLockError::Poisoned(held)) => held.into_inner().is_some(),
            }
        }
        holds(&self.expr) || holds(&self.deferred) || holds(&self.side_of)
    }

    /// For a side output not yet filled: runs the launch that fills it (which fills it
    /// then, unless it has run already and done so).
    pub(crate) fn run_side(&self, device: &GpuDevice) -> Result<()> {
        let primary = self.side_of.lock().unwrap().clone();
        match primary {
            Some(primary) => crate::fusion::run(&primary, device),
            None => Ok(()),
        }
    }

    /// Stores the buffer a side output's launch wrote, and lets go of the launch's
    /// storage.
    pub(crate) fn fill_side(&self, buffer: PooledBuffer) -> Result<()> {
        self.fill(buffer)?;
        self.release_primary();
        Ok(())
    }

    fn release_primary(&self) {
        let held = match self.side_of.try_lock() {
            Ok(mut slot) => slot.take(),
            Err(TryLockError::Poisoned(slot)) => slot.into_inner().take(),
            // `run_side` holds it only to clone it.
            Err(TryLockError::WouldBlock) => return,
        };
        if let Some(primary) = held {
            primary.followers.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Runs `launch`, taken from this storage's slot, alone into a new buffer of its own.
    pub(crate) fn run_alone(&self, device: &GpuDevice, launch: Box<dyn Deferred>) -> Result<()> {
        let out = device.alloc_output("deferred launch", launch.len(), launch.dtype())?;
        launch.run(&out, None)?;
        self.fill(out)
    }

    /// Stores the buffer the storage's expression computed.
    pub(crate) fn fill(&self, buffer: PooledBuffer) -> Result<()> {
        self.buffer.set(buffer).map_err(|_| Error::Gpu {
            op: "fusion",
            kind: GpuErrorKind::Internal,
            message: "a fused expression ran twice".into(),
        })
    }
}

impl Drop for StorageData {
    fn drop(&mut self) {
        self.release_primary();
    }
}
