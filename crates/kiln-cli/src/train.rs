//! `kiln train`: trains one of the built-in models on real data and says what it did:
//! per-epoch metrics, a final metric line, and the checkpoint and curves in `--out`.

use crate::models;
use clap::{Args, ValueEnum};
use kiln::{Device, Result, Rng, Tensor};
use kiln_nn::data::{load_mnist_dir, mnist10k, random_translate, DataLoader, Mnist, TensorDataset};
use kiln_nn::distributed::DataParallel;
use kiln_nn::optim::{Adam, CosineAnnealing, Optimizer};
use kiln_nn::train::{
    classification_step, evaluate, fit, load_checkpoint, next_token_step, plot_history, restore,
    save_checkpoint, training_state, EarlyStopping, FitConfig, RunState,
};
use kiln_nn::{Module, ModuleExt};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Model {
    /// Convolutional network on MNIST-format digits (the default).
    Cnn,
    /// Multilayer perceptron on MNIST-format digits.
    Mlp,
    /// Character-level LSTM language model on tinyshakespeare.
    Lstm,
    /// Character-level GRU language model on tinyshakespeare.
    Gru,
    /// Character-level decoder-only transformer on tinyshakespeare.
    Transformer,
    /// Generative adversarial network on the MNIST digits, judged by a trained CNN.
    Gan,
}

#[derive(Args)]
pub struct TrainArgs {
    /// Which model to train.
    #[arg(value_enum, default_value_t = Model::Cnn)]
    model: Model,
    /// A folder of IDX files in MNIST's layout (e.g. ../shared/data/fashion-mnist);
    /// without it the bundled 10,000-digit MNIST subset is used.
    #[arg(long)]
    data: Option<PathBuf>,
    /// cpu, gpu, or auto (the best available).
    #[arg(long, default_value = "auto")]
    device: String,
    #[arg(long)]
    epochs: Option<usize>,
    /// Samples per batch; with --distributed, per rank (as in PyTorch). Its default
    /// there splits the single-process default between the ranks, so that the batch
    /// of all ranks together, which the default learning rate was tuned for, stays the
    /// same.
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where the checkpoint, curves and samples go.
    #[arg(long, default_value = "runs")]
    out: PathBuf,
    /// Stop training after this many minutes (the language models default to 10).
    #[arg(long)]
    minutes: Option<f64>,
    /// The trained CNN that judges the GAN's samples.
    #[arg(long, default_value = "runs/cnn/model.safetensors")]
    classifier: PathBuf,
    /// Continue a run from a checkpoint this command wrote for the same model (its
    /// `last.safetensors`, written after every epoch): the weights and optimizer state
    /// are loaded, and training goes on from the next epoch up to `--epochs` in all,
    /// with the learning-rate schedule and the shuffling where they were. Not for the
    /// GAN.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Train as one rank of an MPI job (`mpirun -np 2 kiln train mlp --distributed`):
    /// each rank trains on its own share of the data, with `--batch-size` samples per
    /// rank, and gradients are averaged over the ranks every step. Needs a kiln built
    /// with `--features distributed` (README). Not for the GAN.
    #[arg(long)]
    distributed: bool,
    /// Start from these weights instead of a random initialisation: a state dict with
    /// the model's names, written by kiln or by PyTorch (`safetensors.torch.save_file(
    /// model.state_dict(), path)`). Not for the GAN or --csv.
    #[arg(long)]
    init: Option<PathBuf>,
    /// The dropout probability of the CNN (default 0.25) or MLP (0.2); 0 turns it off.
    /// The initial weights for a seed are the same at every value.
    #[arg(long)]
    dropout: Option<f64>,
    /// Scale each step's gradients so that their joint L2 norm is at most this (PyTorch's
    /// `clip_grad_norm_`), computed on the device: no sync point. Not for the GAN or
    /// --csv.
    #[arg(long)]
    clip_grad_norm: Option<f64>,
    /// Train the MLP on a CSV of your own instead (`kiln train mlp --csv data.csv
    /// --target label`): numeric feature columns, and a target column of classes or
    /// (with `--task regress`) numbers. The rows are split (stratified by class) into
    /// train, validation and test parts, scaled, and the test metrics printed;
    /// model.safetensors keeps the scaler and names for `kiln predict`.
    #[arg(long)]
    csv: Option<PathBuf>,
    #[command(flatten)]
    table: crate::tabular::CsvTrainArgs,
}

/// Why `--clip-grad-norm` cannot be `value` for `model`, if it cannot: `kiln train` and
/// `kiln profile` take it alike.
pub fn clip_grad_norm_refusal(model: Model, value: Option<f64>) -> Option<String> {
    let v = value?;
    if !(v.is_finite() && v > 0.0) {
        return Some(format!(
            "--clip-grad-norm must be a positive, finite number, got {v}"
        ));
    }
    (model == Model::Gan).then(|| "--clip-grad-norm is not available for the GAN".into())
}

/// Defaults measured on the bundled data (README): 24 epochs of Adam at 2e-3 with
/// cosine decay reach the CNN's 98% target within three minutes on two cores.
pub const IMAGE_BATCH: usize = 64;
pub const IMAGE_LR: f64 = 2e-3;
/// The language models: windows of 64 characters, 32 to a batch.
pub const LM_CONTEXT: usize = 64;
pub const LM_BATCH: usize = 32;

/// The classifier `kiln train cnn|mlp` trains, with dropout `p` or the model's default.
pub fn image_model(
    model: Model,
    device: &Device,
    rng: &mut Rng,
    dropout: Option<f64>,
) -> Result<kiln_nn::layers::Sequential> {
    match model {
        Model::Mlp => models::mlp(device, rng, dropout.unwrap_or(models::MLP_DROPOUT)),
        _ => models::cnn(device, rng, dropout.unwrap_or(models::CNN_DROPOUT)),
    }
}

/// The language model `kiln train lstm|gru|transformer` trains, and its learning rate.
pub fn char_lm(
    model: Model,
    vocab: usize,
    device: &Device,
    rng: &mut Rng,
) -> Result<(crate::char_lm::CharLm, f64)> {
    use crate::char_lm::CharLm;
    use kiln_nn::layers::RnnKind;
    Ok(match model {
        Model::Lstm => (
            CharLm::recurrent(RnnKind::Lstm, vocab, 256, LM_CONTEXT, device, rng)?,
            3e-3,
        ),
        Model::Gru => (
            CharLm::recurrent(RnnKind::Gru, vocab, 256, LM_CONTEXT, device, rng)?,
            3e-3,
        ),
        _ => (
            CharLm::transformer(vocab, 128, 4, 3, LM_CONTEXT, device, rng)?,
            2e-3,
        ),
    })
}

/// `kiln train`'s divergence guard: a window of steps averaging this many times the
/// first step's loss stops training (see `FitConfig::divergence_factor`).
pub const DIVERGENCE_FACTOR: f64 = 100.0;

impl TrainArgs {
    /// Refuses arguments that would train nothing or nonsense, before any data is read
    /// or any time spent.
    fn validate(&self) -> Result<()> {
        let refuse = |reason: String| {
            Err(kiln::Error::InvalidArgument {
                op: "train",
                reason,
            })
        };
        if self.csv.is_some() {
            if self.model != Model::Mlp {
                return refuse(
                    format!("--csv trains the mlp, not the {:?}", self.model).to_lowercase(),
                );
            }
            let others = [
                ("--data", self.data.is_some()),
                ("--init", self.init.is_some()),
                ("--resume", self.resume.is_some()),
                ("--distributed", self.distributed),
                ("--dropout", self.dropout.is_some()),
                ("--clip-grad-norm", self.clip_grad_norm.is_some()),
            ];
            if let Some((flag, _)) = others.iter().find(|(_, set)| *set) {
                return refuse(format!("{flag} is not available with --csv"));
            }
        }
        if let Some(p) = self.dropout {
            if !matches!(self.model, Model::Cnn | Model::Mlp) {
                let model = format!("{:?}", self.model).to_lowercase();
                return refuse(format!("--dropout is for the cnn and mlp, not the {model}"));
            }
            if !(0.0..1.0).contains(&p) {
                return refuse(format!("--dropout must be in [0, 1), got {p}"));
            }
        }
        if self.epochs == Some(0) {
            return refuse("--epochs must be at least 1".into());
        }
        if self.batch_size == Some(0) {
            return refuse("--batch-size must be at least 1".into());
        }
        if let Some(reason) = clip_grad_norm_refusal(self.model, self.clip_grad_norm) {
            return refuse(reason);
        }
        for (flag, value) in [("--lr", self.lr), ("--minutes", self.minutes)] {
            if let Some(v) = value.filter(|v| !(v.is_finite() && *v > 0.0)) {
                return refuse(format!("{flag} must be a positive, finite number, got {v}"));
            }
        }
        Ok(())
    }
}

/// Fails now, not after training, when the checkpoint could not be written to `dir`.
fn check_writable(dir: &std::path::Path) -> Result<()> {
    let probe = dir.join(".kiln-write-check");
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| kiln::Error::Io {
            op: "train",
            path: dir.display().to_string(),
            reason: format!("the checkpoint could not be written here: {e}"),
        })
}

/// Writes a finished run's checkpoint, unless the run took no optimizer step or left a
/// parameter non-finite: such a run never replaces a checkpoint an earlier run wrote.
pub fn save_trained(
    path: &std::path::Path,
    state: &[(String, Tensor)],
    metadata: &HashMap<String, String>,
    steps: usize,
) -> Result<()> {
    if steps == 0 {
        let reason = format!(
            "the run took no optimizer step; {} was left as it was",
            path.display()
        );
        return Err(kiln::Error::InvalidArgument {
            op: "train",
            reason,
        });
    }
    for (name, t) in state {
        if t.to_f64_vec()?.iter().any(|v| !v.is_finite()) {
            let name = name.clone();
            return Err(kiln::Error::NonFiniteParameter { op: "train", name });
        }
    }
    save_checkpoint(path, state, metadata)
}

/// Loads `path` into the model's parameters and buffers and the optimizer's state, and
/// returns where its run stood; refuses a run that already did `epochs`.
fn resume(
    path: &std::path::Path,
    model: &dyn Module,
    optimizer: &mut dyn Optimizer,
    epochs: usize,
) -> Result<RunState> {
    let checkpoint = load_checkpoint(path)?;
    let run = RunState::from_metadata(&checkpoint.metadata)?;
    if run.epochs_done >= epochs {
        let reason = format!(
            "{} holds {} epochs already; --epochs is the total to reach",
            path.display(),
            run.epochs_done
        );
        return Err(kiln::Error::InvalidArgument {
            op: "train",
            reason,
        });
    }
    restore(&checkpoint, &model.state_dict())?;
    optimizer.load_state(&checkpoint.optimizer_state())?;
    println!(
        "resumed from {} after epoch {}",
        path.display(),
        run.epochs_done
    );
    Ok(run)
}

/// Loads `--init`'s weights into `model`, strictly (every name, shape and dtype).
fn start_from(init: Option<&std::path::Path>, model: &dyn Module) -> Result<()> {
    if let Some(path) = init {
        restore(&kiln_nn::train::load_pytorch(path)?, &model.state_dict())?;
        println!("starting from the weights in {}", path.display());
    }
    Ok(())
}

/// This process's part in a `--distributed` run: its data-parallel group, or `None` for
/// a run of its own.
struct Ranks(Option<DataParallel>);

impl Ranks {
    /// Rank 0, or a run of its own: the process that prints and writes files.
    fn first(&self) -> bool {
        self.0.as_ref().is_none_or(DataParallel::is_first)
    }

    /// `loader` as this rank's share, in a distributed run.
    fn shard<'a>(&self, loader: DataLoader<'a>) -> Result<DataLoader<'a>> {
        match &self.0 {
            Some(dp) => loader.sharded(dp.rank(), dp.size()),
            None => Ok(loader),
        }
    }

    /// The default batch per rank: a single process's `single` shared between the ranks.
    fn default_batch(&self, single: usize) -> usize {
        single.div_ceil(self.0.as_ref().map_or(1, DataParallel::size))
    }

    /// " per rank, N ranks" after the batch size in a distributed run's first line.
    fn per_rank(&self) -> String {
        match &self.0 {
            Some(dp) => format!(" per rank, {} ranks", dp.size()),
            None => String::new(),
        }
    }

    /// A distinct random stream per rank for the augmentation.
    fn stream(&self) -> u64 {
        self.0.as_ref().map_or(0, |dp| dp.rank() as u64) << 56
    }
}

/// Trains on a CPU pool thread, so that the CPU backend's ops split their work with the
/// loop's own thread; an MPI rank stays on the thread that started MPI, which wants
/// every call from it.
pub fn run(args: TrainArgs) -> Result<()> {
    if args.distributed {
        return train(args);
    }
    kiln::backend::run_on_cpu_pool(|| train(args))
}

fn train(args: TrainArgs) -> Result<()> {
    args.validate()?;
    if args.distributed && args.model == Model::Gan {
        return Err(kiln::Error::Unsupported {
            op: "train",
            reason: "--distributed is not available for the GAN".into(),
        });
    }
    let ranks = Ranks(match args.distributed {
        true => Some(crate::distributed::join()?),
        false => None,
    });
    let device = Device::parse(&args.device)?;
    let name = format!("{:?}", args.model).to_lowercase();
    let out = args.out.join(&name);
    if ranks.first() {
        crate::out_dir::create("train", &out)?;
        check_writable(&out)?;
    }
    if let Some(csv) = &args.csv {
        return crate::tabular::train(crate::tabular::Run {
            csv,
            args: &args.table,
            device: &device,
            epochs: args.epochs,
            batch_size: args.batch_size,
            lr: args.lr,
            seed: args.seed,
            out: &out,
            minutes: args.minutes,
        });
    }
    if matches!(args.model, Model::Lstm | Model::Gru | Model::Transformer) {
        return run_char_lm(&args, &name, &out, &device, &ranks);
    }
    let (data, source) = match &args.data {
        Some(dir) => (load_mnist_dir(dir)?, dir.display().to_string()),
        None => (mnist10k()?, "bundled mnist10k".to_string()),
    };
    if args.model == Model::Gan {
        if args.init.is_some() {
            return Err(kiln::Error::Unsupported {
                op: "train",
                reason: "--init is not available for the GAN".into(),
            });
        }
        if args.resume.is_some() {
            return Err(kiln::Error::Unsupported {
                op: "train",
                reason: "--resume is not available for the GAN yet".into(),
            });
        }
        let options = crate::gan::GanOptions {
            epochs: args.epochs.unwrap_or(60),
            batch_size: args.batch_size.unwrap_or(64),
            lr: args.lr.unwrap_or(2e-4),
            seed: args.seed,
            classifier: &args.classifier,
            out: &out,
            minutes: args.minutes,
        };
        return crate::gan::run(data, &device, options);
    }
    let Mnist {
        train_images,
        train_labels,
        test_images,
        test_labels,
    } = data;
    let (train, val) = TensorDataset::new(train_images, train_labels)?.split(0.1)?;
    let test = TensorDataset::new(test_images, test_labels)?;

    let mut rng = Rng::new(args.seed);
    // The language models returned above; what is left reads images.
    let model = image_model(args.model, &device, &mut rng, args.dropout)?;
    start_from(args.init.as_deref(), &model)?;
    let (epochs, batch_size, lr) = (
        args.epochs.unwrap_or(24),
        args.batch_size
            .unwrap_or_else(|| ranks.default_batch(IMAGE_BATCH)),
        args.lr.unwrap_or(IMAGE_LR),
    );
    if ranks.first() {
        println!(
            "training {name} ({} parameters) on {source}: {} train / {} validation / {} test samples, device {device}, {epochs} epochs, batch {batch_size}{}, lr {lr}",
            model.num_parameters(),
            train.inputs.dims()[0],
            val.inputs.dims()[0],
            test.inputs.dims()[0],
            ranks.per_rank(),
        );
    }
    // Random shifts of up to two pixels: the training set is small, and digits and
    // garments keep their class when moved a little.
    let (seed, stream) = (args.seed, ranks.stream());
    let shift: kiln_nn::data::Transform = Box::new(move |x, epoch, batch| {
        random_translate(x, 2, seed, stream | (epoch << 32) | batch as u64)
    });
    let train_loader = ranks.shard(
        DataLoader::new(&train, batch_size, &device)?
            .shuffled(args.seed)
            .with_transform(shift),
    )?;
    let val_loader = ranks.shard(DataLoader::new(&val, 256, &device)?)?;
    let test_loader = DataLoader::new(&test, 256, &device)?;
    let mut optimizer = Adam::new(model.named_parameters(), lr);
    let resumed = match &args.resume {
        Some(path) => Some(resume(path, &model, &mut optimizer, epochs)?),
        None => None,
    };
    let mut schedule = CosineAnnealing::new(epochs, lr * 0.02);
    let config = FitConfig {
        epochs,
        early_stopping: Some(EarlyStopping {
            patience: 6,
            min_delta: 1e-4,
            restore_best: true,
        }),
        verbose: true,
        max_seconds: args.minutes.map(|m| m * 60.0),
        divergence_factor: Some(DIVERGENCE_FACTOR),
        check_inputs: false,
        checkpoint_dir: Some(out.to_path_buf()),
        resume: resumed,
        data_parallel: ranks.0.clone(),
        callbacks: Vec::new(),
        clip_grad_norm: args.clip_grad_norm,
    };
    let start = Instant::now();
    let history = fit(
        &model,
        &mut optimizer,
        Some(&mut schedule),
        &train_loader,
        Some(&val_loader),
        &classification_step,
        &config,
    )?;
    // Every rank holds the same weights now: rank 0 alone tests and reports them.
    if !ranks.first() {
        return Ok(());
    }
    let (test_loss, test_accuracy) = evaluate(&model, &test_loader, &classification_step)?;
    let seconds = start.elapsed().as_secs_f64();

    let state = training_state(&model, &optimizer);
    let metadata = HashMap::from([
        ("model".to_string(), name.clone()),
        ("epochs".to_string(), history.epochs.len().to_string()),
        ("best_epoch".to_string(), history.best_epoch.to_string()),
        (
            "test_accuracy".to_string(),
            format!("{:.4}", test_accuracy.unwrap_or(0.0)),
        ),
    ]);
    let steps = history.epochs.iter().map(|e| e.steps).sum();
    save_trained(&out.join("model.safetensors"), &state, &metadata, steps)?;
    plot_history(&history, &name, out.join("curves.png"))?;
    println!(
        "trained in {seconds:.1}s (best epoch {}); test loss {test_loss:.4}",
        history.best_epoch
    );
    println!(
        "wrote {}/model.safetensors (best epoch's weights), curves.png, and last.safetensors and best.safetensors (to --resume from)",
        out.display()
    );
    println!("test accuracy: {:.4}", test_accuracy.unwrap_or(0.0));
    Ok(())
}

/// Trains a character-level language model and prints a sample.
fn run_char_lm(
    args: &TrainArgs,
    name: &str,
    out: &std::path::Path,
    device: &Device,
    ranks: &Ranks,
) -> Result<()> {
    use kiln_nn::data::{next_token_windows, tinyshakespeare, CharVocab};

    let text = tinyshakespeare();
    let vocab = CharVocab::from_text(text);
    let ids = vocab.encode(text)?;
    let split = ids.len() * 9 / 10;
    let mut rng = Rng::new(args.seed);
    let context = LM_CONTEXT;
    let (model, default_lr) = char_lm(args.model, vocab.len(), device, &mut rng)?;
    start_from(args.init.as_deref(), &model)?;
    let (train, val) = (
        next_token_windows(&ids[..split], context)?,
        next_token_windows(&ids[split..], context)?,
    );
    let (epochs, batch_size) = (
        args.epochs.unwrap_or(20),
        args.batch_size
            .unwrap_or_else(|| ranks.default_batch(LM_BATCH)),
    );
    let lr = args.lr.unwrap_or(default_lr);
    let minutes = args.minutes.unwrap_or(10.0);
    if ranks.first() {
        println!(
            "training {name} ({} parameters) on tinyshakespeare ({} characters, vocabulary {}): {} train / {} validation windows of {context}, device {device}, batch {batch_size}{}, lr {lr}, at most {minutes} minutes",
            model.num_parameters(),
            ids.len(),
            vocab.len(),
            train.inputs.dims()[0],
            val.inputs.dims()[0],
            ranks.per_rank(),
        );
    }
    let train_loader =
        ranks.shard(DataLoader::new(&train, batch_size, device)?.shuffled(args.seed))?;
    let val_loader = ranks.shard(DataLoader::new(&val, 128, device)?)?;
    let mut optimizer = Adam::new(model.named_parameters(), lr);
    let resumed = match &args.resume {
        Some(path) => Some(resume(path, &model, &mut optimizer, epochs)?),
        None => None,
    };
    let early = EarlyStopping {
        patience: 3,
        min_delta: 1e-3,
        restore_best: true,
    };
    let config = FitConfig {
        epochs,
        early_stopping: Some(early),
        verbose: true,
        max_seconds: Some(minutes * 60.0),
        divergence_factor: Some(DIVERGENCE_FACTOR),
        check_inputs: false,
        checkpoint_dir: Some(out.to_path_buf()),
        resume: resumed,
        data_parallel: ranks.0.clone(),
        callbacks: Vec::new(),
        clip_grad_norm: args.clip_grad_norm,
    };
    let start = Instant::now();
    let history = fit(
        &model,
        &mut optimizer,
        None,
        &train_loader,
        Some(&val_loader),
        &next_token_step,
        &config,
    )?;
    // Early stopping restored the best epoch's weights, which `fit` validated already.
    let val_loss = history
        .epochs
        .get(history.best_epoch.saturating_sub(1))
        .and_then(|m| m.val_loss)
        .ok_or_else(|| kiln::Error::InvalidArgument {
            op: "train",
            reason: "training ran no epoch".into(),
        })?;
    let seconds = start.elapsed().as_secs_f64();
    if !ranks.first() {
        return Ok(());
    }
    let prompt = vocab.encode("ROMEO:")?;
    let sample = format!(
        "ROMEO:{}",
        vocab.decode(&model.sample(&prompt, 400, 0.8, args.seed, device)?)
    );
    let metadata = HashMap::from([
        ("model".to_string(), name.to_string()),
        ("validation_loss".to_string(), format!("{val_loss:.4}")),
    ]);
    let steps = history.epochs.iter().map(|e| e.steps).sum();
    let state = training_state(&model, &optimizer);
    save_trained(&out.join("model.safetensors"), &state, &metadata, steps)?;
    plot_history(&history, name, out.join("curves.png"))?;
    let io = |e: std::io::Error| kiln::Error::Io {
        op: "train",
        path: out.display().to_string(),
        reason: e.to_string(),
    };
    std::fs::write(out.join("sample.txt"), &sample).map_err(io)?;
    println!("--- sample ---\n{sample}\n--------------");
    println!("trained in {seconds:.1}s (best epoch {}); wrote {}/model.safetensors, curves.png, sample.txt, and last.safetensors and best.safetensors (to --resume from)", history.best_epoch, out.display());
    println!("validation loss: {val_loss:.4} nats per character");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: TrainArgs,
    }

    fn check(line: &[&str]) -> Result<()> {
        let cli = Cli::try_parse_from(std::iter::once("kiln").chain(line.iter().copied()))
            .expect("the arguments parse");
        cli.args.validate()
    }

    #[test]
    fn arguments_that_would_train_nothing_are_refused_before_any_work() {
        for bad in [
            &["--epochs", "0"][..],
            &["--batch-size", "0"],
            &["--lr=-1"],
            &["--lr", "0"],
            &["--lr", "inf"],
            &["--lr", "NaN"],
            &["--minutes=-5"],
            &["--minutes", "0"],
        ] {
            let e = check(bad).unwrap_err();
            assert!(
                matches!(e, kiln::Error::InvalidArgument { op: "train", .. }),
                "{bad:?}: {e}"
            );
        }
        check(&["mlp", "--epochs", "1", "--lr", "1e-3", "--minutes", "0.5"]).unwrap();
    }

    #[test]
    fn a_run_without_a_step_or_with_non_finite_weights_keeps_the_old_checkpoint() {
        let dir = std::env::temp_dir().join(format!("kiln-save-trained-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        check_writable(&dir).unwrap();
        let path = dir.join("model.safetensors");
        let cpu = Device::cpu();
        let good = vec![(
            "w".to_string(),
            Tensor::from_vec(vec![1.0f32], [1], &cpu).unwrap(),
        )];
        save_trained(&path, &good, &HashMap::new(), 1).unwrap();
        let nan = vec![(
            "w".to_string(),
            Tensor::from_vec(vec![f32::NAN], [1], &cpu).unwrap(),
        )];
        let e = save_trained(&path, &nan, &HashMap::new(), 5).unwrap_err();
        assert!(matches!(e, kiln::Error::NonFiniteParameter { .. }), "{e}");
        assert!(save_trained(&path, &good, &HashMap::new(), 0).is_err());
        let kept = load_checkpoint(&path).unwrap();
        assert_eq!(kept.tensors["w"].to_vec::<f32>().unwrap(), vec![1.0]);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(check_writable(&dir.join("absent")).is_err());
    }
}
