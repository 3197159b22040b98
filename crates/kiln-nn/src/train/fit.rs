//! The training loop.

use crate::data::DataLoader;
use crate::module::{Module, ModuleExt};
use crate::optim::{LrScheduler, Optimizer};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln::{Error, Result, Tensor};
use std::io::IsTerminal;
use std::time::Instant;

/// What one batch produced: the loss to minimise and, for classifiers, how many
/// predictions were right.
pub struct StepOutput {
    pub loss: Tensor,
    pub correct: Option<usize>,
    pub count: usize,
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
            .sum_all()?
            .item::<f32>()
    })?;
    Ok(StepOutput {
        loss,
        correct: Some(correct as usize),
        count: y.elem_count(),
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

/// Stops when the monitored loss (validation if there is one) has not improved by
/// more than `min_delta` for `patience` epochs; optionally puts back the best weights.
#[derive(Clone, Copy, Debug)]
pub struct EarlyStopping {
    pub patience: usize,
    pub min_delta: f64,
    pub restore_best: bool,
}

#[derive(Clone)]
pub struct FitConfig {
    pub epochs: usize,
    pub early_stopping: Option<EarlyStopping>,
    /// Print one line per epoch.
    pub verbose: bool,
    /// Stop (after validating) once training has run this long.
    pub max_seconds: Option<f64>,
}

impl Default for FitConfig {
    fn default() -> Self {
        FitConfig {
            epochs: 10,
            early_stopping: None,
            verbose: true,
            max_seconds: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: Option<f64>,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    pub lr: f64,
    /// Optimizer steps taken this epoch (fewer than the loader's batches when the time
    /// limit cut the epoch short).
    pub steps: usize,
    pub seconds: f64,
}

#[derive(Clone, Debug, Default)]
pub struct History {
    pub epochs: Vec<EpochMetrics>,
    /// The epoch (1-based) with the best monitored loss.
    pub best_epoch: usize,
    pub stopped_early: bool,
    /// Training hit `max_seconds` (the last epoch may be partial).
    pub out_of_time: bool,
}

/// Mean loss and accuracy over every batch of `loader`, in evaluation mode and without
/// recording gradients.
pub fn evaluate(
    model: &dyn Module,
    loader: &DataLoader,
    step: &dyn Fn(&dyn Module, &Tensor, &Tensor) -> Result<StepOutput>,
) -> Result<(f64, Option<f64>)> {
    model.eval();
    let result = kiln::no_grad(|| -> Result<(f64, Option<f64>)> {
        let (mut loss, mut correct, mut count, mut any_correct) = (0.0, 0usize, 0usize, false);
        for batch in loader.epoch(0) {
            let (x, y) = batch?;
            let out = step(model, &x, &y)?;
            loss += out.loss.to_f64_vec()?[0] * out.count as f64;
            if let Some(c) = out.correct {
                correct += c;
                any_correct = true;
            }
            count += out.count;
        }
        let count = count.max(1) as f64;
        Ok((loss / count, any_correct.then(|| correct as f64 / count)))
    });
    model.train();
    result
}

fn progress(batches: usize, epoch: usize) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
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
/// on `val` after each. `step` runs the model on a batch and returns its loss. A NaN or
/// infinite loss stops training with `Error::NonFiniteLoss` naming the step.
pub fn fit(
    model: &dyn Module,
    optimizer: &mut dyn Optimizer,
    mut scheduler: Option<&mut dyn LrScheduler>,
    train: &DataLoader,
    val: Option<&DataLoader>,
    step: &dyn Fn(&dyn Module, &Tensor, &Tensor) -> Result<StepOutput>,
    config: &FitConfig,
) -> Result<History> {
    let mut history = History::default();
    let mut best = f64::INFINITY;
    let mut best_weights: Option<Vec<(Tensor, Tensor)>> = None;
    let mut stale = 0;
    let started = Instant::now();
    model.train();
    for epoch in 1..=config.epochs {
        let start = Instant::now();
        let bar = progress(train.num_batches(), epoch);
        let (mut total, mut correct, mut count, mut any_correct) = (0.0, 0usize, 0usize, false);
        let mut steps = 0;
        for (i, batch) in train.epoch(epoch as u64).enumerate() {
            let (x, y) = batch?;
            let out = step(model, &x, &y)?;
            let loss = out.loss.to_f64_vec()?[0];
            if !loss.is_finite() {
                bar.abandon();
                return Err(Error::NonFiniteLoss {
                    epoch,
                    step: i + 1,
                    value: loss,
                });
            }
            let grads = out.loss.backward()?;
            optimizer.step(&grads)?;
            steps += 1;
            total += loss * out.count as f64;
            if let Some(c) = out.correct {
                correct += c;
                any_correct = true;
            }
            count += out.count;
            bar.inc(1);
            bar.set_message(format!("{:.4}", total / count as f64));
            if config
                .max_seconds
                .is_some_and(|limit| started.elapsed().as_secs_f64() >= limit)
            {
                history.out_of_time = true;
                break;
            }
        }
        bar.finish_and_clear();
        let (val_loss, val_accuracy) = match val {
            Some(v) => {
                let (l, a) = evaluate(model, v, step)?;
                (Some(l), a)
            }
            None => (None, None),
        };
        let metrics = EpochMetrics {
            epoch,
            train_loss: total / count.max(1) as f64,
            train_accuracy: any_correct.then(|| correct as f64 / count.max(1) as f64),
            val_loss,
            val_accuracy,
            lr: optimizer.lr(),
            steps,
            seconds: start.elapsed().as_secs_f64(),
        };
        if config.verbose {
            println!("{}", describe(&metrics));
        }
        let monitored = metrics.val_loss.unwrap_or(metrics.train_loss);
        history.epochs.push(metrics);
        if let Some(s) = scheduler.as_deref_mut() {
            s.step(optimizer, Some(monitored));
        }
        let min_delta = config.early_stopping.map_or(0.0, |e| e.min_delta);
        if monitored < best - min_delta {
            best = monitored;
            history.best_epoch = epoch;
            stale = 0;
            if config.early_stopping.is_some_and(|e| e.restore_best) {
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
        if history.out_of_time {
            if config.verbose {
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
                if config.verbose {
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
    line + &format!("  lr {:.2e}  {} steps  {:.1}s", m.lr, m.steps, m.seconds)
}
