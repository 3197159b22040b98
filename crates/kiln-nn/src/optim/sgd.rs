//! Stochastic gradient descent with momentum, Nesterov momentum and weight decay,
//! following PyTorch's update.

use super::{load_buffers, save_buffers, Optimizer};
use kiln::{Gradients, OptimizerStep, Result, SgdSpec, Tensor};
use std::collections::HashMap;

/// Stochastic gradient descent with optional momentum (Nesterov's too) and weight
/// decay: PyTorch's `SGD` without dampening.
pub struct Sgd {
    params: Vec<(String, Tensor)>,
    /// The learning rate.
    pub lr: f64,
    /// The momentum (0: plain SGD).
    pub momentum: f64,
    /// Use Nesterov's momentum.
    pub nesterov: bool,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
    velocity: HashMap<String, Tensor>,
}

impl Sgd {
    /// Plain SGD over `params` at `lr`.
    pub fn new(params: Vec<(String, Tensor)>, lr: f64) -> Self {
        Sgd {
            params,
            lr,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            velocity: HashMap::new(),
        }
    }

    /// Adds momentum (`nesterov` for Nesterov's form).
    pub fn with_momentum(mut self, momentum: f64, nesterov: bool) -> Self {
        self.momentum = momentum;
        self.nesterov = nesterov;
        self
    }

    /// Adds an L2 penalty to the gradient.
    pub fn with_weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, grads: &Gradients) -> Result<()> {
        let spec = OptimizerStep::SgdMomentum(SgdSpec {
            lr: self.lr as f32,
            momentum: self.momentum as f32,
            weight_decay: self.weight_decay as f32,
            nesterov: self.nesterov,
        });
        // One fused kernel per parameter, or per group of them on a GPU. With
        // momentum, the buffer starts at zero, so step one's is g; without, there is
        // none (`OptimizerStep::states`).
        let states: &mut [&mut HashMap<String, Tensor>] = match spec.states() {
            0 => &mut [],
            _ => &mut [&mut self.velocity],
        };
        kiln::no_grad(|| super::step_all(&self.params, grads, states, &spec))
    }

    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        save_buffers("sgd.momentum", &self.velocity)
    }

    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let op = "Sgd::load_state";
        super::check_state(op, &["sgd.momentum"], &[], &self.params, state)?;
        load_buffers("sgd.momentum", &self.params, state, &mut self.velocity);
        Ok(())
    }
}
