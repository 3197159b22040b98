//! The training loop.

use crate::data::DataLoader;
use crate::distributed::{self, DataParallel, ExchangeTime, GradientBuckets};
use crate::module::{Module, ModuleExt};
use crate::optim::{clip_grad_norm, LrScheduler, Optimizer};
use crate::train::{
    load_checkpoint, save_checkpoint, training_state, Callback, Control, EpochEnd, RunState,
    StepEnd,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln::{Error, Gradients, Result, Tensor};
use std::io::IsTerminal;
use std::time::Instant;

/// What one batch produced: the loss to minimise and, for classifiers, how many
/// predictions were right. Both stay on the device: `fit` reads them back a window of
/// steps at a time, not once per step.
pub struct StepOutput {
    /// The loss to minimise (one element).
    pub loss: Tensor,
    /// The number of right predictions, as a one-element f32 tensor.
    pub correct: Option<Tensor>,
    /// How many samples (or positions) the loss averages over.
    pub count: usize,
}

/// Steps whose losses `fit` reads back together: one sync point per window of steps
/// instead of one per step.
const READBACK_EVERY: usize = 32;

/// Losses and right predictions of the steps not yet read back.
#[derive(Default)]
struct Pending {
    losses: Vec<Tensor>,
    correct: Vec<Tensor>,
    counts: Vec<usize>,
    /// The step number (1-based, within the epoch) of the first pending step.
    first_step: usize,
}

/// What a window of steps produced, on the host.
struct Window {
    first_step: usize,
    losses: Vec<f64>,
    counts: Vec<usize>,
    correct: Option<f64>,
}

/// Sums over the windows read so far: loss times count, right predictions, count.
#[derive(Default)]
struct Totals {
    loss: f64,
    correct: f64,
    count: usize,
    any_correct: bool,
}

impl Pending {
    fn push(&mut self, step: usize, out: StepOutput) -> Result<()> {
        if self.losses.is_empty() {
            self.first_step = step;
        }
        self.losses.push(out.loss.detach().reshape([1])?);
        if let Some(c) = out.correct {
            self.correct.push(c.reshape([1])?);
        }
        self.counts.push(out.count);
        Ok(())
    }

    /// Reads the pending steps back, one readback for the losses and one for the right
    /// predictions, and starts a new window.
    fn read(&mut self) -> Result<Window> {
        let pending = std::mem::take(self);
        let losses = match pending.losses.is_empty() {
            true => Vec::new(),
            false => Tensor::cat(&pending.losses, 0)?.to_f64_vec()?,
        };
        let correct = match pending.correct.is_empty() {
            true => None,
            false => Some(Tensor::cat(&pending.correct, 0)?.to_f64_vec()?.iter().sum()),
        };
        Ok(Window {
            first_step: pending.first_step,
            losses,
            counts: pending.counts,
            correct,
        })
    }
}

impl Window {
    fn mean(&self) -> f64 {
        self.losses.iter().sum::<f64>() / self.losses.len().max(1) as f64
    }

    /// `NonFiniteLoss` for the window's first NaN or infinite loss.
    fn check_finite(&self, epoch: usize) -> Result<()> {
        match self.losses.iter().position(|l| !l.is_finite()) {
            Some(i) => Err(Error::NonFiniteLoss {
                epoch,
                step: self.first_step + i,
                value: self.losses[i],
            }),
            None => Ok(()),
        }
    }
}

/// `ParameterNotFinite` for the first of the model's parameters that holds a NaN or an
/// infinity. On the device: each parameter times zero, summed (NaN exactly when one of
/// its elements is not finite), then one readback for all of them.
fn check_parameters(model: &dyn Module, epoch: usize, step: usize) -> Result<()> {
    let params = model.named_parameters();
    if params.is_empty() {
        return Ok(());
    }
    let flags = kiln::no_grad(|| {
        let each = params
            .iter()
            .map(|(_, p)| {
                p.mul_scalar(0.0)?
                    .sum_all()?
                    .to_dtype(kiln::DType::F32)?
                    .reshape([1])
            })
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&each, 0)?.to_f64_vec()
    })?;
    match flags.iter().position(|f| !f.is_finite()) {
        Some(i) => Err(Error::ParameterNotFinite {
            epoch,
            step,
            name: params[i].0.clone(),
        }),
        None => Ok(()),
    }
}

impl Totals {
    /// The totals of every rank together.
    fn over_ranks(self, dp: Option<&DataParallel>) -> Result<Totals> {
        let Some(dp) = dp else { return Ok(self) };
        let mut sums = [
            self.loss,
            self.correct,
            self.count as f64,
            self.any_correct as u8 as f64,
        ];
        distributed::sum_over_ranks(dp, &mut sums)?;
        Ok(Totals {
            loss: sums[0],
            correct: sums[1],
            count: sums[2] as usize,
            any_correct: sums[3] > 0.0,
        })
    }

    fn add(&mut self, window: &Window) {
        for (loss, &count) in window.losses.iter().zip(&window.counts) {
            self.loss += loss * count as f64;
            self.count += count;
        }
        if let Some(c) = window.correct {
            self.correct += c;
            self.any_correct = true;
        }
    }

    fn mean_loss(&self) -> f64 {
        self.loss / self.count.max(1) as f64
    }

    fn accuracy(&self) -> Option<f64> {
        self.any_correct
            .then(|| self.correct / self.count.max(1) as f64)
    }
}

/// One optimizer step on one batch, as `fit` takes it: `step` (forward and loss), the
/// backward pass, the gradients clipped to a joint norm of `clip_grad_norm` where given,
/// the update. Nothing is read back.
pub fn train_step(
    model: &dyn Module,
    optimizer: &mut dyn Optimizer,
    step: &dyn Fn(&dyn Module, &Tensor, &Tensor) -> Result<StepOutput>,
    x: &Tensor,
    y: &Tensor,
    clip_grad_norm: Option<f64>,
) -> Result<StepOutput> {
    let out = step(model, x, y)?;
    optimizer.step(&clipped(out.loss.backward()?, model, clip_grad_norm)?)?;
    Ok(out)
}

/// `grads` scaled to a joint norm of at most `max_norm`, where there is one
/// (`clip_grad_norm`: computed on the device, no sync point).
fn clipped(mut grads: Gradients, model: &dyn Module, max_norm: Option<f64>) -> Result<Gradients> {
    if let Some(max_norm) = max_norm {
        clip_grad_norm(&mut grads, &model.parameters(), max_norm)?;
    }
    Ok(grads)
}

/// The step of a classifier: cross-entropy of `model(x)` (logits `[n, classes]`)
/// against class ids `y`, and how many predictions were right.
pub fn classification_step(model: &dyn Module, x: &Tensor, y: &Tensor) -> Result<StepOutput> {
    let logits = model.forward(x)?;
    let loss = logits.cross_entropy(y)?;
    let correct = kiln::no_grad(|| {
        logits
            .argmax(-1, false)?
            .eq(y)?
            .to_dtype(kiln::DType::F32)?
            .sum_all()
    })?;
    Ok(StepOutput {
        loss,
        correct: Some(correct),
        count: y.elem_count(),
    })
}

/// The step of a regression model: mean squared error of `model(x)` (`[n, 1]` or
/// `[n]`) against the values `y` `[n]`.
pub fn regression_step(model: &dyn Module, x: &Tensor, y: &Tensor) -> Result<StepOutput> {
    let n = y.elem_count();
    let predicted = model.forward(x)?.reshape([n])?;
    Ok(StepOutput {
        loss: crate::loss::mse_loss(&predicted, &y.reshape([n])?)?,
        correct: None,
        count: n,
    })
}

/// The step of a language model: cross-entropy of the logits `[batch, time, vocab]`
/// against the next ids `y [batch, time]`, averaged over every position.
pub fn next_token_step(model: &dyn Module, x: &Tensor, y: &Tensor) -> Result<StepOutput> {
    let logits = model.forward(x)?;
    let (b, t, v) = (logits.dims()[0], logits.dims()[1], logits.dims()[2]);
    let loss = logits
        .reshape([b * t, v])?
        .cross_entropy(&y.reshape([b * t])?)?;
    Ok(StepOutput {
        loss,
        correct: None,
        count: b * t,
    })
}

/// Stops training when the monitored loss (the validation loss if there is a
/// validation loader, else the training loss) has not improved for `patience` epochs in
/// a row, as Keras's `EarlyStopping` and PyTorch Lightning's do.
///
/// An epoch improves when its loss is below the best so far by more than `min_delta`;
/// only then does the best move (to that loss) and the count of stale epochs restart.
/// So a loss that creeps down by less than `min_delta` an epoch still stops training
/// after `patience` epochs of it. scikit-learn's `tol` differs: there the best moves on
/// every decrease, however small, while improvements below `tol` still count as stale,
/// so it stops sooner on a slow creep with the same numbers.
#[derive(Clone, Copy, Debug)]
pub struct EarlyStopping {
    /// Epochs without an improvement before training stops.
    pub patience: usize,
    /// How far below the best loss an epoch's loss must be to count as an improvement
    /// (in the loss's units; 0 counts any decrease).
    pub min_delta: f64,
    /// When training ends, put back the weights of the epoch with the best loss.
    pub restore_best: bool,
}

#[derive(Clone)]
/// How `fit` trains: epochs, early stopping, time limit, guards, checkpoints,
/// resumption, data parallelism and hooks.
pub struct FitConfig {
    /// Epochs to train (the total, when resuming).
    pub epochs: usize,
    /// Stop when the monitored loss stops improving.
    pub early_stopping: Option<EarlyStopping>,
    /// Print one line per epoch.
    pub verbose: bool,
    /// Stop (after validating) once training has run this long.
    pub max_seconds: Option<f64>,
    /// Stop with `Error::Diverged` when a window of steps (32, as losses are read back)
    /// averages more than this many times the first step's loss: the sign of too large a
    /// learning rate, which a finite but enormous loss would otherwise hide. `kiln
    /// train` uses 100.
    pub divergence_factor: Option<f64>,
    /// Read every input batch back and stop at the first NaN or infinite element,
    /// naming it (`Error::NonFiniteInput`). Off by default: it is a sync point per step.
    pub check_inputs: bool,
    /// After every epoch write `last.safetensors` here, and `best.safetensors` when the
    /// monitored loss improves: the weights, the optimizer's state and the `RunState`,
    /// each written atomically, so an interrupted run keeps its finished epochs.
    pub checkpoint_dir: Option<std::path::PathBuf>,
    /// Continue a run whose weights and optimizer state the caller restored from its
    /// `last.safetensors`: epochs `epochs_done + 1 ..= epochs` run, after the schedule
    /// and early stopping have replayed the monitored losses (and, with
    /// `restore_best`, the best weights so far come from `best.safetensors`).
    pub resume: Option<RunState>,
    /// Train as one rank of a data-parallel group: the loaders must be
    /// `DataLoader::sharded` for this rank; rank 0's weights start every rank; gradients
    /// are averaged over the ranks every step; losses, accuracies and the decisions
    /// taken from them (early stopping, the time limit, the schedule) are the group's;
    /// only rank 0 prints and writes checkpoints. An error on one rank is not seen by the
    /// others, which would wait for it: the caller must end the group (kiln-dist's
    /// `MpiGroup::abort_with`).
    pub data_parallel: Option<DataParallel>,
    /// Hooks run after every step and every epoch (`Callback`), in this order.
    pub callbacks: Vec<std::sync::Arc<dyn Callback>>,
    /// Scale each step's gradients so that their joint L2 norm is at most this
    /// (`optim::clip_grad_norm`, on the device, no sync point); with `data_parallel`,
    /// after they are averaged, so every rank clips alike.
    pub clip_grad_norm: Option<f64>,
}

impl Default for FitConfig {
    fn default() -> Self {
        FitConfig {
            epochs: 10,
            early_stopping: None,
            verbose: true,
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
}

#[derive(Clone, Debug, PartialEq)]
/// What one epoch did.
pub struct EpochMetrics {
    /// 1-based.
    pub epoch: usize,
    /// The mean training loss over the epoch's samples.
    pub train_loss: f64,
    /// The share of right predictions, for classifiers.
    pub train_accuracy: Option<f64>,
    /// The validation loss, when there is a validation loader.
    pub val_loss: Option<f64>,
    /// The validation accuracy, for classifiers.
    pub val_accuracy: Option<f64>,
    /// The learning rate the epoch trained at.
    pub lr: f64,
    /// Optimizer steps taken this epoch (fewer than the loader's batches when the time
    /// limit cut the epoch short).
    pub steps: usize,
    /// Wall time of the epoch, validation included.
    pub seconds: f64,
    /// Data-parallel runs: this rank's time on the gradient exchange, within `seconds`.
    pub exchange: Option<ExchangeTime>,
    /// Figures the callbacks added (`EpochEnd::extra`).
    pub extra: Vec<(String, f64)>,
}

#[derive(Clone, Debug, Default)]
/// What `fit` did, epoch by epoch.
pub struct History {
    /// Each epoch's figures, in order.
    pub epochs: Vec<EpochMetrics>,
    /// The epoch (1-based) with the best monitored loss.
    pub best_epoch: usize,
    /// Early stopping ended training.
    pub stopped_early: bool,
    /// Training hit `max_seconds` (the last epoch may be partial).
    pub out_of_time: bool,
    /// A callback returned `Control::Stop`.
    pub stopped_by_callback: bool,
}

/// Mean loss and accuracy over every batch of `loader`, in evaluation mode and without
/// recording gradients; read back once, at the end.
pub fn evaluate(
    model: &dyn Module,
    loader: &DataLoader,
    step: &dyn Fn(&dyn Module, &Tensor, &Tensor) -> Result<StepOutput>,
) -> Result<(f64, Option<f64>)> {
    evaluate_over_ranks(model, loader, step, None)
}

/// `evaluate`, with the totals of every rank of `dp`.
fn evaluate_over_ranks(
    model: &dyn Module,
    loader: &DataLoader,
    step: &dyn Fn(&dyn Module, &Tensor, &Tensor) -> Result<StepOutput>,
    dp: Option<&DataParallel>,
) -> Result<(f64, Option<f64>)> {
    if loader.num_batches() == 0 {
        let reason = "the data has no batches to evaluate".into();
        return Err(Error::InvalidArgument {
            op: "evaluate",
            reason,
        });
    }
    model.eval();
    let result = kiln::no_grad(|| -> Result<(f64, Option<f64>)> {
        let mut pending = Pending::default();
        for (i, batch) in loader.epoch(0).enumerate() {
            let (x, y) = batch?;
            pending.push(i + 1, step(model, &x, &y)?)?;
        }
        let mut totals = Totals::default();
        totals.add(&pending.read()?);
        let totals = totals.over_ranks(dp)?;
        Ok((totals.mean_loss(), totals.accuracy()))
    });
    model.train();
    result
}

fn progress(batches: usize, epoch: usize, shown: bool) -> ProgressBar {
    if !shown || !std::io::stderr().is_terminal() {
        return ProgressBar::with_draw_target(Some(batches as u64), ProgressDrawTarget::hidden());
    }
    let bar = ProgressBar::new(batches as u64);
    let style =
        ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} loss {msg} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar.set_prefix(epoch.to_string());
    bar
}

/// Trains `model` with `optimizer` for `config.epochs` epochs over `train`, evaluating
/// on `val` after each. `step` runs the model on a batch and returns its loss. Losses
/// are read back every 32 steps and at the end of each epoch, not after every step, so
/// a GPU is never left idle waiting for the host; a NaN or infinite loss stops training
/// there with `Error::NonFiniteLoss` naming the step where it first appeared (the
/// steps after it in the same window have run), and a parameter that is no longer
/// finite with `Error::ParameterNotFinite` naming it. See `FitConfig` for the
/// divergence guard and the check of the inputs.
pub fn fit(
    model: &dyn Module,
    optimizer: &mut dyn Optimizer,
    mut scheduler: Option<&mut dyn LrScheduler>,
    train: &DataLoader,
    val: Option<&DataLoader>,
    step: &dyn Fn(&dyn Module, &Tensor, &Tensor) -> Result<StepOutput>,
    config: &FitConfig,
) -> Result<History> {
    if train.num_batches() == 0 {
        let reason = "the training data has no batches (an empty dataset, or fewer samples than a batch with drop_last)".into();
        return Err(Error::InvalidArgument { op: "fit", reason });
    }
    let dp = config.data_parallel.as_ref();
    let buckets = match dp {
        Some(dp) => Some(start_data_parallel(dp, model, train, val)?),
        None => None,
    };
    let first_rank = dp.is_none_or(DataParallel::is_first);
    let verbose = config.verbose && first_rank;
    if let (Some(dp), Some(b), true) = (dp, &buckets, verbose) {
        println!(
            "data-parallel over {} ranks: {:.2} MB of gradients per step in {} buckets",
            dp.size(),
            b.bytes_per_step as f64 / 1e6,
            b.num_buckets()
        );
    }
    let mut history = History::default();
    // The first step's loss, which the divergence guard compares every window against.
    let mut start_loss: Option<f64> = None;
    let mut check = |window: &Window, epoch: usize| -> Result<()> {
        window.check_finite(epoch)?;
        if window.losses.is_empty() {
            return Ok(());
        }
        // A non-finite gradient shows in the parameters it updated.
        check_parameters(model, epoch, window.first_step + window.losses.len() - 1)?;
        let Some(factor) = config.divergence_factor else {
            return Ok(());
        };
        // The group's means, so that every rank stops together.
        let mut means = [window.mean(), window.losses[0]];
        if let Some(dp) = dp {
            distributed::sum_over_ranks(dp, &mut means)?;
            means.iter_mut().for_each(|m| *m /= dp.size() as f64);
        }
        let start = *start_loss.get_or_insert(means[1]);
        match start > 0.0 && means[0] > factor * start {
            true => Err(Error::Diverged {
                epoch,
                step: window.first_step + window.losses.len() - 1,
                loss: means[0],
                start,
                factor,
            }),
            false => Ok(()),
        }
    };
    let mut best = f64::INFINITY;
    let mut best_weights: Option<Vec<(Tensor, Tensor)>> = None;
    let mut stale = 0;
    let min_delta = config.early_stopping.map_or(0.0, |e| e.min_delta);
    let restore_best = config.early_stopping.is_some_and(|e| e.restore_best);
    // A resumed run replays what its epochs monitored: the schedule and the early-
    // stopping count come back as they were.
    let mut monitored_so_far = Vec::new();
    if let Some(resume) = &config.resume {
        for (i, &m) in resume.monitored.iter().enumerate() {
            if let Some(s) = scheduler.as_deref_mut() {
                s.step(optimizer, Some(m));
            }
            if m < best - min_delta {
                (best, history.best_epoch, stale) = (m, i + 1, 0);
            } else {
                stale += 1;
            }
        }
        monitored_so_far = resume.monitored.clone();
        let best_file = config
            .checkpoint_dir
            .as_ref()
            .map(|d| d.join("best.safetensors"));
        if let Some(path) = best_file.filter(|p| restore_best && p.exists()) {
            best_weights = Some(saved_weights(model, &path)?);
        }
    }
    let first_epoch = config.resume.as_ref().map_or(1, |r| r.epochs_done + 1);
    let started = Instant::now();
    model.train();
    for epoch in first_epoch..=config.epochs {
        let start = Instant::now();
        let bar = progress(train.num_batches(), epoch, first_rank);
        let (mut pending, mut totals) = (Pending::default(), Totals::default());
        let mut steps = 0;
        for (i, batch) in train.epoch(epoch as u64).enumerate() {
            let (x, y) = batch?;
            if config.check_inputs {
                let values = x.to_f64_vec()?;
                if let Some(index) = values.iter().position(|v| !v.is_finite()) {
                    bar.abandon();
                    let value = values[index];
                    let step = i + 1;
                    return Err(Error::NonFiniteInput {
                        epoch,
                        step,
                        index,
                        value,
                    });
                }
            }
            let out = match &buckets {
                Some(buckets) => {
                    let out = step(model, &x, &y)?;
                    let grads = buckets.backward(&out.loss)?;
                    optimizer.step(&clipped(grads, model, config.clip_grad_norm)?)?;
                    out
                }
                None => train_step(model, optimizer, step, &x, &y, config.clip_grad_norm)?,
            };
            steps += 1;
            let mut stop = false;
            for callback in &config.callbacks {
                let end = StepEnd {
                    epoch,
                    step: i + 1,
                    output: &out,
                    model,
                };
                stop |= callback.on_step_end(&end).inspect_err(|_| bar.abandon())? == Control::Stop;
            }
            pending.push(i + 1, out)?;
            bar.inc(1);
            if pending.losses.len() >= READBACK_EVERY {
                let window = pending.read()?;
                check(&window, epoch).inspect_err(|_| bar.abandon())?;
                totals.add(&window);
                bar.set_message(format!("{:.4}", totals.mean_loss()));
            }
            if out_of_time(config.max_seconds, started, dp)? {
                history.out_of_time = true;
                break;
            }
            if stop {
                history.stopped_by_callback = true;
                break;
            }
        }
        let window = pending.read()?;
        check(&window, epoch).inspect_err(|_| bar.abandon())?;
        totals.add(&window);
        let totals = totals.over_ranks(dp)?;
        bar.finish_and_clear();
        if let Some(dp) = dp {
            distributed::average_buffers(dp, model)?;
        }
        let (val_loss, val_accuracy) = match val {
            Some(v) => {
                let (l, a) = evaluate_over_ranks(model, v, step, dp)?;
                // Not "no improvement": the model no longer computes numbers.
                if !l.is_finite() {
                    return Err(Error::NonFiniteValidationLoss { epoch, value: l });
                }
                (Some(l), a)
            }
            None => (None, None),
        };
        let metrics = EpochMetrics {
            epoch,
            train_loss: totals.mean_loss(),
            train_accuracy: totals.accuracy(),
            val_loss,
            val_accuracy,
            lr: optimizer.lr(),
            steps,
            seconds: start.elapsed().as_secs_f64(),
            exchange: buckets.as_ref().map(GradientBuckets::take_time),
            extra: Vec::new(),
        };
        let mut extra = Vec::new();
        for callback in &config.callbacks {
            let mut end = EpochEnd {
                metrics: &metrics,
                history: &history,
                model,
                extra: std::mem::take(&mut extra),
            };
            let control = callback.on_epoch_end(&mut end)?;
            extra = end.extra;
            history.stopped_by_callback |= control == Control::Stop;
        }
        let metrics = EpochMetrics { extra, ..metrics };
        if verbose {
            println!("{}", describe(&metrics));
        }
        let monitored = metrics.val_loss.unwrap_or(metrics.train_loss);
        history.epochs.push(metrics);
        if let Some(s) = scheduler.as_deref_mut() {
            s.step(optimizer, Some(monitored));
        }
        monitored_so_far.push(monitored);
        let improved = monitored < best - min_delta;
        if let Some(dir) = config.checkpoint_dir.as_ref().filter(|_| first_rank) {
            let run = RunState {
                epochs_done: epoch,
                monitored: monitored_so_far.clone(),
            };
            let state = training_state(model, optimizer);
            save_checkpoint(dir.join("last.safetensors"), &state, &run.to_metadata())?;
            if improved {
                save_checkpoint(dir.join("best.safetensors"), &state, &run.to_metadata())?;
            }
        }
        if improved {
            best = monitored;
            history.best_epoch = epoch;
            stale = 0;
            if restore_best {
                // `detach` shares the current data; later updates replace the parameter's
                // data, so these handles keep this epoch's values.
                best_weights = Some(
                    model
                        .state_dict()
                        .into_iter()
                        .map(|(_, t)| (t.clone(), t.detach()))
                        .collect(),
                );
            }
        } else {
            stale += 1;
        }
        if history.stopped_by_callback {
            if verbose {
                println!("stopped by a callback after epoch {epoch}");
            }
            break;
        }
        if history.out_of_time {
            if verbose {
                println!(
                    "time limit reached after {:.0}s",
                    started.elapsed().as_secs_f64()
                );
            }
            break;
        }
        if let Some(es) = config.early_stopping {
            if stale >= es.patience {
                history.stopped_early = true;
                if verbose {
                    println!(
                        "early stopping: no improvement for {} epochs; best epoch {}",
                        es.patience, history.best_epoch
                    );
                }
                break;
            }
        }
    }
    if let Some(weights) = best_weights {
        kiln::no_grad(|| weights.iter().try_for_each(|(p, saved)| p.set_data(saved)))?;
    }
    Ok(history)
}

/// Readies a data-parallel run: checks that the loaders are sharded for this rank and
/// that every rank holds the same model and as many batches, gives every rank rank 0's
/// weights, and forms the gradient buckets.
fn start_data_parallel(
    dp: &DataParallel,
    model: &dyn Module,
    train: &DataLoader,
    val: Option<&DataLoader>,
) -> Result<GradientBuckets> {
    let mine = Some((dp.rank(), dp.size()));
    let sharded = train.shard == mine && val.is_none_or(|v| v.shard == mine);
    distributed::check_agreement(
        dp,
        model,
        sharded,
        train.num_batches(),
        val.map_or(0, DataLoader::num_batches),
    )?;
    distributed::broadcast_state(dp, model)?;
    Ok(GradientBuckets::new(model, dp))
}

/// Whether training has run `limit` seconds: on any rank, when data-parallel, so that
/// every rank stops after the same step.
fn out_of_time(limit: Option<f64>, started: Instant, dp: Option<&DataParallel>) -> Result<bool> {
    let Some(limit) = limit else { return Ok(false) };
    let mut late = [(started.elapsed().as_secs_f64() >= limit) as u8 as f64];
    if let Some(dp) = dp {
        distributed::sum_over_ranks(dp, &mut late)?;
    }
    Ok(late[0] > 0.0)
}

/// The model's parameters and buffers paired with their values in the checkpoint at
/// `path` (on each one's device): the best weights of a run being resumed.
fn saved_weights(model: &dyn Module, path: &std::path::Path) -> Result<Vec<(Tensor, Tensor)>> {
    let saved = load_checkpoint(path)?;
    model
        .state_dict()
        .into_iter()
        .map(|(name, t)| {
            let value = saved
                .tensors
                .get(&name)
                .ok_or_else(|| Error::StateMismatch {
                    op: "fit",
                    missing: vec![name.clone()],
                    unexpected: Vec::new(),
                    mismatched: Vec::new(),
                })?;
            Ok((t.clone(), value.to_device(&t.device())?))
        })
        .collect()
}

fn describe(m: &EpochMetrics) -> String {
    let mut line = format!("epoch {:>3}  train loss {:.4}", m.epoch, m.train_loss);
    if let Some(a) = m.train_accuracy {
        line += &format!("  train acc {a:.4}");
    }
    if let Some(l) = m.val_loss {
        line += &format!("  val loss {l:.4}");
    }
    if let Some(a) = m.val_accuracy {
        line += &format!("  val acc {a:.4}");
    }
    for (name, value) in &m.extra {
        line += &format!("  {name} {value:.4}");
    }
    line += &format!("  lr {:.2e}  {} steps  {:.2}s", m.lr, m.steps, m.seconds);
    if let Some(e) = m.exchange {
        let total = e.staging_seconds + e.waiting_seconds;
        let per_step = |s: f64| 1e3 * s / m.steps.max(1) as f64;
        line += &format!(
            "  exchange {:.1}% ({:.2} ms/step: staging {:.2}, waiting {:.2})",
            100.0 * total / m.seconds.max(f64::MIN_POSITIVE),
            per_step(total),
            per_step(e.staging_seconds),
            per_step(e.waiting_seconds)
        );
    }
    line
}
