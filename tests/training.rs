//! Training outcomes on small slices of real data: models learn, early stopping and
//! ReduceLROnPlateau trigger, optimizers follow their published updates, a NaN loss
//! stops training naming the step, checkpoints round-trip bitwise.

use kiln::{Conv2dOptions, DType, Device, Error, Rng, Tensor};
use kiln_nn::data::{mnist10k, DataLoader, TensorDataset};
use kiln_nn::layers::{
    Activation, BatchNorm, Conv2d, ConvTranspose2d, Flatten, Linear, MaxPool2d, Sequential,
    Unflatten,
};
use kiln_nn::optim::{Adam, LrScheduler, Optimizer, ReduceLrOnPlateau, RmsProp, Sgd};
use kiln_nn::train::{
    classification_step, evaluate, fit, load_checkpoint, restore, save_checkpoint, train_step,
    training_state, EarlyStopping, FitConfig, StepOutput,
};
use kiln_nn::{Module, ModuleExt};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

fn mlp(device: &Device, rng: &mut Rng) -> Sequential {
    Sequential::new()
        .append(Flatten)
        .append(Linear::new(784, 64, device, rng).unwrap())
        .append(Activation::ReLU)
        .append(Linear::new(64, 10, device, rng).unwrap())
}

fn quiet(epochs: usize) -> FitConfig {
    FitConfig {
        epochs,
        early_stopping: None,
        verbose: false,
        max_seconds: None,
        divergence_factor: None,
        check_inputs: false,
        checkpoint_dir: None,
        resume: None,
        data_parallel: None,
        callbacks: Vec::new(),
        clip_grad_norm: None,
    }
}

/// The first `n` training and test digits of the bundled MNIST subset.
fn digits(n_train: usize, n_test: usize) -> (TensorDataset, TensorDataset) {
    let m = mnist10k().unwrap();
    let train = TensorDataset::new(m.train_images, m.train_labels)
        .unwrap()
        .take(n_train)
        .unwrap();
    let test = TensorDataset::new(m.test_images, m.test_labels)
        .unwrap()
        .take(n_test)
        .unwrap();
    (train, test)
}

#[test]
fn mlp_beats_90_percent_on_a_slice() {
    let cpu = Device::cpu();
    let (train, test) = digits(4000, 500);
    let mut rng = Rng::new(0);
    let model = Sequential::new()
        .append(Flatten)
        .append(Linear::new(784, 128, &cpu, &mut rng).unwrap())
        .append(Activation::ReLU)
        .append(Linear::new(128, 10, &cpu, &mut rng).unwrap());
    let mut opt = Adam::new(model.named_parameters(), 2e-3);
    let loader = DataLoader::new(&train, 32, &cpu).unwrap().shuffled(0);
    fit(
        &model,
        &mut opt,
        None,
        &loader,
        None,
        &classification_step,
        &quiet(6),
    )
    .unwrap();
    let (_, acc) = evaluate(
        &model,
        &DataLoader::new(&test, 250, &cpu).unwrap(),
        &classification_step,
    )
    .unwrap();
    assert!(acc.unwrap() > 0.90, "mlp accuracy {acc:?}");
}

#[test]
fn cnn_with_batchnorm_learns_on_the_gpu() {
    let device = Device::gpu().unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"));
    let mut rng = Rng::new(1);
    let model = Sequential::new()
        .append(Conv2d::new(1, 8, (5, 5), Default::default(), &device, &mut rng).unwrap())
        .append(BatchNorm::new(8, &device).unwrap())
        .append(Activation::ReLU)
        .append(MaxPool2d::new(4))
        .append(Flatten)
        .append(Linear::new(8 * 6 * 6, 10, &device, &mut rng).unwrap());
    let (train, _) = digits(256, 0);
    let loader = DataLoader::new(&train, 64, &device).unwrap().shuffled(1);
    let (before, _) = evaluate(&model, &loader, &classification_step).unwrap();
    let mut opt = Adam::new(model.named_parameters(), 1e-2);
    fit(
        &model,
        &mut opt,
        None,
        &loader,
        None,
        &classification_step,
        &quiet(3),
    )
    .unwrap();
    let (after, _) = evaluate(&model, &loader, &classification_step).unwrap();
    assert!(after < before * 0.5, "loss {before} -> {after}");
    // BatchNorm's running statistics moved and are saved with the model.
    let names: Vec<String> = model.state_dict().into_iter().map(|(n, _)| n).collect();
    assert!(
        names.contains(&"1.running_mean".to_string()) && names.contains(&"0.weight".to_string()),
        "{names:?}"
    );
}

/// Random labels: nothing generalises, so validation loss soon stops improving.
fn noise_task(device: &Device) -> (TensorDataset, TensorDataset) {
    let mut rng = Rng::new(5);
    let x = Tensor::randn([256, 20], DType::F32, device, &mut rng).unwrap();
    let y = Tensor::rand([256], DType::F32, device, &mut rng)
        .unwrap()
        .mul_scalar(4.0)
        .unwrap();
    let y = kiln::no_grad(|| y.to_dtype(DType::I32)).unwrap();
    TensorDataset::new(x, y).unwrap().split(0.5).unwrap()
}

#[test]
fn early_stopping_and_plateau_trigger_and_restore_the_best_weights() {
    let cpu = Device::cpu();
    let (train, val) = noise_task(&cpu);
    let model = Sequential::new()
        .append(Linear::new(20, 64, &cpu, &mut Rng::new(2)).unwrap())
        .append(Activation::ReLU)
        .append(Linear::new(64, 4, &cpu, &mut Rng::new(3)).unwrap());
    let mut opt = Adam::new(model.named_parameters(), 1e-2);
    let mut plateau = ReduceLrOnPlateau::new(0.5, 1);
    let early = EarlyStopping {
        patience: 3,
        min_delta: 0.0,
        restore_best: true,
    };
    let config = FitConfig {
        epochs: 50,
        early_stopping: Some(early),
        verbose: false,
        max_seconds: None,
        divergence_factor: None,
        check_inputs: false,
        checkpoint_dir: None,
        resume: None,
        data_parallel: None,
        callbacks: Vec::new(),
        clip_grad_norm: None,
    };
    let (tl, vl) = (
        DataLoader::new(&train, 32, &cpu).unwrap().shuffled(4),
        DataLoader::new(&val, 128, &cpu).unwrap(),
    );
    let history = fit(
        &model,
        &mut opt,
        Some(&mut plateau),
        &tl,
        Some(&vl),
        &classification_step,
        &config,
    )
    .unwrap();
    assert!(
        history.stopped_early && history.epochs.len() < 50,
        "ran {} epochs",
        history.epochs.len()
    );
    assert!(
        plateau.reductions >= 1 && opt.lr() < 1e-2,
        "lr {} after {} reductions",
        opt.lr(),
        plateau.reductions
    );
    // The restored weights give the best epoch's validation loss, not the last one's.
    let (restored, _) = evaluate(&model, &vl, &classification_step).unwrap();
    let best = history.epochs[history.best_epoch - 1].val_loss.unwrap();
    assert!(
        (restored - best).abs() < 1e-5,
        "restored {restored} vs best {best}"
    );
}

/// `fit` leaves the GPU alone between steps: the losses, right-prediction counts and
/// the parameters' finiteness of an epoch of 8 steps come back in three reads, at its end.
#[test]
fn fit_reads_losses_back_once_per_window_not_per_step() {
    let gpu = own_gpu();
    let (train, _) = digits(256, 0);
    let model = mlp(&gpu, &mut Rng::new(0));
    let mut opt = Sgd::new(model.named_parameters(), 0.1);
    let loader = DataLoader::new(&train, 32, &gpu).unwrap();
    let (history, profile) = gpu
        .profile(|| {
            fit(
                &model,
                &mut opt,
                None,
                &loader,
                None,
                &classification_step,
                &quiet(1),
            )
        })
        .unwrap();
    assert_eq!(history.epochs[0].steps, 8);
    assert!(history.epochs[0].train_loss.is_finite());
    assert_eq!(profile.readbacks, 3, "{profile:#?}");
}

/// Fits a fresh `mlp` with SGD at `lr` on the CPU, batches of 32: the run the checks
/// below poison in one way or another.
fn sgd_fit(
    train: &TensorDataset,
    val: Option<&TensorDataset>,
    lr: f64,
    step: &dyn Fn(&dyn Module, &Tensor, &Tensor) -> kiln::Result<StepOutput>,
    config: &FitConfig,
) -> kiln::Result<kiln_nn::train::History> {
    let cpu = Device::cpu();
    let model = mlp(&cpu, &mut Rng::new(0));
    let mut opt = Sgd::new(model.named_parameters(), lr);
    let loader = DataLoader::new(train, 32, &cpu)?;
    let val = val.map(|v| DataLoader::new(v, 32, &cpu)).transpose()?;
    fit(&model, &mut opt, None, &loader, val.as_ref(), step, config)
}

/// `data` with element `index` of its inputs (flat) set to `value`.
fn with_value(data: &TensorDataset, index: usize, value: f32) -> TensorDataset {
    let mut x = data.inputs.to_vec::<f32>().unwrap();
    x[index] = value;
    let x = Tensor::from_vec(x, data.inputs.dims().to_vec(), &Device::cpu()).unwrap();
    TensorDataset::new(x, data.targets.clone()).unwrap()
}

/// Training data or validation data that makes the model compute NaN stops training
/// with an error, where it used to train on (relu turned the NaN into 0) or read as
/// "no improvement".
#[test]
fn nan_in_the_data_stops_training() {
    let (train, _) = digits(64, 0);
    let nan = with_value(&train, 100, f32::NAN);
    let e = sgd_fit(&nan, None, 0.1, &classification_step, &quiet(1)).unwrap_err();
    assert!(
        matches!(
            e,
            Error::NonFiniteLoss {
                epoch: 1,
                step: 1,
                ..
            }
        ),
        "{e}"
    );
    let e = sgd_fit(&train, Some(&nan), 0.1, &classification_step, &quiet(1)).unwrap_err();
    assert!(
        matches!(e, Error::NonFiniteValidationLoss { epoch: 1, .. }),
        "{e}"
    );
}

/// A learning rate far too large makes the loss enormous but finite: the divergence
/// guard stops training and says so, where training used to finish and report it.
#[test]
fn the_divergence_guard_stops_a_run_whose_loss_explodes() {
    let (train, _) = digits(512, 0);
    let config = FitConfig {
        divergence_factor: Some(100.0),
        ..quiet(1)
    };
    let e = sgd_fit(&train, None, 1e3, &classification_step, &config).unwrap_err();
    assert!(matches!(e, Error::Diverged { epoch: 1, .. }), "{e}");
    assert!(e.to_string().contains("smaller learning rate"), "{e}");
}

/// A parameter that stops being finite is named, even when no loss showed it yet; with
/// `check_inputs`, the first non-finite input element is named before it is used.
#[test]
fn non_finite_parameters_and_inputs_are_named() {
    let (train, _) = digits(256, 0);
    let calls = AtomicUsize::new(0);
    // After the forward of the epoch's last step: its loss is finite, the weights not.
    let poisons = |m: &dyn Module, x: &Tensor, y: &Tensor| -> kiln::Result<StepOutput> {
        let out = classification_step(m, x, y)?;
        if calls.fetch_add(1, Ordering::Relaxed) == 7 {
            let (_, bias) = &m.named_parameters()[3];
            kiln::no_grad(|| bias.set_data(&bias.full_like(f64::INFINITY)?))?;
        }
        Ok(out)
    };
    let e = sgd_fit(&train, None, 0.01, &poisons, &quiet(1)).unwrap_err();
    assert!(
        matches!(&e, Error::ParameterNotFinite { epoch: 1, step: 8, name } if name == "3.bias"),
        "{e}"
    );
    // The 9th sample of the second batch.
    let inf = with_value(&train, 784 * 40 + 5, f32::INFINITY);
    let config = FitConfig {
        check_inputs: true,
        ..quiet(1)
    };
    let e = sgd_fit(&inf, None, 0.01, &classification_step, &config).unwrap_err();
    assert!(
        matches!(e, Error::NonFiniteInput { epoch: 1, step: 2, index, .. } if index == 784 * 8 + 5),
        "{e}"
    );
}

/// `fit` writes `last.safetensors` every epoch and `best.safetensors` on improvement; a
/// run resumed from `last.safetensors` continues the epoch count, the schedule and the
/// shuffling, and ends bit for bit where an uninterrupted run ends. A run that fails
/// keeps the checkpoints of its finished epochs.
#[test]
fn a_resumed_run_ends_where_an_uninterrupted_one_does() {
    let cpu = Device::cpu();
    let (train, _) = digits(192, 0);
    let dir = std::env::temp_dir().join(format!("kiln-resume-{}", std::process::id()));
    let run = |epochs: usize, sub: &str, resume: bool| -> (Vec<f32>, kiln::Result<()>) {
        let dir = dir.join(sub);
        std::fs::create_dir_all(&dir).unwrap();
        let model = mlp(&cpu, &mut Rng::new(0));
        let mut opt = Adam::new(model.named_parameters(), 2e-3);
        let mut schedule = kiln_nn::optim::CosineAnnealing::new(3, 1e-4);
        let state = if resume {
            let last = load_checkpoint(dir.join("last.safetensors")).unwrap();
            restore(&last, &model.state_dict()).unwrap();
            opt.load_state(&last.optimizer_state()).unwrap();
            Some(kiln_nn::train::RunState::from_metadata(&last.metadata).unwrap())
        } else {
            None
        };
        let loader = DataLoader::new(&train, 32, &cpu).unwrap().shuffled(7);
        let config = FitConfig {
            checkpoint_dir: Some(dir.clone()),
            resume: state,
            ..quiet(epochs)
        };
        let fitted = fit(
            &model,
            &mut opt,
            Some(&mut schedule),
            &loader,
            None,
            &classification_step,
            &config,
        );
        let weights = model.named_parameters()[0].1.to_vec::<f32>().unwrap();
        (weights, fitted.map(drop))
    };
    let (straight, ok) = run(3, "straight", false);
    ok.unwrap();
    let (_, ok) = run(2, "resumed", false);
    ok.unwrap();
    let last = load_checkpoint(dir.join("resumed/last.safetensors")).unwrap();
    assert_eq!(last.metadata["run.epochs_done"], "2");
    assert!(dir.join("resumed/best.safetensors").exists());
    let (resumed, ok) = run(3, "resumed", true);
    ok.unwrap();
    assert_eq!(
        resumed, straight,
        "a resumed run ends where an uninterrupted one does"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A run that fails in its second epoch keeps the checkpoint of its first.
#[test]
fn a_failed_run_keeps_its_finished_epochs() {
    let (train, _) = digits(192, 0); // 6 steps an epoch
    let dir = std::env::temp_dir().join(format!("kiln-interrupted-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let calls = AtomicUsize::new(0);
    let fails_in_epoch_2 = |m: &dyn Module, x: &Tensor, y: &Tensor| -> kiln::Result<StepOutput> {
        let mut out = classification_step(m, x, y)?;
        if calls.fetch_add(1, Ordering::Relaxed) == 8 {
            out.loss = out.loss.mul_scalar(f64::NAN)?;
        }
        Ok(out)
    };
    let config = FitConfig {
        checkpoint_dir: Some(dir.clone()),
        ..quiet(3)
    };
    let e = sgd_fit(&train, None, 0.1, &fails_in_epoch_2, &config).unwrap_err();
    assert!(
        matches!(
            e,
            Error::NonFiniteLoss {
                epoch: 2,
                step: 3,
                ..
            }
        ),
        "{e}"
    );
    let last = load_checkpoint(dir.join("last.safetensors")).unwrap();
    assert_eq!(last.metadata["run.epochs_done"], "1");
    let weights = &last.tensors["1.weight"];
    assert!(weights
        .to_vec::<f32>()
        .unwrap()
        .iter()
        .all(|v| v.is_finite()));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An empty dataset is an error, not an epoch with loss 0.
#[test]
fn empty_data_is_an_error() {
    let (train, _) = digits(64, 0);
    let empty = train.take(0).unwrap();
    let e = sgd_fit(&empty, None, 0.1, &classification_step, &quiet(1)).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { op: "fit", .. }), "{e}");
    let model = mlp(&Device::cpu(), &mut Rng::new(0));
    let loader = DataLoader::new(&empty, 32, &Device::cpu()).unwrap();
    let e = evaluate(&model, &loader, &classification_step).unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument { op: "evaluate", .. }),
        "{e}"
    );
}

#[test]
fn a_non_finite_loss_stops_training_naming_the_step() {
    let cpu = Device::cpu();
    let (train, _) = digits(256, 0);
    let model = mlp(&cpu, &mut Rng::new(0));
    let mut opt = Sgd::new(model.named_parameters(), 0.1);
    let calls = AtomicUsize::new(0);
    let poisoned = |m: &dyn Module, x: &Tensor, y: &Tensor| -> kiln::Result<StepOutput> {
        let mut out = classification_step(m, x, y)?;
        if calls.fetch_add(1, Ordering::Relaxed) == 2 {
            out.loss = out.loss.mul_scalar(f64::NAN)?;
        }
        Ok(out)
    };
    let loader = DataLoader::new(&train, 32, &cpu).unwrap();
    let e = fit(&model, &mut opt, None, &loader, None, &poisoned, &quiet(2)).unwrap_err();
    assert!(
        matches!(
            e,
            Error::NonFiniteLoss {
                epoch: 1,
                step: 3,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn optimizers_follow_their_published_updates() {
    let cpu = Device::cpu();
    let p = Tensor::from_vec(vec![1.0f32, -2.0], [2], &cpu)
        .unwrap()
        .into_var()
        .unwrap();
    let grads_of = |p: &Tensor| p.square().unwrap().sum_all().unwrap().backward().unwrap(); // g = 2p
                                                                                            // SGD with momentum 0.9: v1 = g1, p1 = p0 - lr v1; v2 = 0.9 v1 + g2.
    let mut sgd = Sgd::new(vec![("p".into(), p.clone())], 0.1).with_momentum(0.9, false);
    sgd.step(&grads_of(&p)).unwrap();
    assert_eq!(p.to_vec::<f32>().unwrap(), vec![0.8, -1.6]);
    sgd.step(&grads_of(&p)).unwrap(); // v2 = 0.9*[2,-4] + [1.6,-3.2] = [3.4,-6.8]
    let got = p.to_vec::<f32>().unwrap();
    assert!(
        (got[0] - (0.8 - 0.34)).abs() < 1e-6 && (got[1] - (-1.6 + 0.68)).abs() < 1e-6,
        "{got:?}"
    );
    // Adam's first step moves each parameter by lr * g / (|g| + eps) = lr * sign(g).
    let q = Tensor::from_vec(vec![3.0f32, -1.0], [2], &cpu)
        .unwrap()
        .into_var()
        .unwrap();
    let mut adam = Adam::new(vec![("q".into(), q.clone())], 0.01);
    adam.step(&grads_of(&q)).unwrap();
    let got = q.to_vec::<f32>().unwrap();
    assert!(
        (got[0] - 2.99).abs() < 1e-6 && (got[1] + 0.99).abs() < 1e-6,
        "{got:?}"
    );
    // AdamW decays the weight itself: p * (1 - lr * wd) before the Adam step.
    let r = Tensor::from_vec(vec![1.0f32], [1], &cpu)
        .unwrap()
        .into_var()
        .unwrap();
    let mut adamw = Adam::adamw(vec![("r".into(), r.clone())], 0.1).with_weight_decay(0.5);
    adamw.step(&grads_of(&r)).unwrap();
    assert!((r.to_vec::<f32>().unwrap()[0] - (1.0 * 0.95 - 0.1)).abs() < 1e-6);
}

#[test]
fn plateau_schedule_reduces_after_patience() {
    let cpu = Device::cpu();
    let p = Tensor::zeros([1], DType::F32, &cpu)
        .unwrap()
        .into_var()
        .unwrap();
    let mut opt = Sgd::new(vec![("p".into(), p)], 1.0);
    let mut plateau = ReduceLrOnPlateau::new(0.1, 2);
    for metric in [1.0, 0.5, 0.5, 0.5] {
        plateau.step(&mut opt, Some(metric));
    }
    assert!(
        (opt.lr() - 1.0).abs() < 1e-12,
        "two bad steps are within patience"
    );
    plateau.step(&mut opt, Some(0.5));
    assert!((opt.lr() - 0.1).abs() < 1e-12, "the third bad step reduces");
}

#[test]
fn checkpoints_round_trip_bitwise_with_optimizer_state() {
    let cpu = Device::cpu();
    let (train, _) = digits(128, 0);
    let model = mlp(&cpu, &mut Rng::new(7));
    let mut opt = Adam::new(model.named_parameters(), 1e-3);
    fit(
        &model,
        &mut opt,
        None,
        &DataLoader::new(&train, 32, &cpu).unwrap(),
        None,
        &classification_step,
        &quiet(1),
    )
    .unwrap();
    let state = training_state(&model, &opt);
    let dir = std::env::temp_dir().join(format!("kiln-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    save_checkpoint(
        &path,
        &state,
        &HashMap::from([("epoch".to_string(), "1".to_string())]),
    )
    .unwrap();

    let loaded = load_checkpoint(&path).unwrap();
    assert_eq!(loaded.metadata.get("epoch").map(String::as_str), Some("1"));
    let fresh = mlp(&cpu, &mut Rng::new(99));
    restore(&loaded, &fresh.state_dict()).unwrap();
    for ((name, a), (_, b)) in model.state_dict().iter().zip(fresh.state_dict().iter()) {
        let bits = |t: &Tensor| {
            t.to_vec::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(a), bits(b), "{name} differs after the round trip");
    }
    // The optimizer resumes with the same moments and step count.
    let mut resumed = Adam::new(fresh.named_parameters(), 1e-3);
    resumed.load_state(&loaded.optimizer_state()).unwrap();
    let names = |s: Vec<(String, Tensor)>| s.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
    assert_eq!(names(resumed.state()), names(opt.state()));
    std::fs::remove_dir_all(&dir).ok();
}

/// `train_step` (as `fit` takes it) with `clip_grad_norm`: an SGD step at learning rate
/// 1 moves the parameters by the clipped gradients, whose joint norm is the maximum, on
/// the CPU and on a GPU. There the clipped step reads nothing back and launches two or
/// three kernels more than a step without clipping (the gradients put end to end, the
/// sum of their squares in one or two passes, the coefficient the last one's epilogue),
/// with no more submissions.
#[test]
fn a_clipped_training_step_moves_the_parameters_by_the_maximum_norm() {
    let (train, _) = digits(64, 1);
    let max_norm = 0.01;
    // Launches counted as fusion runs them, whatever `KILN_FUSION` says.
    let gpu = own_gpu();
    gpu.as_gpu().unwrap().set_fusion(true);
    for device in [Device::cpu(), gpu] {
        let model = mlp(&device, &mut Rng::new(5));
        let values = |m: &Sequential| -> Vec<Vec<f32>> {
            m.parameters().iter().map(|p| p.to_vec().unwrap()).collect()
        };
        let mut opt = Sgd::new(model.named_parameters(), 1.0);
        let loader = DataLoader::new(&train, 64, &device).unwrap();
        let (x, y) = loader.epoch(0).next().unwrap().unwrap();
        let mut step = |clip| {
            let mut run = || train_step(&model, &mut opt, &classification_step, &x, &y, clip);
            match device.as_gpu() {
                Some(_) => device.profile(run).unwrap().1,
                None => {
                    run().unwrap();
                    kiln::Profile::default()
                }
            }
        };
        let plain = step(None);
        let before = values(&model);
        let clipped = step(Some(max_norm));
        if device.is_gpu() {
            assert_eq!(clipped.readbacks, 0, "{:?}", clipped.kernels);
            let more = clipped.dispatches() - plain.dispatches();
            assert!((2..=3).contains(&more), "{more} more: {clipped:#?}");
            assert_eq!(clipped.submissions, plain.submissions, "{clipped:#?}");
        }
        let moved = values(&model)
            .iter()
            .flatten()
            .zip(before.iter().flatten())
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(
            (moved - max_norm).abs() < 1e-3 * max_norm,
            "{device}: moved {moved}"
        );
    }
}

#[test]
fn clipping_and_schedules_follow_their_definitions() {
    use kiln_nn::optim::{clip_grad_norm, CosineAnnealing, LinearWarmup, StepLr};
    let cpu = Device::cpu();
    // Gradients (3, 4) have norm 5; clipping to 1 scales them by 1/5.
    let p = Tensor::from_vec(vec![1.5f32, 2.0], [2], &cpu)
        .unwrap()
        .into_var()
        .unwrap();
    let mut grads = p.square().unwrap().sum_all().unwrap().backward().unwrap(); // 2p = [3, 4]
    let norm = clip_grad_norm(&mut grads, std::slice::from_ref(&p), 1.0).unwrap();
    assert_eq!(norm.item::<f32>().unwrap(), 5.0);
    let g = grads.get(&p).unwrap().to_vec::<f32>().unwrap();
    assert!(
        (g[0] - 0.6).abs() < 1e-5 && (g[1] - 0.8).abs() < 1e-5,
        "{g:?}"
    );

    // Within the norm, the gradients are multiplied by 1 (unchanged); a max_norm below
    // 0 or NaN is refused, the gradients untouched.
    let unclipped = clip_grad_norm(&mut grads, std::slice::from_ref(&p), 2.0).unwrap();
    assert!((unclipped.item::<f32>().unwrap() - 1.0).abs() < 1e-6);
    assert_eq!(grads.get(&p).unwrap().to_vec::<f32>().unwrap(), g);
    for bad in [-1.0, f64::NAN] {
        let e = clip_grad_norm(&mut grads, std::slice::from_ref(&p), bad).unwrap_err();
        assert!(e.to_string().contains("max_norm must be at least 0"), "{e}");
        assert_eq!(grads.get(&p).unwrap().to_vec::<f32>().unwrap(), g);
    }
    // A NaN in a gradient makes every gradient NaN, as in PyTorch.
    let q = Tensor::zeros([2], DType::F32, &cpu).unwrap();
    let mut with_nan = kiln::Gradients::default();
    with_nan.insert(
        &p,
        Tensor::from_vec(vec![f32::NAN, 1.0], [2], &cpu).unwrap(),
    );
    with_nan.insert(&q, Tensor::from_vec(vec![1.0f32, 2.0], [2], &cpu).unwrap());
    let norm = clip_grad_norm(&mut with_nan, &[p.clone(), q.clone()], 1.0).unwrap();
    assert!(norm.item::<f32>().unwrap().is_nan());
    let q_grad = with_nan.get(&q).unwrap().to_vec::<f32>().unwrap();
    assert!(q_grad.iter().all(|v| v.is_nan()), "{q_grad:?}");

    // Several gradients on a GPU: the same norm and clipped values as on the CPU, with
    // nothing read back until the norm is.
    let gpu = own_gpu();
    let rng = Rng::new(13);
    let shapes: [&[usize]; 4] = [&[3, 5], &[7], &[0], &[2, 2, 2]];
    // Parameters of `shapes` at zero and random gradients for them.
    let start = |device: &Device| -> (Vec<Tensor>, kiln::Gradients) {
        let mut rng = rng.clone();
        let params: Vec<Tensor> = shapes
            .iter()
            .map(|&s| Tensor::zeros(s, DType::F32, device).unwrap())
            .collect();
        let mut grads = kiln::Gradients::default();
        for p in &params {
            let g = Tensor::randn(p.dims(), DType::F32, &Device::cpu(), &mut rng).unwrap();
            grads.insert(p, g.to_device(device).unwrap());
        }
        (params, grads)
    };
    let norms: Vec<(f64, Vec<Vec<f32>>)> = [Device::cpu(), gpu.clone()]
        .iter()
        .map(|device| {
            let (params, mut grads) = start(device);
            let (norm, profile) = match device.as_gpu() {
                Some(_) => device
                    .profile(|| clip_grad_norm(&mut grads, &params, 0.5))
                    .unwrap(),
                None => (
                    clip_grad_norm(&mut grads, &params, 0.5).unwrap(),
                    Default::default(),
                ),
            };
            if device.is_gpu() {
                assert_eq!(profile.readbacks, 0, "{:?}", profile.kernels);
                assert!(norm.device().is_gpu());
            }
            let norm = norm.item::<f32>().unwrap() as f64;
            let clipped = params
                .iter()
                .map(|p| grads.get(p).unwrap().to_vec().unwrap());
            (norm, clipped.collect())
        })
        .collect();
    let ((cpu_norm, cpu_grads), (gpu_norm, gpu_grads)) = (&norms[0], &norms[1]);
    assert!(
        (cpu_norm - gpu_norm).abs() <= 1e-5 * cpu_norm,
        "{cpu_norm} {gpu_norm}"
    );
    assert!(*cpu_norm > 0.5, "the gradients are clipped: {cpu_norm}");
    for (a, b) in cpu_grads.iter().flatten().zip(gpu_grads.iter().flatten()) {
        assert!((a - b).abs() <= 1e-6 + 1e-5 * a.abs(), "{a} {b}");
    }
    // An Adam step on the clipped gradients, which are then let go: on a GPU with
    // fusion on the optimizer's launches read them unscaled and multiply them by the
    // coefficient on the device, so no kernel writes the clipped copies, and nothing is
    // read back.
    gpu.as_gpu().unwrap().set_fusion(true);
    let stepped: Vec<Vec<Vec<f32>>> = [Device::cpu(), gpu.clone()]
        .iter()
        .map(|device| {
            let (params, mut grads) = start(device);
            let named = params.iter().enumerate();
            let mut adam = Adam::new(
                named.map(|(i, p)| (i.to_string(), p.clone())).collect(),
                0.1,
            );
            let mut clip_and_step = || -> kiln::Result<()> {
                clip_grad_norm(&mut grads, &params, 0.5)?;
                adam.step(&std::mem::take(&mut grads))
            };
            match device.as_gpu() {
                Some(_) => {
                    let ((), profile) = device.profile(clip_and_step).unwrap();
                    let scaled = profile.kernels.iter().filter(|k| k.name.contains("mul"));
                    assert_eq!(scaled.count(), 0, "{:?}", profile.kernels);
                    assert_eq!(profile.readbacks, 0, "{:?}", profile.kernels);
                }
                None => clip_and_step().unwrap(),
            }
            params.iter().map(|p| p.to_vec().unwrap()).collect()
        })
        .collect();
    assert_keeps_to_the_cpu("parameter", &stepped[1], &stepped[0]);

    let mut opt = Sgd::new(vec![("p".into(), p)], 1.0);
    let mut step = StepLr::new(2, 0.5);
    let lrs: Vec<f64> = (0..4)
        .map(|_| {
            step.step(&mut opt, None);
            opt.lr()
        })
        .collect();
    assert_eq!(lrs, vec![1.0, 0.5, 0.5, 0.25]);
    opt.set_lr(1.0);
    let mut cosine = CosineAnnealing::new(4, 0.0);
    let lrs: Vec<f64> = (0..4)
        .map(|_| {
            cosine.step(&mut opt, None);
            opt.lr()
        })
        .collect();
    let expected: Vec<f64> = (1..=4)
        .map(|t| 0.5 * (1.0 + (std::f64::consts::PI * t as f64 / 4.0).cos()))
        .collect();
    assert!(
        lrs.iter()
            .zip(&expected)
            .all(|(a, b)| (a - b).abs() < 1e-12),
        "{lrs:?}"
    );
    opt.set_lr(0.8);
    let mut warmup = LinearWarmup::new(4);
    let lrs: Vec<f64> = (0..5)
        .map(|_| {
            warmup.step(&mut opt, None);
            opt.lr()
        })
        .collect();
    assert_eq!(lrs, vec![0.2, 0.4, 0.6000000000000001, 0.8, 0.8]);
}

/// `frozen` runs a pass through a module whose parameters then take no gradient (the
/// input still gets its own, through them, as when they train) and leaves them
/// trainable after, also when the pass fails; a parameter frozen before stays so.
#[test]
fn a_frozen_module_passes_gradients_through_and_takes_none() {
    let cpu = Device::cpu();
    let mut rng = Rng::new(3);
    let layer = Linear::new(4, 3, &cpu, &mut rng).unwrap();
    let x = Tensor::randn([2, 4], DType::F32, &cpu, &mut rng)
        .unwrap()
        .into_var()
        .unwrap();
    let pass = || layer.forward(&x)?.square()?.sum_all();
    let trained = pass().unwrap().backward().unwrap();
    let frozen = layer.frozen(pass).unwrap().backward().unwrap();
    let params = layer.parameters();
    assert_eq!(params.len(), 2);
    for p in &params {
        assert!(trained.get(p).is_some());
        assert!(
            frozen.get(p).is_none(),
            "a frozen parameter took a gradient"
        );
        assert!(p.is_leaf_var(), "a parameter stayed frozen");
    }
    assert_eq!(
        frozen.get(&x).unwrap().to_vec::<f32>().unwrap(),
        trained.get(&x).unwrap().to_vec::<f32>().unwrap()
    );
    let failed = layer.frozen(|| -> kiln::Result<()> {
        assert!(params.iter().all(|p| !p.requires_grad()));
        Err(Error::InvalidArgument {
            op: "test",
            reason: "the pass fails".into(),
        })
    });
    assert!(failed.is_err());
    assert!(params.iter().all(Tensor::is_leaf_var));
    params[1].set_requires_grad(false).unwrap();
    layer.frozen(|| Ok(())).unwrap();
    assert!(params[0].is_leaf_var() && !params[1].requires_grad());
}

#[test]
fn gan_generator_moves_towards_the_data() {
    use kiln_nn::loss::binary_cross_entropy_with_logits;
    let cpu = Device::cpu();
    let mut rng = Rng::new(8);
    // The shape of `kiln train gan`'s DCGAN, narrower: 7x7 maps up to 28x28 and back.
    let (k4, s2) = (
        (4, 4),
        Conv2dOptions {
            stride: (2, 2),
            padding: (1, 1),
            ..Default::default()
        },
    );
    let g = Sequential::new()
        .append(Linear::new(16, 16 * 7 * 7, &cpu, &mut rng).unwrap())
        .append(Unflatten::new(&[16, 7, 7]))
        .append(BatchNorm::new(16, &cpu).unwrap())
        .append(Activation::ReLU)
        .append(ConvTranspose2d::new(16, 8, k4, s2, &cpu, &mut rng).unwrap())
        .append(BatchNorm::new(8, &cpu).unwrap())
        .append(Activation::ReLU)
        .append(ConvTranspose2d::new(8, 1, k4, s2, &cpu, &mut rng).unwrap())
        .append(Activation::Tanh);
    let d = Sequential::new()
        .append(Conv2d::new(1, 8, k4, s2, &cpu, &mut rng).unwrap())
        .append(Activation::LeakyReLU(0.2))
        .append(Conv2d::new(8, 16, k4, s2, &cpu, &mut rng).unwrap())
        .append(Activation::LeakyReLU(0.2))
        .append(Flatten)
        .append(Linear::new(16 * 7 * 7, 1, &cpu, &mut rng).unwrap());
    let (train, _) = digits(1024, 0);
    let real = TensorDataset::new(
        train
            .inputs
            .mul_scalar(2.0)
            .unwrap()
            .add_scalar(-1.0)
            .unwrap(),
        train.targets,
    )
    .unwrap();
    let data_mean = real.inputs.mean_all().unwrap().item::<f32>().unwrap();
    let sample_mean = |rng: &mut Rng| {
        kiln::no_grad(|| {
            g.forward(&Tensor::randn([256, 16], DType::F32, &cpu, rng)?)?
                .mean_all()?
                .item::<f32>()
        })
        .unwrap()
    };
    let before = (sample_mean(&mut rng) - data_mean).abs();
    let (mut opt_g, mut opt_d) = (
        Adam::new(g.named_parameters(), 1e-3).with_betas((0.5, 0.999)),
        Adam::new(d.named_parameters(), 1e-3).with_betas((0.5, 0.999)),
    );
    let loader = DataLoader::new(&real, 64, &cpu).unwrap().shuffled(8);
    for epoch in 0..8 {
        for batch in loader.epoch(epoch) {
            let (x, _) = batch.unwrap();
            let n = x.dims()[0];
            let (ones, zeros) = (
                Tensor::ones([n, 1], DType::F32, &cpu).unwrap(),
                Tensor::zeros([n, 1], DType::F32, &cpu).unwrap(),
            );
            let fake = g
                .forward(&Tensor::randn([n, 16], DType::F32, &cpu, &mut rng).unwrap())
                .unwrap()
                .detach();
            let loss_d = binary_cross_entropy_with_logits(&d.forward(&x).unwrap(), &ones)
                .unwrap()
                .add(&binary_cross_entropy_with_logits(&d.forward(&fake).unwrap(), &zeros).unwrap())
                .unwrap();
            opt_d.step(&loss_d.backward().unwrap()).unwrap();
            let fake = g
                .forward(&Tensor::randn([n, 16], DType::F32, &cpu, &mut rng).unwrap())
                .unwrap();
            let loss_g =
                binary_cross_entropy_with_logits(&d.forward(&fake).unwrap(), &ones).unwrap();
            opt_g.step(&loss_g.backward().unwrap()).unwrap();
        }
    }
    let after = (sample_mean(&mut rng) - data_mean).abs();
    assert!(
        after < before * 0.5,
        "generated mean intensity gap {before} -> {after} (data mean {data_mean})"
    );
}

/// Adam's update written as tensor ops, as PyTorch states it: the reference the fused
/// kernel (`Tensor::adam_update`) is checked against.
#[allow(clippy::too_many_arguments)]
fn adam_reference(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    step: i32,
    lr: f64,
    weight_decay: f64,
    decoupled: bool,
) -> (Tensor, Tensor, Tensor) {
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
    let mut g = g.clone();
    let mut value = p.clone();
    if decoupled {
        value = value.mul_scalar(1.0 - lr * weight_decay).unwrap();
    } else {
        g = g.add(&p.mul_scalar(weight_decay).unwrap()).unwrap();
    }
    let m = m
        .mul_scalar(b1)
        .unwrap()
        .add(&g.mul_scalar(1.0 - b1).unwrap())
        .unwrap();
    let v = v
        .mul_scalar(b2)
        .unwrap()
        .add(&g.square().unwrap().mul_scalar(1.0 - b2).unwrap())
        .unwrap();
    let denom = v
        .mul_scalar(1.0 / (1.0 - b2.powi(step)))
        .unwrap()
        .sqrt()
        .unwrap()
        .add_scalar(eps)
        .unwrap();
    let update = m
        .div(&denom)
        .unwrap()
        .mul_scalar(lr / (1.0 - b1.powi(step)))
        .unwrap();
    (value.sub(&update).unwrap(), m, v)
}

/// SGD with momentum and RMSprop written as tensor ops, as PyTorch states them: the
/// references for their fused kernels. `state` is the momentum buffer or the squared
/// average, zero before the first step.
fn sgd_reference(p: &Tensor, g: &Tensor, buf: &Tensor, nesterov: bool) -> (Tensor, Tensor) {
    let (lr, momentum, decay) = (0.05, 0.9, 0.01);
    let g = g.add(&p.mul_scalar(decay).unwrap()).unwrap();
    let buf = buf.mul_scalar(momentum).unwrap().add(&g).unwrap();
    let direction = match nesterov {
        true => g.add(&buf.mul_scalar(momentum).unwrap()).unwrap(),
        false => buf.clone(),
    };
    (p.sub(&direction.mul_scalar(lr).unwrap()).unwrap(), buf)
}

fn rmsprop_reference(p: &Tensor, g: &Tensor, avg: &Tensor) -> (Tensor, Tensor) {
    let (lr, alpha, eps, decay) = (0.01, 0.99, 1e-8, 0.01);
    let g = g.add(&p.mul_scalar(decay).unwrap()).unwrap();
    let avg = avg
        .mul_scalar(alpha)
        .unwrap()
        .add(&g.square().unwrap().mul_scalar(1.0 - alpha).unwrap())
        .unwrap();
    let update = g
        .div(&avg.sqrt().unwrap().add_scalar(eps).unwrap())
        .unwrap();
    (p.sub(&update.mul_scalar(lr).unwrap()).unwrap(), avg)
}

/// Three steps of each fused optimizer (Adam, Adam with L2 decay, AdamW, SGD without
/// momentum, with momentum and with Nesterov momentum, RMSprop), on the CPU and the GPU, match the update
/// written as tensor ops to within f32 rounding.
#[test]
fn fused_optimizers_match_the_plain_formulas() {
    type Make = Box<dyn Fn(Vec<(String, Tensor)>) -> Box<dyn Optimizer>>;
    type Reference = Box<dyn Fn(&Tensor, &Tensor, &[Tensor], i32) -> (Tensor, Vec<Tensor>)>;
    let gpu = Device::gpu().unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"));
    let mut rng = Rng::new(11);
    for device in [Device::cpu(), gpu] {
        let lr = 0.01;
        let cases: Vec<(&str, Make, Reference)> = vec![
            (
                "adam",
                Box::new(move |p| Box::new(Adam::new(p, lr))),
                Box::new(move |p, g, s, t| {
                    let (p, m, v) = adam_reference(p, g, &s[0], &s[1], t, lr, 0.0, false);
                    (p, vec![m, v])
                }),
            ),
            (
                "adam with L2 decay",
                Box::new(move |p| Box::new(Adam::new(p, lr).with_weight_decay(0.1))),
                Box::new(move |p, g, s, t| {
                    let (p, m, v) = adam_reference(p, g, &s[0], &s[1], t, lr, 0.1, false);
                    (p, vec![m, v])
                }),
            ),
            (
                "adamw",
                Box::new(move |p| Box::new(Adam::adamw(p, lr).with_weight_decay(0.1))),
                Box::new(move |p, g, s, t| {
                    let (p, m, v) = adam_reference(p, g, &s[0], &s[1], t, lr, 0.1, true);
                    (p, vec![m, v])
                }),
            ),
            (
                "sgd",
                Box::new(|p| Box::new(Sgd::new(p, 0.05).with_weight_decay(0.01))),
                Box::new(|p, g, _, _| {
                    let g = g.add(&p.mul_scalar(0.01).unwrap()).unwrap();
                    (p.sub(&g.mul_scalar(0.05).unwrap()).unwrap(), vec![])
                }),
            ),
            (
                "sgd momentum",
                Box::new(|p| {
                    Box::new(
                        Sgd::new(p, 0.05)
                            .with_momentum(0.9, false)
                            .with_weight_decay(0.01),
                    )
                }),
                Box::new(|p, g, s, _| {
                    let (p, buf) = sgd_reference(p, g, &s[0], false);
                    (p, vec![buf])
                }),
            ),
            (
                "sgd nesterov",
                Box::new(|p| {
                    Box::new(
                        Sgd::new(p, 0.05)
                            .with_momentum(0.9, true)
                            .with_weight_decay(0.01),
                    )
                }),
                Box::new(|p, g, s, _| {
                    let (p, buf) = sgd_reference(p, g, &s[0], true);
                    (p, vec![buf])
                }),
            ),
            (
                "rmsprop",
                Box::new(|p| {
                    let mut opt = RmsProp::new(p, 0.01);
                    opt.weight_decay = 0.01;
                    Box::new(opt)
                }),
                Box::new(|p, g, s, _| {
                    let (p, avg) = rmsprop_reference(p, g, &s[0]);
                    (p, vec![avg])
                }),
            ),
        ];
        for (name, make, reference) in cases {
            let start = Tensor::randn([13, 7], DType::F32, &device, &mut rng).unwrap();
            let target = Tensor::randn([13, 7], DType::F32, &device, &mut rng).unwrap();
            let p = start.clone().into_var().unwrap();
            let mut opt = make(vec![("p".into(), p.clone())]);
            let mut want = start.clone();
            let mut states = vec![start.zeros_like().unwrap(); 2];
            for step in 1..=3 {
                // loss = sum((p - target)^2 * p): a gradient that changes with p.
                let loss = p
                    .sub(&target)
                    .unwrap()
                    .square()
                    .unwrap()
                    .mul(&p)
                    .unwrap()
                    .sum_all()
                    .unwrap();
                let grads = loss.backward().unwrap();
                let g = grads.get(&p).unwrap().clone();
                let (next, next_states) = reference(&want, &g, &states, step);
                want = next;
                states[..next_states.len()].clone_from_slice(&next_states);
                opt.step(&grads).unwrap();
                let (got, w) = (p.to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
                for (i, (a, b)) in got.iter().zip(&w).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-6 + 1e-5 * b.abs(),
                        "{name} on {device:?}, step {step}: element {i}: fused {a} vs plain {b}"
                    );
                }
            }
        }
    }
}

/// Optimizers step their parameters and states in place, yet what was taken from them
/// before a step keeps its values: the state a checkpoint saves, a detached copy of a
/// parameter. On the CPU and the GPU, each step's state matches the state saved
/// before it and stepped by a second optimizer loaded from it.
#[test]
fn values_taken_from_an_optimizer_keep_them_across_its_steps() {
    let gpu = Device::gpu().unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"));
    let mut rng = Rng::new(12);
    for device in [Device::cpu(), gpu] {
        let p = Tensor::randn([9, 5], DType::F32, &device, &mut rng)
            .unwrap()
            .mul_scalar(1.0)
            .unwrap()
            .into_var()
            .unwrap();
        let target = Tensor::randn([9, 5], DType::F32, &device, &mut rng).unwrap();
        let grads = |p: &Tensor| {
            let loss = p.sub(&target).unwrap().square().unwrap().sum_all().unwrap();
            loss.backward().unwrap()
        };
        let mut opt = Adam::new(vec![("p".into(), p.clone())], 0.1);
        opt.step(&grads(&p)).unwrap();
        for step in 2..=4 {
            let saved = opt.state();
            let values = |state: &[(String, Tensor)]| -> Vec<Vec<f32>> {
                state.iter().map(|(_, t)| t.to_vec().unwrap()).collect()
            };
            let (state_before, p_before) = (values(&saved), p.detach());
            let p_values = p.to_vec::<f32>().unwrap();
            let g = grads(&p);
            opt.step(&g).unwrap();
            assert_eq!(
                values(&saved),
                state_before,
                "{device:?} step {step}: saved state"
            );
            assert_eq!(
                p_before.to_vec::<f32>().unwrap(),
                p_values,
                "{device:?} step {step}"
            );
            // The saved state, loaded into a second optimizer over a copy of the
            // parameter from before, steps to the same values.
            let twin = p_before.mul_scalar(1.0).unwrap().into_var().unwrap();
            let mut second = Adam::new(vec![("p".into(), twin.clone())], 0.1);
            let loaded: HashMap<String, Tensor> = saved.into_iter().collect();
            second.load_state(&loaded).unwrap();
            let mut g2 = kiln::Gradients::default();
            g2.insert(&twin, g.get(&p).unwrap().clone());
            second.step(&g2).unwrap();
            assert_eq!(twin.to_vec::<f32>().unwrap(), p.to_vec::<f32>().unwrap());
            assert_eq!(values(&second.state()), values(&opt.state()), "step {step}");
        }
    }
}

/// A training step repeated from the same state binds the buffers it bound before (the
/// pool lends the earliest-made free buffer; the optimizer's step ends a batch), so
/// once the steps settle they make no bind groups and find their own. What they compute
/// stays the CPU's, before and after `trim_pool` lets the kept groups go.
#[test]
fn repeated_training_steps_reuse_their_bind_groups_and_keep_to_the_cpu() {
    let mut rng = Rng::new(21);
    let x = Tensor::randn([16, 784], DType::F32, &Device::cpu(), &mut rng).unwrap();
    let labels: Vec<i32> = (0..16).map(|i| i * 7 % 10).collect();
    let y = Tensor::from_vec(labels, [16], &Device::cpu()).unwrap();
    settles_into_its_bind_groups(&mlp, &classification_step, &x, &y, 4);
}

/// As above for a regression with batch norm, whose steps moved from step to step: its
/// running statistics are recorded from their last values, and a chain of them pending
/// ran every few steps, at different points of a step. (The loss `train_step` holds
/// through the optimizer's step reads the last layer's bias; that such a parameter is
/// written over is checked in `optimizer_updates_in_place_match_cpu`.)
#[test]
fn steps_with_batch_norm_reuse_their_bind_groups() {
    let cpu = Device::cpu();
    let mut rng = Rng::new(22);
    let x = Tensor::randn([16, 20], DType::F32, &cpu, &mut rng).unwrap();
    let y = Tensor::randn([16, 1], DType::F32, &cpu, &mut rng).unwrap();
    let model = |device: &Device, rng: &mut Rng| {
        Sequential::new()
            .append(Linear::new(20, 32, device, rng).unwrap())
            .append(BatchNorm::new(32, device).unwrap())
            .append(Activation::ReLU)
            .append(Linear::new(32, 1, device, rng).unwrap())
    };
    let step = |m: &dyn Module, x: &Tensor, y: &Tensor| -> kiln::Result<StepOutput> {
        Ok(StepOutput {
            loss: kiln_nn::loss::mse_loss(&m.forward(x)?, y)?,
            correct: None,
            count: y.elem_count(),
        })
    };
    settles_into_its_bind_groups(&model, &step, &x, &y, 5);
}

/// A batch-norm forward in training mode computes its statistics in one launch on a
/// GPU (no reduction kernels, no squared deviations written out), which moves both
/// running statistics too, written over (no buffer taken, no launch of their own), to
/// the CPU's values; with its running statistics held elsewhere (a detached copy, an
/// expression still to run) those keep the old values. Its backward takes the channel
/// sums in one launch and the input's gradient in one fused kernel. In evaluation mode
/// it is one kernel.
#[test]
fn batch_norm_takes_one_launch_each_way_for_its_channels() {
    let gpu = own_gpu();
    let cpu = Device::cpu();
    let x = Tensor::randn([6, 3, 5, 7], DType::F32, &cpu, &mut Rng::new(5)).unwrap();
    // The running statistics after two forwards.
    let forward_twice = |device: &Device| -> (BatchNorm, Tensor) {
        let (bn, x) = (
            BatchNorm::new(3, device).unwrap(),
            x.to_device(device).unwrap(),
        );
        bn.forward(&x.mul_scalar(2.0).unwrap()).unwrap();
        (bn, x)
    };
    let (bn, x_cpu) = forward_twice(&cpu);
    bn.forward(&x_cpu).unwrap();
    let stats = |bn: &BatchNorm| [bn.running_mean.to_vec(), bn.running_var.to_vec()];
    let want = stats(&bn).map(|s| s.unwrap());
    let (bn, x) = forward_twice(&gpu);
    let g = gpu.as_gpu().unwrap();
    g.synchronize().unwrap();
    let live = g.pool_stats().live_bytes;
    let (out, profile) = gpu
        .profile(|| {
            let y = bn.forward(&x)?;
            g.synchronize()?;
            Ok(y)
        })
        .unwrap();
    let launches = |part: &str| launches_of(&profile, part);
    assert_eq!(launches("moving_average"), 0, "{:#?}", profile.kernels);
    assert_eq!(
        launches("norm/batch_norm_stats"),
        1,
        "{:#?}",
        profile.kernels
    );
    assert_eq!(launches("reduce/"), 0, "{:#?}", profile.kernels);
    drop(out);
    g.synchronize().unwrap();
    assert_eq!(
        g.pool_stats().live_bytes,
        live,
        "bytes held after the forward"
    );
    assert_keeps_to_the_cpu("running statistic", &stats(&bn).map(|s| s.unwrap()), &want);
    // An evaluation-mode output not yet computed reads the running statistics: it runs
    // first, with the old values, and the statistics are still written over in the
    // statistics' kernel. A detached copy of the mean holds its data: then they move
    // by `update_moving_averages`, the variance in place and the mean into new storage
    // (a launch each), the copy keeping the old values.
    for detached in [false, true] {
        let (bn_cpu, x_cpu) = forward_twice(&cpu);
        bn_cpu.set_training(false);
        let eval_want = bn_cpu.forward(&x_cpu).unwrap().to_vec::<f32>().unwrap();
        bn_cpu.set_training(true);
        bn_cpu.forward(&x_cpu).unwrap();
        let want = stats(&bn_cpu).map(|s| s.unwrap());
        let (bn, x) = forward_twice(&gpu);
        let mean_before = bn.running_mean.to_vec::<f32>().unwrap();
        let held_mean = detached.then(|| bn.running_mean.detach());
        bn.set_training(false);
        let eval_out = bn.forward(&x).unwrap();
        bn.set_training(true);
        let (_, profile) = gpu.profile(|| bn.forward(&x)?.to_vec::<f32>()).unwrap();
        let own_launches = 2 * u64::from(detached);
        let moved = launches_of(&profile, "moving_average");
        assert_eq!(moved, own_launches, "{:#?}", profile.kernels);
        let got = stats(&bn).map(|s| s.unwrap());
        assert_keeps_to_the_cpu("running statistic", &got, &want);
        if let Some(held) = held_mean {
            assert_eq!(held.to_vec::<f32>().unwrap(), mean_before);
        }
        let eval_got = eval_out.to_vec::<f32>().unwrap();
        assert_keeps_to_the_cpu("output of the old statistics", &[eval_got], &[eval_want]);
    }
    // Backward: the channel sums in one launch, the input's gradient in one more.
    let x = x.detach().into_var().unwrap();
    let r = Tensor::randn([6, 3, 5, 7], DType::F32, &gpu, &mut Rng::new(6)).unwrap();
    let y = bn.forward(&x).unwrap().mul(&r).unwrap().sum_all().unwrap();
    g.synchronize().unwrap();
    let (grads, profile) = gpu
        .profile(|| {
            let grads = y.backward()?;
            for t in [&x, &bn.weight, &bn.bias] {
                grads.get(t).expect("a gradient").to_vec::<f32>()?;
            }
            Ok(grads)
        })
        .unwrap();
    assert_eq!(
        launches_of(&profile, "norm/batch_norm_backward_sums"),
        1,
        "{:#?}",
        profile.kernels
    );
    assert_eq!(
        launches_of(&profile, "reduce/"),
        0,
        "{:#?}",
        profile.kernels
    );
    drop(grads);
    // In evaluation mode, the normalisation with the running statistics is one fused
    // kernel (fusion on, as by default, whatever KILN_FUSION says).
    g.set_fusion(true);
    bn.set_training(false);
    let (_, profile) = gpu.profile(|| bn.forward(&x)?.to_vec::<f32>()).unwrap();
    assert_eq!(profile.dispatches(), 1, "{:#?}", profile.kernels);
    // Channels of 140,000 elements are cut into parts: one more launch each way puts
    // them together.
    let x = Tensor::randn([2, 3, 70_000], DType::F32, &gpu, &mut Rng::new(7))
        .unwrap()
        .into_var()
        .unwrap();
    let (_, profile) = gpu
        .profile(|| {
            let out = x.batch_norm(None, None, 1e-5)?;
            let grads = out.output.sum_all()?.backward()?;
            grads.get(&x).expect("a gradient").to_vec::<f32>()
        })
        .unwrap();
    let each = |part| launches_of(&profile, part);
    assert_eq!(each("norm/batch_norm_stats"), 1, "{:#?}", profile.kernels);
    assert_eq!(
        each("norm/batch_norm_backward_sums"),
        1,
        "{:#?}",
        profile.kernels
    );
    assert_eq!(each("norm/batch_norm_combine"), 2, "{:#?}", profile.kernels);
    // A momentum outside [0, 1] is refused, the statistics left as they were.
    let (mut bn, x) = forward_twice(&cpu);
    let before = stats(&bn).map(|s| s.unwrap());
    bn.momentum = 1.5;
    let e = bn.forward(&x).unwrap_err();
    assert!(e.to_string().contains("momentum must be in [0, 1]"), "{e}");
    assert_eq!(stats(&bn).map(|s| s.unwrap()), before);
}

/// Trains `model` 16 steps from the same parameters on the CPU and on a GPU device of
/// its own (other tests' buffers in the pool would change what the steps get), the
/// pool trimmed after step 8: the parameters and buffers (running statistics) match,
/// and from `settled` steps after the start and after the trim the steps make no bind
/// groups.
fn settles_into_its_bind_groups(
    model: &dyn Fn(&Device, &mut Rng) -> Sequential,
    step: &dyn Fn(&dyn Module, &Tensor, &Tensor) -> kiln::Result<StepOutput>,
    x: &Tensor,
    y: &Tensor,
    settled: usize,
) {
    let gpu = own_gpu();
    let cpu = Device::cpu();
    let first = model(&cpu, &mut Rng::new(1));
    let (steps, trim_after) = (16, 8);
    // The parameters and buffers after `steps` steps from `first`'s, and the bind groups
    // each step made on the GPU.
    let train = |device: &Device| -> (Vec<Vec<f32>>, Vec<u64>) {
        let model = copy_on(device, model, &first);
        let params = model.named_parameters();
        let mut opt = Sgd::new(params, 0.05).with_momentum(0.9, false);
        let (x, y) = (x.to_device(device).unwrap(), y.to_device(device).unwrap());
        let made = || device.as_gpu().map_or(0, |g| g.bind_groups_made());
        let mut per_step = Vec::new();
        for i in 0..steps {
            if let (Some(g), true) = (device.as_gpu(), i == trim_after) {
                g.trim_pool().unwrap();
            }
            let before = made();
            train_step(&model, &mut opt, step, &x, &y, None).unwrap();
            per_step.push(made() - before);
        }
        let values = model
            .state_dict()
            .iter()
            .map(|(_, t)| t.to_vec().unwrap())
            .collect();
        (values, per_step)
    };
    let (want, _) = train(&cpu);
    let (got, made) = train(&gpu);
    assert_keeps_to_the_cpu("state", &got, &want);
    // A step's outputs are let go after its batch is submitted, so the steps take a
    // few to settle.
    assert!(made[0] > 0 && made[trim_after] > 0, "{made:?}");
    assert!(
        made[settled..trim_after].iter().all(|&m| m == 0),
        "{made:?}"
    );
    assert!(
        made[trim_after + settled..].iter().all(|&m| m == 0),
        "{made:?}"
    );
}

/// A step whose validation loss follows `script` epoch by epoch (the training loss is
/// the model's output, so that there is a gradient): for testing the rules `fit`
/// applies to the monitored loss.
fn scripted_fit(script: &'static [f32], config: &FitConfig) -> (kiln_nn::train::History, usize) {
    let cpu = Device::cpu();
    let model = Linear::new(1, 1, &cpu, &mut Rng::new(0)).unwrap();
    let x = Tensor::ones([4, 1], DType::F32, &cpu).unwrap();
    let data = TensorDataset::new(x.clone(), x).unwrap();
    let (train, val) = (
        DataLoader::new(&data, 2, &cpu).unwrap(),
        DataLoader::new(&data, 4, &cpu).unwrap(),
    );
    let validations = AtomicUsize::new(0);
    let step = |m: &dyn Module, x: &Tensor, _: &Tensor| -> kiln::Result<StepOutput> {
        let out = m.forward(x)?.mean_all()?;
        let loss = match kiln::is_grad_enabled() {
            true => out,
            false => {
                let epoch = validations.fetch_add(1, Ordering::SeqCst);
                out.mul_scalar(0.0)?.add_scalar(script[epoch] as f64)?
            }
        };
        Ok(StepOutput {
            loss,
            correct: None,
            count: x.dims()[0],
        })
    };
    let mut opt = Sgd::new(model.named_parameters(), 1e-3);
    let history = fit(&model, &mut opt, None, &train, Some(&val), &step, config).unwrap();
    (history, validations.load(Ordering::SeqCst))
}

#[test]
fn early_stopping_measures_min_delta_against_the_best_loss_as_keras_does() {
    // With min_delta 0.1: epoch 2 (0.95) is no improvement on 1.0; epoch 3 (0.89) is,
    // measured against the best (1.0), though not against epoch 2 (scikit-learn's rule
    // would stop there); 0.88 and 0.87 are not, and patience 2 ends training after 5.
    let config = FitConfig {
        epochs: 9,
        early_stopping: Some(EarlyStopping {
            patience: 2,
            min_delta: 0.1,
            restore_best: false,
        }),
        ..quiet(9)
    };
    let (history, _) = scripted_fit(&[1.0, 0.95, 0.89, 0.88, 0.87, 0.1, 0.1, 0.1, 0.1], &config);
    assert_eq!((history.epochs.len(), history.best_epoch), (5, 3));
    assert!(history.stopped_early);
}

#[test]
fn callbacks_see_every_step_add_figures_and_can_stop_training() {
    use kiln_nn::train::{Control, OnEpochEnd, OnStepEnd};
    use std::sync::{Arc, Mutex};
    let steps = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (s, v) = (steps.clone(), seen.clone());
    let config = FitConfig {
        callbacks: vec![
            Arc::new(OnStepEnd(move |end: &kiln_nn::train::StepEnd| {
                assert_eq!(end.output.count, 2);
                s.fetch_add(1, Ordering::SeqCst);
                Ok(Control::Continue)
            })),
            Arc::new(OnEpochEnd(move |end: &mut kiln_nn::train::EpochEnd| {
                let val = end.metrics.val_loss.unwrap();
                v.lock()
                    .unwrap()
                    .push((end.metrics.epoch, end.history.epochs.len()));
                end.extra.push(("twice_val".into(), 2.0 * val));
                Ok(match end.metrics.epoch {
                    3 => Control::Stop,
                    _ => Control::Continue,
                })
            })),
        ],
        ..quiet(9)
    };
    let (history, validations) = scripted_fit(&[0.5, 0.25, 0.125, 1.0, 1.0], &config);
    // Two steps an epoch, three epochs; the hook saw each epoch before it was recorded.
    assert_eq!(steps.load(Ordering::SeqCst), 6);
    assert_eq!(*seen.lock().unwrap(), [(1, 0), (2, 1), (3, 2)]);
    assert_eq!((history.epochs.len(), validations), (3, 3));
    assert!(history.stopped_by_callback && !history.stopped_early);
    let extra: Vec<f64> = history.epochs.iter().map(|e| e.extra[0].1).collect();
    assert_eq!(extra, [1.0, 0.5, 0.25]);

    // A hook's error ends training with it.
    let failing = FitConfig {
        callbacks: vec![Arc::new(OnEpochEnd(|_: &mut kiln_nn::train::EpochEnd| {
            Err(Error::InvalidArgument {
                op: "hook",
                reason: "stop".into(),
            })
        }))],
        ..quiet(3)
    };
    let cpu = Device::cpu();
    let model = Linear::new(1, 1, &cpu, &mut Rng::new(0)).unwrap();
    let x = Tensor::ones([4, 1], DType::F32, &cpu).unwrap();
    let data = TensorDataset::new(x.clone(), x).unwrap();
    let loader = DataLoader::new(&data, 2, &cpu).unwrap();
    let mut opt = Sgd::new(model.named_parameters(), 1e-3);
    let step = |m: &dyn Module, x: &Tensor, _: &Tensor| -> kiln::Result<StepOutput> {
        Ok(StepOutput {
            loss: m.forward(x)?.mean_all()?,
            correct: None,
            count: 2,
        })
    };
    let e = fit(&model, &mut opt, None, &loader, None, &step, &failing).unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument { op: "hook", .. }),
        "{e}"
    );
}

/// An average of the weights is recorded from its last value each step; kept pending,
/// each step's would hold the weights it read, a copy of the model a step, and make
/// the optimizer write the parameters into new storage. On the GPU the memory held
/// stays that of the first step, and the average matches the CPU's.
#[test]
fn a_parameter_average_holds_no_old_weights_and_keeps_to_the_cpu() {
    let gpu = own_gpu();
    let cpu = Device::cpu();
    let mut rng = Rng::new(3);
    let x = Tensor::randn([16, 784], DType::F32, &cpu, &mut rng).unwrap();
    let labels: Vec<i32> = (0..16).map(|i| i * 7 % 10).collect();
    let y = Tensor::from_vec(labels, [16], &cpu).unwrap();
    let (first, other) = (mlp(&cpu, &mut rng), mlp(&cpu, &mut rng));
    // The average's parameters after 10 steps, and the bytes the device's tensors held
    // after each.
    let train = |device: &Device| -> (Vec<Vec<f32>>, Vec<u64>) {
        let (model, average) = (copy_on(device, &mlp, &first), copy_on(device, &mlp, &other));
        let ema = kiln_nn::optim::ParameterAverage::new(&model, &average, 0.9).unwrap();
        let mut opt = Adam::new(model.named_parameters(), 1e-3);
        let (x, y) = (x.to_device(device).unwrap(), y.to_device(device).unwrap());
        let mut held = Vec::new();
        for _ in 0..10 {
            train_step(&model, &mut opt, &classification_step, &x, &y, None).unwrap();
            ema.update().unwrap();
            held.push(device.as_gpu().map_or(0, |g| g.pool_stats().live_bytes));
        }
        let values = average
            .parameters()
            .iter()
            .map(|p| p.to_vec().unwrap())
            .collect();
        (values, held)
    };
    let (want, _) = train(&cpu);
    let (got, held) = train(&gpu);
    assert_keeps_to_the_cpu("averaged parameter", &got, &want);
    assert!(
        held.iter().all(|&h| h == held[0]),
        "bytes held after each step: {held:?}"
    );
    // The averages share launches, and take no buffer once they no longer share the
    // parameters' (as they do when the average starts).
    let (model, average) = (copy_on(&gpu, &mlp, &first), copy_on(&gpu, &mlp, &other));
    let ema = kiln_nn::optim::ParameterAverage::new(&model, &average, 0.9).unwrap();
    ema.update().unwrap();
    let g = gpu.as_gpu().unwrap();
    g.synchronize().unwrap();
    let live = g.pool_stats().live_bytes;
    let ((), profile) = gpu.profile(|| ema.update()).unwrap();
    let launches: u64 = profile.kernels.iter().map(|k| k.launches).sum();
    let parameters = average.parameters().len() as u64;
    assert!(
        launches >= 1 && launches < parameters,
        "{:#?}",
        profile.kernels
    );
    assert_eq!(
        g.pool_stats().live_bytes,
        live,
        "bytes held after the update"
    );
}

/// A GPU device of its own, for what a test profiles or counts on it: a profile counts
/// everything its device runs, and the other tests share the cached one.
fn own_gpu() -> Device {
    let own = kiln::backend::GpuDevice::new();
    Device::Gpu(own.unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}")))
}

/// A model `make` builds on `device`, holding `from`'s parameters and buffers.
fn copy_on(
    device: &Device,
    make: &dyn Fn(&Device, &mut Rng) -> Sequential,
    from: &Sequential,
) -> Sequential {
    let model = make(device, &mut Rng::new(0));
    let saved = kiln_nn::train::Checkpoint {
        tensors: from.state_dict().into_iter().collect(),
        metadata: HashMap::new(),
    };
    restore(&saved, &model.state_dict()).unwrap();
    model
}

/// Each tensor's values from the GPU (`got`) within training's rounding of the CPU's.
fn assert_keeps_to_the_cpu(what: &str, got: &[Vec<f32>], want: &[Vec<f32>]) {
    assert_eq!(got.len(), want.len(), "{what}s");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{what} {i}: lengths");
        for (a, b) in g.iter().zip(w) {
            assert!(
                (a - b).abs() <= 1e-4 + 1e-3 * b.abs(),
                "{what} {i}: {a} on the GPU, {b} on the CPU"
            );
        }
    }
}

/// Launches in `profile` of the kernels whose names contain `part`.
fn launches_of(profile: &kiln::Profile, part: &str) -> u64 {
    let of = profile.kernels.iter().filter(|k| k.name.contains(part));
    of.map(|k| k.launches).sum()
}
