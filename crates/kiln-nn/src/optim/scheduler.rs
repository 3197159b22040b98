//! Learning-rate schedules. Each `step` is called once per epoch (or per batch for
//! warm-up) and sets the optimizer's learning rate.

use super::Optimizer;

/// Changes an optimizer's learning rate once per epoch (`fit` calls `step` after
/// each epoch's validation, with the monitored loss).
pub trait LrScheduler {
    /// Advances the schedule; `metric` is the validation loss, used by `ReduceLrOnPlateau`.
    fn step(&mut self, optimizer: &mut dyn Optimizer, metric: Option<f64>);
}

/// Multiplies the learning rate by `gamma` every `step_size` steps.
pub struct StepLr {
    /// Epochs between decays.
    pub step_size: usize,
    /// The factor each decay multiplies the rate by.
    pub gamma: f64,
    steps: usize,
}

impl StepLr {
    /// Multiplies the rate by `gamma` every `step_size` epochs (PyTorch's `StepLR`).
    pub fn new(step_size: usize, gamma: f64) -> Self {
        StepLr {
            step_size: step_size.max(1),
            gamma,
            steps: 0,
        }
    }
}

impl LrScheduler for StepLr {
    fn step(&mut self, optimizer: &mut dyn Optimizer, _metric: Option<f64>) {
        self.steps += 1;
        if self.steps.is_multiple_of(self.step_size) {
            optimizer.set_lr(optimizer.lr() * self.gamma);
        }
    }
}

/// Cosine annealing from the initial rate to `eta_min` over `t_max` steps.
pub struct CosineAnnealing {
    /// Epochs from the base rate down to `eta_min`.
    pub t_max: usize,
    /// The rate at the end.
    pub eta_min: f64,
    base: Option<f64>,
    steps: usize,
}

impl CosineAnnealing {
    /// Cosine decay from the optimizer's rate to `eta_min` over `t_max` epochs
    /// (PyTorch's `CosineAnnealingLR`).
    pub fn new(t_max: usize, eta_min: f64) -> Self {
        CosineAnnealing {
            t_max: t_max.max(1),
            eta_min,
            base: None,
            steps: 0,
        }
    }
}

impl LrScheduler for CosineAnnealing {
    fn step(&mut self, optimizer: &mut dyn Optimizer, _metric: Option<f64>) {
        let base = *self.base.get_or_insert(optimizer.lr());
        self.steps = (self.steps + 1).min(self.t_max);
        let progress = self.steps as f64 / self.t_max as f64;
        optimizer.set_lr(
            self.eta_min
                + (base - self.eta_min) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        );
    }
}

/// Ramps the learning rate linearly from `base / warmup` to `base` over `warmup` steps.
pub struct LinearWarmup {
    /// Steps of the ramp.
    pub warmup: usize,
    base: Option<f64>,
    steps: usize,
}

impl LinearWarmup {
    /// Call `step` once before the first batch so that it starts at `base / warmup`.
    pub fn new(warmup: usize) -> Self {
        LinearWarmup {
            warmup: warmup.max(1),
            base: None,
            steps: 0,
        }
    }
}

impl LrScheduler for LinearWarmup {
    fn step(&mut self, optimizer: &mut dyn Optimizer, _metric: Option<f64>) {
        let base = *self.base.get_or_insert(optimizer.lr());
        self.steps = (self.steps + 1).min(self.warmup);
        optimizer.set_lr(base * self.steps as f64 / self.warmup as f64);
    }
}

/// Multiplies the learning rate by `factor` once the metric has not improved by more
/// than `threshold` (relative) for `patience` steps (PyTorch's defaults).
pub struct ReduceLrOnPlateau {
    /// The factor a reduction multiplies the rate by (0.1).
    pub factor: f64,
    /// Epochs without improvement before a reduction.
    pub patience: usize,
    /// The relative improvement that counts (1e-4).
    pub threshold: f64,
    /// The rate is never reduced below this.
    pub min_lr: f64,
    best: f64,
    bad_steps: usize,
    /// How many times the rate was reduced.
    pub reductions: usize,
}

impl ReduceLrOnPlateau {
    /// Reduces by `factor` after `patience` epochs without improvement.
    pub fn new(factor: f64, patience: usize) -> Self {
        ReduceLrOnPlateau {
            factor,
            patience,
            threshold: 1e-4,
            min_lr: 0.0,
            best: f64::INFINITY,
            bad_steps: 0,
            reductions: 0,
        }
    }
}

impl LrScheduler for ReduceLrOnPlateau {
    fn step(&mut self, optimizer: &mut dyn Optimizer, metric: Option<f64>) {
        let Some(metric) = metric else { return };
        if metric < self.best * (1.0 - self.threshold) {
            self.best = metric;
            self.bad_steps = 0;
        } else {
            self.bad_steps += 1;
        }
        if self.bad_steps > self.patience {
            optimizer.set_lr((optimizer.lr() * self.factor).max(self.min_lr));
            self.bad_steps = 0;
            self.reductions += 1;
        }
    }
}
