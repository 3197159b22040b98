//! Data-parallel training on MPI (kiln-dist). Each test launches this test binary under
//! `mpirun -np N`; the launched copies see `KILN_DIST_WORKER` naming the test and run
//! its worker, one per rank. A worker that fails panics, which ends the whole job, so
//! the launcher sees mpirun fail, with the output.

mod common;

use kiln::{DType, Device, Error, Result, Rng, Tensor};
use kiln_dist::MpiGroup;
use kiln_nn::data::{DataLoader, TensorDataset};
use kiln_nn::distributed::{Collective, DataParallel};
use kiln_nn::layers::{Activation, BatchNorm, Linear, Sequential};
use kiln_nn::optim::{Adam, Optimizer, Sgd};
use kiln_nn::train::{
    classification_step, fit, load_checkpoint, restore, FitConfig, History, RunState, StepOutput,
};
use kiln_nn::{Module, ModuleExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WORKER: &str = "KILN_DIST_WORKER";
/// Where the checkpoint test's ranks meet.
const SHARED_DIR: &str = "KILN_DIST_DIR";
/// Samples per rank per batch.
const BATCH: usize = 4;
/// Features and classes of the synthetic data.
const FEATURES: usize = 7;
const CLASSES: usize = 3;

/// What mpirun did: its exit status, everything the ranks printed, how long it took.
struct Launch {
    success: bool,
    output: String,
    seconds: f64,
}

/// Runs `test`'s worker on `ranks` processes, killing the job after `limit`.
fn launch(ranks: usize, test: &str, env: &[(&str, String)], limit: Duration) -> Launch {
    let version = Command::new("mpirun").arg("--version").output();
    let version = version.expect("mpirun runs (the README's test command installs Open MPI)");
    let mut command = Command::new("mpirun");
    if String::from_utf8_lossy(&version.stdout).contains("Open MPI") {
        // More ranks than cores on a CI machine, and CI runs as root.
        command.args(["--oversubscribe", "--allow-run-as-root"]);
    }
    command
        .args(["-np", &ranks.to_string()])
        .arg(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(WORKER, test)
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command.spawn().expect("mpirun starts");
    let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let read = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let (out, err) = (read(Box::new(out)), read(Box::new(err)));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = format!("{}{}", out.join().unwrap(), err.join().unwrap());
    let Some(status) = status else {
        panic!("{test} on {ranks} ranks ran past {limit:?} (a hang):\n{output}");
    };
    Launch {
        success: status.success(),
        output,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// Launches `test` on each number of ranks and expects every rank to succeed.
fn launch_ok(test: &str, ranks: &[usize], env: &[(&str, String)]) {
    for &n in ranks {
        let run = launch(n, test, env, Duration::from_secs(300));
        assert!(run.success, "{test} on {n} ranks failed:\n{}", run.output);
        eprintln!("{test} on {n} ranks passed in {:.1}s", run.seconds);
    }
}

fn is_worker(test: &str) -> bool {
    std::env::var(WORKER).as_deref() == Ok(test)
}

/// The devices every worker trains on: the CPU and the GPU (lavapipe in CI).
fn devices() -> Vec<Device> {
    let mut out = vec![Device::cpu()];
    out.extend(common::gpu());
    out
}

/// Seeded synthetic classification data, the same on every rank: `samples` rows.
fn data(samples: usize) -> TensorDataset {
    let mut rng = Rng::new(42);
    let cpu = Device::cpu();
    let x = Tensor::randn([samples, FEATURES], DType::F32, &cpu, &mut rng).unwrap();
    let y: Vec<i32> = (0..samples).map(|i| ((i * 7) % CLASSES) as i32).collect();
    TensorDataset::new(x, Tensor::from_vec(y, [samples], &cpu).unwrap()).unwrap()
}

fn model(hidden: usize, seed: u64, device: &Device) -> Sequential {
    let mut rng = Rng::new(seed);
    Sequential::new()
        .append(Linear::new(FEATURES, hidden, device, &mut rng).unwrap())
        .append(Activation::Tanh)
        .append(Linear::new(hidden, CLASSES, device, &mut rng).unwrap())
}

fn quiet(epochs: usize) -> FitConfig {
    FitConfig {
        epochs,
        verbose: false,
        ..FitConfig::default()
    }
}

/// `fit` of a classifier without validation, expected to succeed.
fn train(
    model: &dyn Module,
    opt: &mut dyn Optimizer,
    loader: &DataLoader,
    config: &FitConfig,
) -> History {
    fit(model, opt, None, loader, None, &classification_step, config).unwrap()
}

/// Returns once every rank has called it.
fn barrier(group: &MpiGroup) {
    group.sum_f64(&mut [0.0]).unwrap();
}

fn params(model: &dyn Module) -> Vec<(String, Vec<f64>)> {
    model
        .named_parameters()
        .into_iter()
        .map(|(n, p)| (n, p.to_f64_vec().unwrap()))
        .collect()
}

/// Largest difference between two models' parameters, relative to 1 + |value|.
fn largest_difference(a: &[(String, Vec<f64>)], b: &[(String, Vec<f64>)]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|((_, x), (_, y))| {
            x.iter()
                .zip(y)
                .map(|(p, q)| (p - q).abs() / (1.0 + q.abs()))
        })
        .fold(0.0, f64::max)
}

#[derive(Clone, Copy, Debug)]
enum Opt {
    SgdMomentum,
    Adam,
}

fn optimizer(which: Opt, model: &dyn Module) -> Box<dyn Optimizer> {
    match which {
        Opt::SgdMomentum => Box::new(
            Sgd::new(model.named_parameters(), 0.1)
                .with_momentum(0.9, false)
                .with_weight_decay(1e-3),
        ),
        Opt::Adam => Box::new(Adam::new(model.named_parameters(), 1e-2)),
    }
}

/// Two epochs on `ranks` ranks with batch BATCH each against one process with batch
/// ranks * BATCH over the same samples: the same parameters within f32 rounding (the
/// per-rank means are averaged, where one process sums in another order). Also with
/// every step's gradients clipped, which the ranks do after the average, to the norm of
/// the whole batch's gradients as one process does.
fn equivalence_worker() {
    let group = MpiGroup::init().unwrap();
    let (rank, size) = (group.rank(), group.size());
    let samples = size * BATCH * 5;
    let set = data(samples);
    for device in devices() {
        let default_buckets = kiln_nn::distributed::DEFAULT_BUCKET_BYTES;
        for (which, bucket_bytes, clip_grad_norm) in [
            (Opt::SgdMomentum, 0, None),
            (Opt::SgdMomentum, usize::MAX, None),
            (Opt::Adam, 0, None),
            (Opt::Adam, 300, None),
            (Opt::Adam, default_buckets, None),
            (Opt::SgdMomentum, default_buckets, Some(0.05)),
        ] {
            // Each rank starts from other weights: rank 0's must reach them all.
            let replica = model(16, 1 + rank as u64, &device);
            let mut opt = optimizer(which, &replica);
            let dp = DataParallel::new(group.clone()).with_bucket_bytes(bucket_bytes);
            let shard = DataLoader::new(&set, BATCH, &device)
                .unwrap()
                .shuffled(9)
                .sharded(rank, size)
                .unwrap();
            let config = FitConfig {
                data_parallel: Some(dp),
                clip_grad_norm,
                ..quiet(2)
            };
            let history = train(&replica, &mut *opt, &shard, &config);
            let single = model(16, 1, &device);
            let mut single_opt = optimizer(which, &single);
            let all = DataLoader::new(&set, BATCH * size, &device)
                .unwrap()
                .shuffled(9);
            let config = FitConfig {
                clip_grad_norm,
                ..quiet(2)
            };
            let reference = train(&single, &mut *single_opt, &all, &config);
            let label = format!(
                "rank {rank} of {size}, {device}, {which:?}, buckets of {bucket_bytes} bytes, \
                 clipped to {clip_grad_norm:?}"
            );
            let difference = largest_difference(&params(&replica), &params(&single));
            eprintln!("{label}: largest parameter difference {difference:.2e}");
            assert!(
                difference < 1e-6,
                "{label}: parameters differ by {difference}"
            );
            // The reported losses are the group's: the single process's, up to rounding.
            for (d, s) in history.epochs.iter().zip(&reference.epochs) {
                assert!(
                    (d.train_loss - s.train_loss).abs() < 1e-5,
                    "{label}: {d:?} against {s:?}"
                );
                assert_eq!(d.steps, s.steps, "{label}: steps");
            }
        }
    }
    group.finish();
}

#[test]
fn ranks_take_the_steps_of_one_process_with_their_batches_together() {
    if is_worker("ranks_take_the_steps_of_one_process_with_their_batches_together") {
        return equivalence_worker();
    }
    launch_ok(
        "ranks_take_the_steps_of_one_process_with_their_batches_together",
        &[2, 3],
        &[],
    );
}

/// Batch norm's running statistics come from each rank's own batches; at the end of an
/// epoch they are averaged, so every rank evaluates and saves the same model.
fn buffers_worker() {
    let group = MpiGroup::init().unwrap();
    let (rank, size) = (group.rank(), group.size());
    let set = data(size * BATCH * 6);
    for device in devices() {
        let mut rng = Rng::new(1);
        let replica = Sequential::new()
            .append(Linear::new(FEATURES, 8, &device, &mut rng).unwrap())
            .append(BatchNorm::new(8, &device).unwrap())
            .append(Linear::new(8, CLASSES, &device, &mut rng).unwrap());
        let mut opt = optimizer(Opt::SgdMomentum, &replica);
        let shard = DataLoader::new(&set, BATCH, &device)
            .unwrap()
            .shuffled(2)
            .sharded(rank, size)
            .unwrap();
        let config = FitConfig {
            data_parallel: Some(DataParallel::new(group.clone())),
            ..quiet(1)
        };
        train(&replica, &mut *opt, &shard, &config);
        let buffers = replica.named_buffers();
        assert_eq!(buffers.len(), 2);
        for (name, b) in buffers {
            let mine = b.to_f64_vec().unwrap();
            let mut mean = mine.clone();
            group.sum_f64(&mut mean).unwrap();
            mean.iter_mut().for_each(|m| *m /= size as f64);
            let spread = mine
                .iter()
                .zip(&mean)
                .map(|(a, m)| (a - m).abs())
                .fold(0.0, f64::max);
            assert!(
                spread < 1e-6,
                "rank {rank}, {device}: {name} differs from the ranks' mean by {spread}"
            );
        }
    }
    group.finish();
}

#[test]
fn batch_norm_statistics_are_the_same_on_every_rank() {
    let test = "batch_norm_statistics_are_the_same_on_every_rank";
    if is_worker(test) {
        return buffers_worker();
    }
    launch_ok(test, &[2], &[]);
}

/// Rank 1's step fails at its third batch; the worker does what `kiln train
/// --distributed` does with an error: `abort_with`.
fn failing_rank_worker() {
    let group = MpiGroup::init().unwrap();
    let (rank, size) = (group.rank(), group.size());
    let set = data(size * BATCH * 10);
    let device = Device::cpu();
    let replica = model(16, 1, &device);
    let mut opt = optimizer(Opt::Adam, &replica);
    let train = DataLoader::new(&set, BATCH, &device)
        .unwrap()
        .sharded(rank, size)
        .unwrap();
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let step = |m: &dyn Module, x: &Tensor, y: &Tensor| -> Result<StepOutput> {
        if rank == 1 && calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 2 {
            return Err(Error::InvalidArgument {
                op: "step",
                reason: "a batch this rank cannot read".into(),
            });
        }
        classification_step(m, x, y)
    };
    let config = FitConfig {
        data_parallel: Some(DataParallel::new(group.clone())),
        ..quiet(3)
    };
    match fit(&replica, &mut *opt, None, &train, None, &step, &config) {
        Ok(_) => panic!("rank {rank}: training went on past the failed rank"),
        Err(e) => group.abort_with(&e),
    }
}

#[test]
fn a_rank_that_fails_ends_every_rank() {
    let test = "a_rank_that_fails_ends_every_rank";
    if is_worker(test) {
        return failing_rank_worker();
    }
    for n in [2, 3] {
        let run = launch(n, test, &[], Duration::from_secs(60));
        assert!(!run.success, "the job succeeded:\n{}", run.output);
        assert!(
            run.output.contains(&format!(
                "rank 1 of {n}: step: a batch this rank cannot read"
            )),
            "the failed rank is not named:\n{}",
            run.output
        );
        eprintln!(
            "{n} ranks: the job ended {:.1}s after it started",
            run.seconds
        );
    }
}

/// Rank 1 builds a wider model, and on three ranks rank 2 forgets to shard its loader:
/// every rank gets the error naming them, and none waits for the others.
fn disagreement_worker() {
    let group = MpiGroup::init().unwrap();
    let (rank, size) = (group.rank(), group.size());
    let set = data(size * BATCH * 4);
    let device = Device::cpu();
    let replica = model(if rank == 1 { 17 } else { 16 }, 1, &device);
    let mut opt = optimizer(Opt::SgdMomentum, &replica);
    let loader = DataLoader::new(&set, BATCH, &device).unwrap();
    let train = match rank {
        2 => loader,
        _ => loader.sharded(rank, size).unwrap(),
    };
    let config = FitConfig {
        data_parallel: Some(DataParallel::new(group.clone())),
        ..quiet(1)
    };
    let e = fit(
        &replica,
        &mut *opt,
        None,
        &train,
        None,
        &classification_step,
        &config,
    )
    .unwrap_err();
    let text = e.to_string();
    assert!(
        matches!(e, Error::Distributed { rank: r, .. } if r == rank),
        "rank {rank}: {e}"
    );
    assert!(
        text.contains("rank 1's model (4 tensors) is not rank 0's"),
        "rank {rank}: {text}"
    );
    if size > 2 {
        assert!(
            text.contains(
                "rank 2's training and validation loaders are not DataLoader::sharded(2, 3)"
            ),
            "rank {rank}: {text}"
        );
    }
    eprintln!("rank {rank} stopped with: {text}");
    group.finish();
}

#[test]
fn ranks_that_disagree_all_stop_with_an_error_naming_the_rank() {
    let test = "ranks_that_disagree_all_stop_with_an_error_naming_the_rank";
    if is_worker(test) {
        return disagreement_worker();
    }
    launch_ok(test, &[2, 3], &[]);
}

/// One epoch on the ranks, then a second in one process resumed from the distributed
/// run's checkpoint; and the other way round. Both end where two epochs of one process
/// end.
fn checkpoint_worker() {
    let group = MpiGroup::init().unwrap();
    let (rank, size) = (group.rank(), group.size());
    let dir = std::path::PathBuf::from(std::env::var(SHARED_DIR).unwrap());
    let set = data(size * BATCH * 5);
    let device = Device::cpu();
    let dp = DataParallel::new(group.clone());
    let single_loader = DataLoader::new(&set, BATCH * size, &device)
        .unwrap()
        .shuffled(3);
    let rank_loader = || {
        DataLoader::new(&set, BATCH, &device)
            .unwrap()
            .shuffled(3)
            .sharded(rank, size)
            .unwrap()
    };
    let resume_into =
        |path: &std::path::Path, m: &dyn Module, opt: &mut dyn Optimizer| -> RunState {
            let checkpoint = load_checkpoint(path).unwrap();
            restore(&checkpoint, &m.state_dict()).unwrap();
            opt.load_state(&checkpoint.optimizer_state()).unwrap();
            RunState::from_metadata(&checkpoint.metadata).unwrap()
        };
    // Two epochs in one process: where both mixed runs must end.
    let reference = model(16, 1, &device);
    let mut opt = optimizer(Opt::Adam, &reference);
    train(&reference, &mut *opt, &single_loader, &quiet(2));

    // Distributed first epoch, single-process second.
    let first = dir.join("distributed-first");
    let second = dir.join("single-first");
    std::fs::create_dir_all(&first).unwrap();
    std::fs::create_dir_all(&second).unwrap();
    let m = model(16, 1, &device);
    let mut opt = optimizer(Opt::Adam, &m);
    let config = FitConfig {
        data_parallel: Some(dp.clone()),
        checkpoint_dir: Some(first.clone()),
        ..quiet(1)
    };
    train(&m, &mut *opt, &rank_loader(), &config);
    // Every rank waits here until rank 0 has written its files.
    barrier(&group);
    let written: Vec<_> = std::fs::read_dir(&first)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        written.len(),
        2,
        "rank {rank}: rank 0 writes last and best, and nothing else: {written:?}"
    );
    if rank == 0 {
        let m = model(16, 5, &device);
        let mut opt = optimizer(Opt::Adam, &m);
        let run = resume_into(&first.join("last.safetensors"), &m, &mut *opt);
        let config = FitConfig {
            resume: Some(run),
            ..quiet(2)
        };
        train(&m, &mut *opt, &single_loader, &config);
        let difference = largest_difference(&params(&m), &params(&reference));
        eprintln!("distributed epoch, then a single-process epoch: {difference:.2e} from two single-process epochs");
        assert!(difference < 1e-6, "distributed then single: {difference}");
    }

    // Single-process first epoch (rank 0 writes it), distributed second.
    if rank == 0 {
        let m = model(16, 1, &device);
        let mut opt = optimizer(Opt::Adam, &m);
        let config = FitConfig {
            checkpoint_dir: Some(second.clone()),
            ..quiet(1)
        };
        train(&m, &mut *opt, &single_loader, &config);
    }
    // The checkpoint exists before any rank reads it.
    barrier(&group);
    let m = model(16, 5, &device);
    let mut opt = optimizer(Opt::Adam, &m);
    let run = resume_into(&second.join("last.safetensors"), &m, &mut *opt);
    let config = FitConfig {
        data_parallel: Some(dp),
        resume: Some(run),
        ..quiet(2)
    };
    train(&m, &mut *opt, &rank_loader(), &config);
    let difference = largest_difference(&params(&m), &params(&reference));
    eprintln!("rank {rank}: a single-process epoch, then a distributed one: {difference:.2e}");
    assert!(difference < 1e-6, "single then distributed: {difference}");
    group.finish();
}

#[test]
fn checkpoints_resume_across_distributed_and_single_process_runs() {
    let test = "checkpoints_resume_across_distributed_and_single_process_runs";
    if is_worker(test) {
        return checkpoint_worker();
    }
    let dir = std::env::temp_dir().join(format!("kiln-dist-checkpoints-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    launch_ok(test, &[2], &[(SHARED_DIR, dir.display().to_string())]);
    std::fs::remove_dir_all(&dir).unwrap();
}
