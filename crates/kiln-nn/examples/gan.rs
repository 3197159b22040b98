//! A generative adversarial network in its plainest form: two small MLPs on the bundled
//! MNIST digits, the discriminator learning to tell real digits from generated ones and
//! the generator learning to fool it. It shows what a training loop outside `fit` looks
//! like: two models, two optimizers, `detach` so that one step does not update the other
//! network, and losses kept on the device until they are printed.
//!
//!     cargo run --release -p kiln-nn --example gan
//!
//! KILN_EXAMPLE_STEPS sets the number of steps (CI runs 300). It writes 64 samples to
//! gan_samples.png in the system's temporary folder: after the default 3,000 steps (about
//! a minute on two CPU cores) most are recognisable digits, with some speckle. (`kiln
//! train gan` is the convolutional version, judged by a trained classifier.)

use kiln::{DType, Device, Result, Rng, Tensor};
use kiln_nn::data::{mnist10k, DataLoader, TensorDataset};
use kiln_nn::layers::{Activation, Linear, Sequential};
use kiln_nn::loss::binary_cross_entropy_with_logits;
use kiln_nn::optim::{Adam, Optimizer};
use kiln_nn::train::{save_image_grid, Palette};
use kiln_nn::{Module, ModuleExt};

const LATENT: usize = 32;
const PIXELS: usize = 28 * 28;

/// Noise in, a flattened digit in [-1, 1] out.
fn generator(device: &Device, rng: &mut Rng) -> Result<Sequential> {
    Ok(Sequential::new()
        .append(Linear::new(LATENT, 256, device, rng)?)
        .append(Activation::LeakyReLU(0.2))
        .append(Linear::new(256, PIXELS, device, rng)?)
        .append(Activation::Tanh))
}

/// A flattened digit in, one logit out: how real it looks.
fn discriminator(device: &Device, rng: &mut Rng) -> Result<Sequential> {
    Ok(Sequential::new()
        .append(Linear::new(PIXELS, 256, device, rng)?)
        .append(Activation::LeakyReLU(0.2))
        .append(Linear::new(256, 1, device, rng)?))
}

/// Share of pixels above half brightness, for images in [0, 1].
fn ink(images: &[f32]) -> f64 {
    images.iter().filter(|&&p| p > 0.5).count() as f64 / images.len().max(1) as f64
}

fn main() -> Result<()> {
    let steps: usize = std::env::var("KILN_EXAMPLE_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    let device = Device::best()?;
    let mut rng = Rng::new(0);
    let data = mnist10k()?;
    // Real digits flattened and scaled to [-1, 1], the generator's tanh range.
    let n = data.train_images.dims()[0];
    let real = data
        .train_images
        .reshape([n, PIXELS])?
        .mul_scalar(2.0)?
        .add_scalar(-1.0)?;
    let real_ink = ink(&data.train_images.to_vec::<f32>()?);
    let dataset = TensorDataset::new(real, data.train_labels)?;
    let loader = DataLoader::new(&dataset, 64, &device)?
        .shuffled(0)
        .dropping_last();

    let (g, d) = (
        generator(&device, &mut rng)?,
        discriminator(&device, &mut rng)?,
    );
    // DCGAN's Adam settings: a lower first-moment decay keeps the two players from
    // chasing stale gradients.
    let mut opt_g = Adam::new(g.named_parameters(), 2e-4).with_betas((0.5, 0.999));
    let mut opt_d = Adam::new(d.named_parameters(), 2e-4).with_betas((0.5, 0.999));
    println!(
        "generator {} and discriminator {} parameters on {device}, {steps} steps",
        g.num_parameters(),
        d.num_parameters()
    );

    let mut step = 0;
    let (mut sum_d, mut sum_g) = (Vec::new(), Vec::new());
    'training: for epoch in 0.. {
        for batch in loader.epoch(epoch) {
            if step == steps {
                break 'training;
            }
            let (x, _) = batch?;
            let b = x.dims()[0];
            let ones = Tensor::ones([b, 1], DType::F32, &device)?;
            let zeros = Tensor::zeros([b, 1], DType::F32, &device)?;

            // The discriminator: real digits are 1, generated ones 0. `detach` keeps
            // this step's gradient out of the generator.
            let z = Tensor::randn([b, LATENT], DType::F32, &device, &mut rng)?;
            let fake = g.forward(&z)?.detach();
            let loss_d = binary_cross_entropy_with_logits(&d.forward(&x)?, &ones)?.add(
                &binary_cross_entropy_with_logits(&d.forward(&fake)?, &zeros)?,
            )?;
            opt_d.step(&loss_d.backward()?)?;

            // The generator: make the discriminator say 1. Only the generator's
            // parameters are in opt_g, so the discriminator is left as it is; frozen,
            // its parameters take no gradient in this pass.
            let z = Tensor::randn([b, LATENT], DType::F32, &device, &mut rng)?;
            let fake = g.forward(&z)?;
            let loss_g =
                d.frozen(|| binary_cross_entropy_with_logits(&d.forward(&fake)?, &ones))?;
            opt_g.step(&loss_g.backward()?)?;

            // Read back every 100 steps, not every step: a readback waits for the GPU.
            sum_d.push(loss_d.detach().reshape([1])?);
            sum_g.push(loss_g.detach().reshape([1])?);
            step += 1;
            if step % 100 == 0 || step == steps {
                let mean = |losses: &[Tensor]| -> Result<f64> {
                    Ok(Tensor::cat(losses, 0)?.mean_all()?.to_f64_vec()?[0])
                };
                println!(
                    "step {step:>5}  discriminator loss {:.3}  generator loss {:.3}",
                    mean(&sum_d)?,
                    mean(&sum_g)?
                );
                sum_d.clear();
                sum_g.clear();
            }
        }
    }

    // 64 samples, back in [0, 1].
    let z = Tensor::randn([64, LATENT], DType::F32, &device, &mut rng)?;
    let samples = kiln::no_grad(|| g.forward(&z)?.add_scalar(1.0)?.mul_scalar(0.5))?;
    let pixels = samples.to_vec::<f32>()?;
    let tiles: Vec<(Vec<f32>, Palette)> = pixels
        .chunks(PIXELS)
        .map(|t| (t.to_vec(), Palette::Grey))
        .collect();
    let path = std::env::temp_dir().join("gan_samples.png");
    save_image_grid(&tiles, 28, 28, 8, 3, &path)?;
    println!("wrote {}", path.display());
    // An untrained generator's tanh sits near 0, half brightness everywhere; a trained
    // one draws thin bright strokes on a dark ground, as the real digits have.
    println!(
        "ink (pixels above half brightness): samples {:.3}, real digits {real_ink:.3}",
        ink(&pixels)
    );
    Ok(())
}
