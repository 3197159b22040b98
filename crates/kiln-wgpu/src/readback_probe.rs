//! Where a readback's time goes: `kiln bench` prints it beside the transfer cases, so
//! that a GPU run shows whether the copy to the host, the mapped memory's first touch
//! or the copy out of it is the cost.

use crate::device::GpuDevice;
use crate::readback::host_from_mapped;
use kiln_core::{DType, HostBuffer, Result};
use std::fmt;
use std::time::{Duration, Instant};

/// One readback of `bytes`, by phase (host clock).
#[derive(Clone, Debug)]
pub struct ReadbackPhases {
    /// Bytes read back.
    pub bytes: usize,
    /// From recording the copy into the staging buffer until its range is mapped.
    pub copy_and_map: Duration,
    /// Copying the mapped range into a vector already in memory, on one thread: the
    /// first read of this mapping.
    pub first_read: Duration,
    /// The same copy again: what is left once every page has been touched.
    pub second_read: Duration,
    /// What `to_vec` does: a new vector, filled on `threads` threads, in a new mapping
    /// (median of three).
    pub to_host: Duration,
    /// Threads `to_host` copied on.
    pub threads: usize,
    /// `to_host`'s copy on one thread, in a new mapping (median of three).
    pub to_host_one_thread: Duration,
}

impl fmt::Display for ReadbackPhases {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        write!(
            f,
            "readback phases {} MiB: copy+map {:.3} ms, first read {:.3} ms, second read {:.3} ms, \
             new vector on {} threads {:.3} ms, on 1 thread {:.3} ms",
            self.bytes >> 20,
            ms(self.copy_and_map),
            ms(self.first_read),
            ms(self.second_read),
            self.threads,
            ms(self.to_host),
            ms(self.to_host_one_thread),
        )
    }
}

impl GpuDevice {
    /// Times the phases of reading back a buffer of `bytes` (a multiple of 4), after one
    /// untimed read that sizes the staging buffer.
    pub fn readback_phases(&self, bytes: usize) -> Result<ReadbackPhases> {
        let op = "readback probe";
        let n = bytes / 4;
        let values: Vec<u8> = (0..n * 4).map(|i| (i % 251) as u8).collect();
        let buffer = self.upload_bytes(op, &values, n, DType::F32)?;
        let mut resident = values.clone();
        self.read_with(op, &buffer, n * 4, |_| ())?;

        let start = Instant::now();
        let (copy_and_map, first_read, second_read) =
            self.read_with(op, &buffer, n * 4, |mapped| {
                let mapped_at = start.elapsed();
                let t = Instant::now();
                resident.copy_from_slice(mapped);
                let first = t.elapsed();
                let t = Instant::now();
                resident.copy_from_slice(std::hint::black_box(mapped));
                (mapped_at, first, t.elapsed())
            })?;
        // The median of three, alternating, so that neither form always meets a vector
        // the other one's freed block already faulted in.
        let fill = |one_thread: bool| {
            self.read_with(op, &buffer, n * 4, |mapped| {
                let t = Instant::now();
                let host = match one_thread {
                    true => HostBuffer::from_bytes(DType::F32, mapped, n),
                    false => host_from_mapped(DType::F32, mapped, n),
                };
                std::hint::black_box(host);
                t.elapsed()
            })
        };
        let (mut many, mut one) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            many.push(fill(false)?);
            one.push(fill(true)?);
        }
        let median = |mut v: Vec<Duration>| {
            v.sort();
            v[v.len() / 2]
        };
        let (to_host, to_host_one_thread) = (median(many), median(one));
        Ok(ReadbackPhases {
            bytes: n * 4,
            copy_and_map,
            first_read,
            second_read,
            to_host,
            threads: crate::copy_pool::copy_threads(n * 4),
            to_host_one_thread,
        })
    }
}
