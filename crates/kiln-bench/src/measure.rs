//! Timing one case: warm-up, then repeated runs, each waited for before the clock stops.

use kiln::{Device, Result};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// How a run was timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Clock {
    /// GPU timestamp queries around the run's work.
    GpuTimestamps,
    /// The host clock, with the device synchronised before and after.
    WallClock,
    /// The host time the GPU device spent recording the run's work (its
    /// `host_launch_time`, which leaves out `queue.submit`, where a software adapter
    /// runs the work): the launch cost. The wall clock on the CPU backend.
    HostRecording,
}

/// Seconds per run over the timed repetitions.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Timing {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub reps: usize,
    pub clock: Clock,
}

const WARM_UP: usize = 2;
const MIN_REPS: usize = 5;
const MAX_REPS: usize = 30;

/// Times `run` on `device`: two warm-up runs (pipelines compile, pools fill), then as
/// many runs as fit in `budget`, between 5 and 30. GPU timestamps where the adapter has
/// them, unless the case asks for a host `clock`; the synchronised host clock otherwise.
/// Each run's output is held until its clock stops: a GPU op may defer its kernel until
/// its output is needed, and an output dropped unread never runs at all.
pub fn time<T>(
    device: &Device,
    clock: Option<Clock>,
    budget: Duration,
    run: &dyn Fn() -> Result<T>,
) -> Result<Timing> {
    let clock = match clock {
        Some(c) => c,
        None if device.as_gpu().is_some_and(|g| g.has_timestamps()) => Clock::GpuTimestamps,
        None => Clock::WallClock,
    };
    let once = || -> Result<f64> {
        match (clock, device.as_gpu()) {
            (Clock::GpuTimestamps, Some(g)) => {
                let (_output, elapsed) = g.gpu_time(run)?;
                Ok(elapsed.map_or(0.0, |d| d.as_secs_f64()))
            }
            (Clock::HostRecording, Some(g)) => {
                device.synchronize()?;
                let before = g.host_launch_time();
                let _output = run()?;
                device.synchronize()?;
                Ok((g.host_launch_time() - before).as_secs_f64())
            }
            _ => {
                device.synchronize()?;
                let start = Instant::now();
                let _output = run()?;
                device.synchronize()?;
                Ok(start.elapsed().as_secs_f64())
            }
        }
    };
    let mut first = 0.0;
    for _ in 0..WARM_UP {
        first = once()?;
    }
    let reps = ((budget.as_secs_f64() / first.max(1e-6)) as usize).clamp(MIN_REPS, MAX_REPS);
    let mut times = (0..reps).map(|_| once()).collect::<Result<Vec<f64>>>()?;
    times.sort_by(f64::total_cmp);
    Ok(Timing {
        median: times[reps / 2],
        min: times[0],
        max: times[reps - 1],
        reps,
        clock,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln::Tensor;

    /// A softmax defers its kernel on a GPU; every warm-up and timed run must launch it
    /// inside its own window, whatever the clock (once the bench timed nothing).
    #[test]
    fn every_run_launches_its_deferred_kernel_while_timed() {
        let device = match Device::gpu() {
            Ok(d) => d,
            Err(e) if std::env::var("KILN_SKIP_GPU_TESTS").as_deref() == Ok("1") => {
                eprintln!("KILN_SKIP_GPU_TESTS=1: skipping a GPU test ({e})");
                return;
            }
            Err(e) => panic!("GPU tests need an adapter: {e}"),
        };
        let gpu = device.as_gpu().expect("a GPU device");
        let values: Vec<f32> = (0..70 * 130).map(|i| (i % 17) as f32 / 4.0).collect();
        let x = Tensor::from_vec(values, [70, 130], &device).unwrap();
        for clock in [None, Some(Clock::WallClock), Some(Clock::HostRecording)] {
            let budget = Duration::from_millis(1);
            let (timing, profile) = gpu
                .profile(|| time(&device, clock, budget, &|| x.softmax(-1)))
                .unwrap();
            let runs = (WARM_UP + timing.reps) as u64;
            assert_eq!(
                profile.dispatches(),
                runs,
                "{clock:?}: one softmax kernel per run"
            );
            assert_eq!(gpu.pending_count(), 0, "{clock:?}: nothing left pending");
        }
    }
}
