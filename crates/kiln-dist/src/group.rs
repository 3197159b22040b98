//! The process group on MPI's world. One thread makes every MPI call, in the order the
//! training thread asks: the collectives stay in the same order on every rank, and a
//! gradient bucket's exchange goes on while the training thread computes the next.

use kiln::{Error, Result};
use kiln_nn::distributed::{Collective, PendingSum};
use mpi::collective::SystemOperation;
use mpi::traits::*;
use std::io::Write;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// What the MPI thread is asked to do.
enum Job {
    SumF32(Vec<f32>, Sender<Result<Vec<f32>>>),
    SumF64(Vec<f64>, Sender<Vec<f64>>),
    Broadcast(Vec<f64>, usize, Sender<Vec<f64>>),
    Gather(Vec<u64>, Sender<Vec<u64>>),
}

/// This process's place in the MPI job, and the thread that talks to the others.
pub struct MpiGroup {
    rank: usize,
    size: usize,
    local_rank: usize,
    local_size: usize,
    jobs: Mutex<Option<Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl MpiGroup {
    /// Starts MPI (once per process) and joins the job's world. Run outside `mpirun`,
    /// it is a group of one.
    pub fn init() -> Result<Arc<MpiGroup>> {
        let (jobs, inbox) = channel::<Job>();
        let (placed, place) = channel::<Result<[usize; 4]>>();
        let thread = std::thread::Builder::new()
            .name("kiln-mpi".into())
            .spawn(move || {
                let Some((universe, _)) = mpi::initialize_with_threading(mpi::Threading::Multiple)
                else {
                    let _ =
                        placed.send(Err(not_started("MPI was already started in this process")));
                    return;
                };
                let world = universe.world();
                let rank = world.rank();
                let node = world.split_shared(rank);
                let size = world.size() as usize;
                let local = [node.rank() as usize, node.size() as usize];
                let _ = placed.send(Ok([rank as usize, size, local[0], local[1]]));
                for job in inbox {
                    serve(&world, size, job);
                }
                // The universe is dropped here, on the thread that started MPI: MPI ends.
            })
            .map_err(|e| not_started(&format!("could not start the MPI thread: {e}")))?;
        let [rank, size, local_rank, local_size] = place
            .recv()
            .map_err(|_| not_started("the MPI thread ended while starting MPI"))??;
        Ok(Arc::new(MpiGroup {
            rank,
            size,
            local_rank,
            local_size,
            jobs: Mutex::new(Some(jobs)),
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// This process's rank among those on its machine: which of the machine's GPUs it
    /// drives (`kiln::Device::prefer_gpu`).
    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    /// How many ranks run on this machine.
    pub fn local_size(&self) -> usize {
        self.local_size
    }

    /// Prints `error`, naming this rank, and ends every rank of the job with exit code 1:
    /// the others would otherwise wait for this one forever.
    pub fn abort_with(&self, error: &Error) -> ! {
        let (rank, size) = (self.rank, self.size);
        let message = format!(
            "kiln: rank {rank} of {size}: {error}\nkiln: rank {rank} is ending every rank of the job\n"
        );
        // One write (eprintln! writes each piece on its own): a short write to a pipe is
        // never split, so Open MPI's abort banner cannot land inside the line naming
        // the rank, as it once did in CI.
        let _ = std::io::stderr().write_all(message.as_bytes());
        // MPI_THREAD_MULTIPLE lets any thread abort, even while the MPI thread waits in
        // an exchange.
        mpi::topology::SimpleCommunicator::world().abort(1)
    }

    fn ask<T>(&self, job: impl FnOnce(Sender<T>) -> Job) -> Result<std::sync::mpsc::Receiver<T>> {
        let (reply, answer) = channel();
        let jobs = self
            .jobs
            .lock()
            .map_err(|_| self.error("the group's lock was poisoned"))?;
        jobs.as_ref()
            .ok_or_else(|| self.error("the group has ended"))?
            .send(job(reply))
            .map_err(|_| self.error("the MPI thread has ended"))?;
        Ok(answer)
    }

    fn error(&self, reason: &str) -> Error {
        Error::Distributed {
            rank: self.rank,
            size: self.size,
            reason: reason.into(),
        }
    }

    fn wait<T>(&self, answer: std::sync::mpsc::Receiver<T>) -> Result<T> {
        answer
            .recv()
            .map_err(|_| self.error("the MPI thread ended during an exchange"))
    }
}

/// `Error::Distributed` before this process knows its rank.
fn not_started(reason: &str) -> Error {
    Error::Distributed {
        rank: 0,
        size: 0,
        reason: reason.into(),
    }
}

fn serve(world: &mpi::topology::SimpleCommunicator, size: usize, job: Job) {
    match job {
        Job::SumF32(data, reply) => {
            let mut sums = vec![0f32; data.len()];
            world.all_reduce_into(&data[..], &mut sums[..], SystemOperation::sum());
            let _ = reply.send(Ok(sums));
        }
        Job::SumF64(data, reply) => {
            let mut sums = vec![0f64; data.len()];
            world.all_reduce_into(&data[..], &mut sums[..], SystemOperation::sum());
            let _ = reply.send(sums);
        }
        Job::Broadcast(mut data, root, reply) => {
            world
                .process_at_rank(root as i32)
                .broadcast_into(&mut data[..]);
            let _ = reply.send(data);
        }
        Job::Gather(values, reply) => {
            let mut all = vec![0u64; values.len() * size];
            world.all_gather_into(&values[..], &mut all[..]);
            let _ = reply.send(all);
        }
    }
}

impl Collective for MpiGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn start_sum(&self, data: Vec<f32>) -> Result<PendingSum> {
        let answer = self.ask(|reply| Job::SumF32(data, reply))?;
        Ok(PendingSum::new(answer, self.rank, self.size))
    }

    fn sum_f64(&self, data: &mut [f64]) -> Result<()> {
        let answer = self.ask(|reply| Job::SumF64(data.to_vec(), reply))?;
        data.copy_from_slice(&self.wait(answer)?);
        Ok(())
    }

    fn broadcast_f64(&self, data: &mut [f64], root: usize) -> Result<()> {
        if root >= self.size {
            return Err(self.error(&format!("root {root} is not a rank of {}", self.size)));
        }
        let answer = self.ask(|reply| Job::Broadcast(data.to_vec(), root, reply))?;
        data.copy_from_slice(&self.wait(answer)?);
        Ok(())
    }

    fn all_gather_u64(&self, values: &[u64]) -> Result<Vec<u64>> {
        let answer = self.ask(|reply| Job::Gather(values.to_vec(), reply))?;
        self.wait(answer)
    }
}

impl MpiGroup {
    /// Ends MPI, once the exchanges asked for are done: every rank calls it at the end of
    /// a run that went well (dropping the last handle does too). The group takes no
    /// more work after it.
    pub fn finish(&self) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        if let Some(thread) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = thread.join();
        }
    }
}

impl Drop for MpiGroup {
    /// `finish`; but a rank that panicked ends the whole job instead: the others may be
    /// waiting for it.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "kiln: rank {} of {} panicked; ending every rank",
                self.rank, self.size
            );
            mpi::topology::SimpleCommunicator::world().abort(1);
        }
        self.finish();
    }
}
