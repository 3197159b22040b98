//! One GPU device shared by threads: each thread's work gives what it gives alone, and
//! no thread waits on another forever. Threads that train on one device (the
//! training-parity tests, data-parallel ranks on one machine) share its pending list and
//! each other's deferred launches: a thread running its column reductions joins the
//! others' into one launch, while another prunes the list of finished work. Those two
//! once deadlocked, each holding what the other waited for.

mod common;

use kiln::{Device, Rng, Tensor};
use std::sync::mpsc;
use std::time::Duration;

const THREADS: usize = 4;
/// Enough steps that, with the deadlock put back, every one of four runs here hung.
const STEPS: usize = 250;
/// Far longer than the work takes on a software adapter (3-4 s on two cores): a thread
/// still running then is waiting on a lock no one will release.
const DEADLINE: Duration = Duration::from_secs(120);

/// Two dense layers' loss and its gradients, on `device`: two bias gradients (column
/// reductions, deferred until read) and two weight gradients per step. The activation
/// is smooth: with a ReLU, a unit whose input lies within rounding of zero is on for
/// one device and off for the other (seed 1796397190097286530, step 175, on every
/// build), which is no difference between threads.
fn step(device: &Device, inputs: &[Tensor; 5]) -> Vec<Tensor> {
    let [x, w1, b1, w2, b2] = inputs
        .each_ref()
        .map(|t| t.to_device(device).unwrap().into_var().unwrap());
    let h = x.matmul(&w1).unwrap().add(&b1).unwrap().tanh().unwrap();
    let y = h.matmul(&w2).unwrap().add(&b2).unwrap();
    let loss = y.mul(&y).unwrap().mean_all().unwrap();
    let grads = loss.backward().unwrap();
    // The bias gradients first: reading one runs the pending column reductions together.
    [&b2, &b1, &w2, &w1]
        .iter()
        .map(|t| grads.get(t).expect("a gradient").clone())
        .collect()
}

fn inputs(rng: &mut Rng) -> [Tensor; 5] {
    [
        common::rand(&[37, 29], rng),
        common::rand(&[29, 13], rng),
        common::rand(&[13], rng),
        common::rand(&[13, 7], rng),
        common::rand(&[7], rng),
    ]
}

#[test]
fn threads_sharing_a_device_get_their_own_results_and_finish() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng();
    let (done, finished) = mpsc::channel();
    for t in 0..THREADS {
        let (gpu, done) = (gpu.clone(), done.clone());
        let cases: Vec<[Tensor; 5]> = (0..STEPS).map(|_| inputs(&mut rng)).collect();
        std::thread::spawn(move || {
            for (s, case) in cases.iter().enumerate() {
                let got = step(&gpu, case);
                let want = step(&Device::cpu(), case);
                for (name, (g, w)) in ["b2", "b1", "w2", "w1"].iter().zip(got.iter().zip(&want)) {
                    let label = format!("thread {t}, step {s}: gradient of {name}");
                    common::assert_close(&label, g, w, common::F32);
                }
            }
            done.send(t).unwrap();
        });
    }
    drop(done);
    for _ in 0..THREADS {
        match finished.recv_timeout(DEADLINE) {
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("threads sharing a GPU device did not finish in {DEADLINE:?}: a deadlock")
            }
            // A thread's assertion failed: its panic message is above.
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("a thread failed"),
        }
    }
}
