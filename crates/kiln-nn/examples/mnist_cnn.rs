//! A CNN on the bundled MNIST digits with the pieces a real run uses: a shuffled,
//! augmented `DataLoader`, `fit` with validation, early stopping and a checkpoint after
//! every epoch, then an interrupted run resumed from its `last.safetensors`.
//!
//!     cargo run --release -p kiln-nn --example mnist_cnn
//!
//! KILN_EXAMPLE_EPOCHS sets the epochs of each half (CI runs it short).

use kiln::{Conv2dOptions, Device, Result, Rng};
use kiln_nn::data::{mnist10k, random_translate, DataLoader, TensorDataset, Transform};
use kiln_nn::layers::{Activation, Conv2d, Flatten, Linear, MaxPool2d, Sequential};
use kiln_nn::optim::{Adam, Optimizer};
use kiln_nn::train::{
    classification_step, evaluate, fit, load_checkpoint, restore, EarlyStopping, FitConfig,
    RunState,
};
use kiln_nn::{Module, ModuleExt};

fn cnn(device: &Device, rng: &mut Rng) -> Result<Sequential> {
    let conv = Conv2dOptions::default();
    Ok(Sequential::new()
        .append(Conv2d::new(1, 16, (5, 5), conv, device, rng)?)
        .append(Activation::ReLU)
        .append(MaxPool2d::new(2))
        .append(Conv2d::new(16, 32, (5, 5), conv, device, rng)?)
        .append(Activation::ReLU)
        .append(MaxPool2d::new(2))
        .append(Flatten)
        .append(Linear::new(32 * 4 * 4, 10, device, rng)?))
}

fn main() -> Result<()> {
    let half: usize = std::env::var("KILN_EXAMPLE_EPOCHS")
        .ok()
        .and_then(|e| e.parse().ok())
        .unwrap_or(4);
    let device = Device::best()?;
    let data = mnist10k()?;
    // The last 10% of the training images validate; the test images are kept apart.
    let (train, val) = TensorDataset::new(data.train_images, data.train_labels)?.split(0.1)?;
    let test = TensorDataset::new(data.test_images, data.test_labels)?;
    let shift: Transform =
        Box::new(|x, epoch, batch| random_translate(x, 2, 0, (epoch << 32) | batch as u64));
    let train_loader = DataLoader::new(&train, 64, &device)?
        .shuffled(0)
        .with_transform(shift);
    let val_loader = DataLoader::new(&val, 256, &device)?;
    let test_loader = DataLoader::new(&test, 256, &device)?;
    let dir = std::env::temp_dir().join(format!("kiln-mnist-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| kiln::Error::io("mnist_cnn", &dir, e))?;
    let config = |epochs: usize, resume: Option<RunState>| FitConfig {
        epochs,
        early_stopping: Some(EarlyStopping {
            patience: 3,
            min_delta: 1e-4,
            restore_best: true,
        }),
        checkpoint_dir: Some(dir.clone()),
        resume,
        ..FitConfig::default()
    };

    // The first half, as if the run had then been stopped.
    let model = cnn(&device, &mut Rng::new(0))?;
    let mut optimizer = Adam::new(model.named_parameters(), 2e-3);
    println!(
        "{} parameters on {device}; epochs 1 to {half}",
        model.num_parameters()
    );
    fit(
        &model,
        &mut optimizer,
        None,
        &train_loader,
        Some(&val_loader),
        &classification_step,
        &config(half, None),
    )?;

    // A new process would start here: the weights, the optimizer's moments and where
    // the run stood all come from last.safetensors.
    let model = cnn(&device, &mut Rng::new(1))?;
    let mut optimizer = Adam::new(model.named_parameters(), 2e-3);
    let last = load_checkpoint(dir.join("last.safetensors"))?;
    restore(&last, &model.state_dict())?;
    optimizer.load_state(&last.optimizer_state())?;
    let run = RunState::from_metadata(&last.metadata)?;
    println!(
        "resumed after epoch {}; epochs {} to {}",
        run.epochs_done,
        run.epochs_done + 1,
        2 * half
    );
    let history = fit(
        &model,
        &mut optimizer,
        None,
        &train_loader,
        Some(&val_loader),
        &classification_step,
        &config(2 * half, Some(run)),
    )?;

    let (_, accuracy) = evaluate(&model, &test_loader, &classification_step)?;
    println!("best epoch {}", history.best_epoch);
    println!("test accuracy: {:.4}", accuracy.unwrap_or(0.0));
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
