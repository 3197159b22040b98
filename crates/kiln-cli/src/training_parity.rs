//! Training parity with PyTorch: the built-in CNN and char transformer, started from
//! PyTorch's initial state dict and fed PyTorch's batches (dropout off), reach PyTorch's
//! parameters after 20 SGD-with-momentum steps and, separately, 20 Adam steps: in f64
//! on the CPU to within rounding, and in f32 on both devices as close as PyTorch's own
//! f32 run comes to its f64 one. The fixtures come from
//! tests/fixtures/pytorch/make_training_parity.py.

use crate::char_lm::CharLm;
use kiln::{DType, Device, Rng, Tensor};
use kiln_nn::optim::{Adam, Optimizer, Sgd};
use kiln_nn::train::{
    classification_step, load_pytorch, next_token_step, restore, train_step, Checkpoint, StepOutput,
};
use kiln_nn::{Module, ModuleExt};
use std::collections::HashMap;

type Step = dyn Fn(&dyn Module, &Tensor, &Tensor) -> kiln::Result<StepOutput>;

/// In f64, kiln's and PyTorch's trajectories agree to this (the largest difference of
/// any parameter after 20 steps). kiln keeps scalar parameters (the learning rate,
/// momentum, Adam's betas, attention's scale) as f32 in every dtype, a relative 1e-8
/// per use, so its f64 runs end about 1e-8 from PyTorch's (measured: 2.4e-8 for the
/// CNN, 8.7e-9 for the transformer), while a wrong rule (a missing bias correction,
/// momentum applied once too often, a gradient off by a factor) moves parameters by
/// 1e-4 or more.
const F64_BOUND: f64 = 1e-7;
/// In f32, kiln may end at most this many times as far from PyTorch's f64 trajectory as
/// PyTorch's own f32 run does (`f32_gap` in the fixture), plus `F32_FLOOR`.
const F32_FACTOR: f64 = 4.0;
const F32_FLOOR: f64 = 1e-6;

struct Fixture {
    tensors: HashMap<String, Tensor>,
    /// PyTorch's own f32-vs-f64 gap per optimizer.
    f32_gap: HashMap<String, f64>,
}

fn fixture(name: &str) -> Fixture {
    let path = format!(
        "{}/../../tests/fixtures/pytorch/{name}.safetensors",
        env!("CARGO_MANIFEST_DIR")
    );
    let file = load_pytorch(path).unwrap();
    let config: serde_json::Value = serde_json::from_str(&file.metadata["config"]).unwrap();
    let f32_gap = ["sgd", "adam"]
        .iter()
        .map(|o| (o.to_string(), config["f32_gap"][o].as_f64().unwrap()))
        .collect();
    Fixture {
        tensors: file.tensors,
        f32_gap,
    }
}

fn part(file: &HashMap<String, Tensor>, prefix: &str) -> Checkpoint {
    Checkpoint {
        tensors: file
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone())))
            .collect(),
        metadata: HashMap::new(),
    }
}

/// Takes the fixture's steps with `optimizer` from its start, in `dtype` on `device`,
/// and returns the largest difference to PyTorch's f64 parameters.
fn replay(
    file: &HashMap<String, Tensor>,
    model: &dyn Module,
    optimizer: &mut dyn Optimizer,
    step: &Step,
    expected: &str,
    dtype: DType,
    device: &Device,
) -> f64 {
    let batches = (0..)
        .take_while(|i| file.contains_key(&format!("batch.{i}.x")))
        .map(|i| {
            (
                file[&format!("batch.{i}.x")].clone(),
                file[&format!("batch.{i}.y")].clone(),
            )
        });
    for (x, y) in batches {
        let x = match x.dtype().is_float() {
            true => x.to_dtype(dtype).unwrap(),
            false => x,
        };
        let (x, y) = (x.to_device(device).unwrap(), y.to_device(device).unwrap());
        train_step(model, optimizer, step, &x, &y, None).unwrap();
    }
    let want = part(file, expected);
    let mut worst = 0.0f64;
    for (name, p) in model.named_parameters() {
        let got = p.to_f64_vec().unwrap();
        let w = want.tensors[&name].to_f64_vec().unwrap();
        assert_eq!(got.len(), w.len(), "{name}");
        for (a, b) in got.iter().zip(&w) {
            worst = worst.max((a - b).abs());
        }
    }
    worst
}

fn devices() -> Vec<Device> {
    let mut d = vec![Device::cpu()];
    // GPU tests never skip silently: no adapter fails here unless opted out.
    match Device::gpu() {
        Ok(g) => d.push(g),
        Err(e) if std::env::var("KILN_SKIP_GPU_TESTS").as_deref() == Ok("1") => {
            eprintln!("KILN_SKIP_GPU_TESTS=1: skipping the GPU ({e})")
        }
        Err(e) => panic!("GPU tests need an adapter: {e}"),
    }
    d
}

fn check(name: &str, build: &dyn Fn(&Device) -> Box<dyn Module>, step: &Step) {
    let fixture = fixture(name);
    let init = part(&fixture.tensors, "init.");
    let mut runs = vec![(Device::cpu(), DType::F64)];
    runs.extend(devices().into_iter().map(|d| (d, DType::F32)));
    for (device, dtype) in runs {
        for optimizer in ["sgd", "adam"] {
            let model = build(&device);
            restore(&init, &model.state_dict()).unwrap();
            model.to_dtype(dtype).unwrap();
            model.eval(); // dropout off, as in the fixture
            let params = model.named_parameters();
            let mut opt: Box<dyn Optimizer> = match optimizer {
                "sgd" => Box::new(Sgd::new(params, 0.05).with_momentum(0.9, false)),
                _ => Box::new(Adam::new(params, 1e-3)),
            };
            let expected = format!("{optimizer}.f64.");
            let gap = replay(
                &fixture.tensors,
                model.as_ref(),
                opt.as_mut(),
                step,
                &expected,
                dtype,
                &device,
            );
            let (bound, yardstick) = match dtype {
                DType::F64 => (F64_BOUND, String::new()),
                _ => {
                    let torch = fixture.f32_gap[optimizer];
                    (
                        F32_FACTOR * torch + F32_FLOOR,
                        format!(" (PyTorch's own f32 run: {torch:.2e})"),
                    )
                }
            };
            let label = format!("{name}, {optimizer}, {dtype:?} on {device}");
            eprintln!("{label}: largest difference to PyTorch's f64 parameters after 20 steps {gap:.2e}{yardstick}");
            assert!(gap <= bound, "{label}: {gap:.3e} is above {bound:.3e}");
        }
    }
}

#[test]
fn the_cnn_takes_pytorchs_steps() {
    let build = |d: &Device| -> Box<dyn Module> {
        Box::new(crate::models::cnn(d, &mut Rng::new(5), crate::models::CNN_DROPOUT).unwrap())
    };
    check("training_cnn", &build, &classification_step);
}

#[test]
fn the_char_transformer_takes_pytorchs_steps() {
    let build = |d: &Device| -> Box<dyn Module> {
        Box::new(CharLm::transformer(65, 32, 4, 2, 16, d, &mut Rng::new(5)).unwrap())
    };
    check("training_char_transformer", &build, &next_token_step);
}
