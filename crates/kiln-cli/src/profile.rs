//! `kiln profile`: what one training step of a built-in model launches on the GPU.
//! Runs the step as `kiln train` does, warms up, times `--steps` steps on the host
//! clock, then profiles as many and prints a table per kernel, ending with the
//! machine-independent figures: `dispatches per step`, `bytes per step` and the peak
//! of memory the step's tensors held.

use crate::thread_cpu;
use crate::train::{
    char_lm, clip_grad_norm_refusal, image_model, Model, IMAGE_BATCH, IMAGE_LR, LM_BATCH,
    LM_CONTEXT,
};
use clap::Args;
use kiln::{Device, Profile, Result, Rng, Tensor};
use kiln_nn::data::{mnist10k, tinyshakespeare, CharVocab};
use kiln_nn::optim::{Adam, Optimizer};
use kiln_nn::train::{classification_step, next_token_step, train_step, StepOutput};
use kiln_nn::Module;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct ProfileArgs {
    /// Which model's training step to profile.
    #[arg(value_enum)]
    model: Model,
    /// The GPU to profile on (`gpu`, or `auto` when it picks one).
    #[arg(long, default_value = "gpu")]
    device: String,
    /// Training steps to profile, after the warm-up.
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// Steps run first and not counted (pipelines are built then).
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Clip each step's gradients to this joint norm, as `kiln train --clip-grad-norm`
    /// does. Not for the GAN.
    #[arg(long)]
    clip_grad_norm: Option<f64>,
}

type Step<'a> = Box<dyn FnMut() -> Result<()> + 'a>;

/// One training step of a model that `fit` trains, as `fit` takes it (`train_step`).
/// `fit` also reads the losses back once per 32 steps (a copy of each step's loss and
/// right-prediction count, then one readback): not counted here.
fn fit_step<'a>(
    model: &'a dyn Module,
    optimizer: &'a mut dyn Optimizer,
    step: fn(&dyn Module, &Tensor, &Tensor) -> Result<StepOutput>,
    x: Tensor,
    y: Tensor,
    clip_grad_norm: Option<f64>,
) -> Step<'a> {
    Box::new(move || train_step(model, optimizer, &step, &x, &y, clip_grad_norm).map(drop))
}

pub fn run(args: ProfileArgs) -> Result<()> {
    let device = Device::parse(&args.device)?;
    let mut rng = Rng::new(args.seed);
    let refuse = |reason: &str| {
        Err(kiln::Error::InvalidArgument {
            op: "profile",
            reason: reason.into(),
        })
    };
    if args.steps == 0 {
        return refuse("--steps must be at least 1");
    }
    if let Some(reason) = clip_grad_norm_refusal(args.model, args.clip_grad_norm) {
        return refuse(&reason);
    }
    let clip = args.clip_grad_norm;
    let name = format!("{:?}", args.model).to_lowercase();
    let measured = match args.model {
        Model::Cnn | Model::Mlp => {
            let data = mnist10k()?;
            let x = data
                .train_images
                .narrow(0, 0, IMAGE_BATCH)?
                .to_device(&device)?;
            let y = data
                .train_labels
                .narrow(0, 0, IMAGE_BATCH)?
                .to_device(&device)?;
            let model = image_model(args.model, &device, &mut rng, None)?;
            let mut optimizer = Adam::new(model.named_parameters(), IMAGE_LR);
            let step = fit_step(&model, &mut optimizer, classification_step, x, y, clip);
            measure(&device, step, &args)?
        }
        Model::Lstm | Model::Gru | Model::Transformer => {
            let text = tinyshakespeare();
            let vocab = CharVocab::from_text(text);
            let ids = vocab.encode(&text[..LM_BATCH * LM_CONTEXT + 1])?;
            let window = |from: usize| -> Result<Tensor> {
                let part = ids[from..from + LM_BATCH * LM_CONTEXT].to_vec();
                Tensor::from_vec(part, [LM_BATCH, LM_CONTEXT], &device)
            };
            let (x, y) = (window(0)?, window(1)?);
            let (model, lr) = char_lm(args.model, vocab.len(), &device, &mut rng)?;
            let mut optimizer = Adam::new(model.named_parameters(), lr);
            let step = fit_step(&model, &mut optimizer, next_token_step, x, y, clip);
            measure(&device, step, &args)?
        }
        Model::Gan => {
            let data = mnist10k()?;
            let x = data.train_images.narrow(0, 0, 64)?;
            let x = x.mul_scalar(2.0)?.add_scalar(-1.0)?.to_device(&device)?;
            let mut gan = crate::gan::Gan::new(&device, 2e-4, &mut rng)?;
            let step = Box::new(|| gan.step(&x, &mut rng).map(drop));
            measure(&device, step, &args)?
        }
    };
    println!(
        "{name} on {device}: {} steps after {} of warm-up",
        args.steps, args.warmup
    );
    print(&measured, args.steps);
    Ok(())
}

/// A profile of `--steps` steps, and their rate unprofiled: the same number of steps
/// timed on the host clock from a synchronised device to a synchronised device.
struct Measured {
    profile: Profile,
    steps_per_second: f64,
    /// CPU time of the thread that recorded the timed steps, per step.
    host_per_step: Option<Duration>,
}

fn measure(device: &Device, mut step: Step<'_>, args: &ProfileArgs) -> Result<Measured> {
    for _ in 0..args.warmup {
        step()?;
    }
    device.synchronize()?;
    let start = Instant::now();
    let cpu_start = thread_cpu::now();
    (0..args.steps).try_for_each(|_| step())?;
    device.synchronize()?;
    let steps_per_second = args.steps as f64 / start.elapsed().as_secs_f64();
    let host_per_step = thread_cpu::now()
        .zip(cpu_start)
        .map(|(end, start)| (end - start) / args.steps as u32);
    let ((), profile) = device.profile(|| (0..args.steps).try_for_each(|_| step()))?;
    Ok(Measured {
        profile,
        steps_per_second,
        host_per_step,
    })
}

fn print(measured: &Measured, steps: usize) {
    let profile = &measured.profile;
    let per_step = |v: u64| v as f64 / steps as f64;
    println!(
        "{:<56} {:>9} {:>11} {:>12} {:>12}",
        "kernel", "per step", "GPU ms/step", "MB read", "MB written"
    );
    for k in &profile.kernels {
        let ms = k.gpu_time.map_or("-".to_string(), |t| {
            format!("{:.3}", t.as_secs_f64() * 1e3 / steps as f64)
        });
        println!(
            "{:<56} {:>9.1} {:>11} {:>12.3} {:>12.3}",
            k.name,
            per_step(k.launches),
            ms,
            per_step(k.bytes_read) / 1e6,
            per_step(k.bytes_written) / 1e6,
        );
    }
    if let Some(t) = profile.gpu_time() {
        println!(
            "GPU time per step: {:.3} ms",
            t.as_secs_f64() * 1e3 / steps as f64
        );
    }
    println!(
        "steps per second (host clock, not profiled): {:.2}",
        measured.steps_per_second
    );
    // The recording thread's CPU: kiln's, wgpu's and the driver's work for the step's
    // launches (on a software adapter, not the kernels, which its own threads run).
    match measured.host_per_step {
        Some(t) => println!(
            "host CPU per step (the recording thread): {:.3} ms",
            t.as_secs_f64() * 1e3
        ),
        None => println!("host CPU per step (the recording thread): not known here"),
    }
    println!(
        "copies and clears per step: {:.1}",
        per_step(profile.transfers)
    );
    println!(
        "readbacks (sync points) per step: {:.2}",
        per_step(profile.readbacks)
    );
    println!("submissions per step: {:.2}", per_step(profile.submissions));
    println!(
        "bind groups made per step: {:.1}",
        per_step(profile.bind_groups)
    );
    println!(
        "peak memory held by tensors: {} bytes",
        profile.peak_live_bytes
    );
    println!("dispatches per step: {:.0}", per_step(profile.dispatches()));
    println!("bytes per step: {:.0}", per_step(profile.bytes()));
}
