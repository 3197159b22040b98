//! Learning-rate schedules. Each `step` is called once per epoch (or per batch for
//! warm-up) and sets the optimizer's learning rate.

use super::Optimizer;

pub trait LrScheduler {
    /// Advances the schedule; `metric` is the validation loss, used by `ReduceLrOnPlateau`.
    fn step(&mut self, optimizer: &mut dyn Optimizer, metric: Option<f64>);
}

/// Multiplies the learning rate by `gamma` every `step_size` steps.
pub struct StepLr {
    pub step_size: usize,
    pub gamma: f64,
    steps: usize,
}

impl StepLr {
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
    pub t_max: usize,
    pub eta_min: f64,
    base: Option<f64>,
    steps: usize,
}

impl CosineAnnealing {
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
    pub factor: f64,
    pub patience: usize,
    pub threshold: f64,
    pub min_lr: f64,
    best: f64,
    bad_steps: usize,
    /// How many times the rate was reduced.
    pub reductions: usize,
}

impl ReduceLrOnPlateau {
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
