//! `kiln train gan`: a DCGAN-style generator and discriminator trained adversarially on
//! the MNIST digits, judged by the trained CNN: how many of 1,000 samples it recognises
//! with confidence, and how evenly they cover the ten digits.

use crate::models;
use kiln::{Conv2dOptions, DType, Device, Result, Rng, Tensor};
use kiln_nn::data::{DataLoader, Mnist, TensorDataset};
use kiln_nn::layers::{
    Activation, BatchNorm, Conv2d, ConvTranspose2d, Flatten, Linear, Sequential, Unflatten,
};
use kiln_nn::loss::binary_cross_entropy_with_logits;
use kiln_nn::optim::{Adam, Optimizer};
use kiln_nn::train::{load_checkpoint, restore, save_checkpoint, save_image_grid, Palette};
use kiln_nn::{Module, ModuleExt};
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

const LATENT: usize = 64;
/// Channels of the first convolution (the second has twice as many).
const WIDTH: usize = 32;

/// Strided 4x4 convolutions halve or double the side: 28 <-> 14 <-> 7.
fn k4s2() -> ((usize, usize), Conv2dOptions) {
    let options = Conv2dOptions {
        stride: (2, 2),
        padding: (1, 1),
        ..Default::default()
    };
    ((4, 4), options)
}

/// DCGAN's generator at MNIST's size: a linear projection to 7x7 feature maps, then two
/// transposed convolutions up to 28x28, with batch norm and ReLU between.
fn generator(device: &Device, rng: &mut Rng) -> Result<Sequential> {
    let (k, s2) = k4s2();
    Ok(Sequential::new()
        .append(Linear::new(LATENT, WIDTH * 2 * 7 * 7, device, rng)?)
        .append(Unflatten::new(&[WIDTH * 2, 7, 7]))
        .append(BatchNorm::new(WIDTH * 2, device)?)
        .append(Activation::ReLU)
        .append(ConvTranspose2d::new(WIDTH * 2, WIDTH, k, s2, device, rng)?)
        .append(BatchNorm::new(WIDTH, device)?)
        .append(Activation::ReLU)
        .append(ConvTranspose2d::new(WIDTH, 1, k, s2, device, rng)?)
        .append(Activation::Tanh))
}

/// DCGAN's discriminator mirrored: two strided convolutions down to 7x7 with leaky ReLU
/// (batch norm on the second), then one logit.
fn discriminator(device: &Device, rng: &mut Rng) -> Result<Sequential> {
    let (k, s2) = k4s2();
    Ok(Sequential::new()
        .append(Conv2d::new(1, WIDTH, k, s2, device, rng)?)
        .append(Activation::LeakyReLU(0.2))
        .append(Conv2d::new(WIDTH, WIDTH * 2, k, s2, device, rng)?)
        .append(BatchNorm::new(WIDTH * 2, device)?)
        .append(Activation::LeakyReLU(0.2))
        .append(Flatten)
        .append(Linear::new(WIDTH * 2 * 7 * 7, 1, device, rng)?))
}

/// Generated digits `[n, 1, 28, 28]` in [0, 1], with the generator in eval mode (batch
/// norm from its running statistics).
fn samples(g: &Sequential, n: usize, device: &Device, rng: &mut Rng) -> Result<Tensor> {
    g.eval();
    kiln::no_grad(|| {
        let z = Tensor::randn([n, LATENT], DType::F32, device, rng)?;
        g.forward(&z)?
            .add_scalar(1.0)?
            .mul_scalar(0.5)?
            .reshape([n, 1, 28, 28])
    })
}

pub struct GanOptions<'a> {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub seed: u64,
    pub classifier: &'a Path,
    pub out: &'a Path,
    pub minutes: Option<f64>,
}

/// The two networks and their optimizers.
pub struct Gan {
    pub generator: Sequential,
    pub discriminator: Sequential,
    opt_g: Adam,
    opt_d: Adam,
}

impl Gan {
    pub fn new(device: &Device, lr: f64, rng: &mut Rng) -> Result<Self> {
        let (generator, discriminator) = (generator(device, rng)?, discriminator(device, rng)?);
        let opt_g = Adam::new(generator.named_parameters(), lr).with_betas((0.5, 0.999));
        let opt_d = Adam::new(discriminator.named_parameters(), lr).with_betas((0.5, 0.999));
        Ok(Gan {
            generator,
            discriminator,
            opt_g,
            opt_d,
        })
    }

    /// One adversarial step on the real digits `x`; returns the discriminator's and the
    /// generator's losses (on the device).
    pub fn step(&mut self, x: &Tensor, rng: &mut Rng) -> Result<(Tensor, Tensor)> {
        let (g, d, device) = (&self.generator, &self.discriminator, x.device());
        let n = x.dims()[0];
        let ones = Tensor::ones([n, 1], DType::F32, &device)?;
        let zeros = Tensor::zeros([n, 1], DType::F32, &device)?;
        // Discriminator: real -> 1, generated -> 0 (the generator is not updated).
        let fake = g
            .forward(&Tensor::randn([n, LATENT], DType::F32, &device, rng)?)?
            .detach();
        let loss_d = binary_cross_entropy_with_logits(&d.forward(x)?, &ones)?.add(
            &binary_cross_entropy_with_logits(&d.forward(&fake)?, &zeros)?,
        )?;
        self.opt_d.step(&loss_d.backward()?)?;
        // Generator: make the discriminator say 1 (the non-saturating loss). The
        // discriminator's parameters take no gradient here: its step has been taken.
        let fake = g.forward(&Tensor::randn([n, LATENT], DType::F32, &device, rng)?)?;
        let loss_g = d.frozen(|| binary_cross_entropy_with_logits(&d.forward(&fake)?, &ones))?;
        self.opt_g.step(&loss_g.backward()?)?;
        Ok((loss_d, loss_g))
    }
}

pub fn run(data: Mnist, device: &Device, o: GanOptions) -> Result<()> {
    if !o.classifier.exists() {
        let reason =
            "the GAN is judged by a trained CNN: run `kiln train` first (or pass --classifier)"
                .to_string();
        return Err(kiln::Error::Io {
            op: "train gan",
            path: o.classifier.display().to_string(),
            reason,
        });
    }
    let mut rng = Rng::new(o.seed);
    let mut gan = Gan::new(device, o.lr, &mut rng)?;
    println!("training gan: generator {} and discriminator {} parameters, {} epochs, batch {}, lr {}, device {device}", gan.generator.num_parameters(), gan.discriminator.num_parameters(), o.epochs, o.batch_size, o.lr);
    // Real digits scaled to [-1, 1], the generator's tanh range.
    let real = TensorDataset::new(
        data.train_images.mul_scalar(2.0)?.add_scalar(-1.0)?,
        data.train_labels,
    )?;
    let loader = DataLoader::new(&real, o.batch_size, device)?
        .shuffled(o.seed)
        .dropping_last();
    let start = Instant::now();
    for epoch in 1..=o.epochs {
        // The losses stay on the device and are read back once per epoch.
        let (mut losses_d, mut losses_g) = (Vec::new(), Vec::new());
        for batch in loader.epoch(epoch as u64) {
            let (x, _) = batch?;
            let (loss_d, loss_g) = gan.step(&x, &mut rng)?;
            losses_d.push(loss_d.detach().reshape([1])?);
            losses_g.push(loss_g.detach().reshape([1])?);
        }
        let mean = |losses: &[Tensor]| -> Result<f64> {
            let values = Tensor::cat(losses, 0)?.to_f64_vec()?;
            Ok(values.iter().sum::<f64>() / values.len().max(1) as f64)
        };
        println!(
            "epoch {epoch:>3}  discriminator loss {:.4}  generator loss {:.4}  {:.0}s",
            mean(&losses_d)?,
            mean(&losses_g)?,
            start.elapsed().as_secs_f64()
        );
        if o.minutes
            .is_some_and(|m| start.elapsed().as_secs_f64() >= m * 60.0)
        {
            println!("time limit reached");
            break;
        }
    }

    let (g, d) = (&gan.generator, &gan.discriminator);
    // Judge 1,000 samples with the trained CNN.
    let cnn = models::cnn(device, &mut Rng::new(0), models::CNN_DROPOUT)?;
    restore(&load_checkpoint(o.classifier)?, &cnn.state_dict())?;
    cnn.eval();
    let judged = samples(g, 1000, device, &mut Rng::new(o.seed ^ 0x5eed))?;
    let probs = kiln::no_grad(|| cnn.forward(&judged)?.softmax(-1))?.to_vec::<f32>()?;
    let mut counts = [0usize; 10];
    let mut confident = 0;
    for row in probs.chunks(10) {
        let (class, &p) = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .expect("ten classes");
        counts[class] += 1;
        if p >= 0.9 {
            confident += 1;
        }
    }
    let covered = counts.iter().filter(|&&c| c >= 30).count();
    let grid = judged.narrow(0, 0, 64)?.to_vec::<f32>()?;
    let tiles: Vec<(Vec<f32>, Palette)> = grid
        .chunks(784)
        .map(|t| (t.to_vec(), Palette::Grey))
        .collect();
    save_image_grid(&tiles, 28, 28, 8, 3, o.out.join("samples.png"))?;
    let mut state = kiln_nn::module_helpers::prefixed("generator", g.state_dict());
    state.extend(kiln_nn::module_helpers::prefixed(
        "discriminator",
        d.state_dict(),
    ));
    save_checkpoint(
        o.out.join("model.safetensors"),
        &state,
        &HashMap::from([("model".to_string(), "gan".to_string())]),
    )?;
    println!("class counts of 1000 samples (digits 0-9): {counts:?}");
    println!(
        "wrote {}/samples.png and model.safetensors in {:.1}s",
        o.out.display(),
        start.elapsed().as_secs_f64()
    );
    println!("confident samples: {:.3} (p >= 0.9 by the trained CNN); digits with at least 3% of samples: {covered} of 10", confident as f64 / 1000.0);
    Ok(())
}
