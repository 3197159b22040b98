//! RMSprop, following PyTorch's update (no momentum, not centered).

use super::{load_buffers, save_buffers, Optimizer};
use kiln::{Gradients, OptimizerStep, Result, RmsPropSpec, Tensor};
use std::collections::HashMap;

/// RMSprop, PyTorch's update (without momentum or centring).
pub struct RmsProp {
    params: Vec<(String, Tensor)>,
    /// The learning rate.
    pub lr: f64,
    /// The squared gradients' decay rate (0.99).
    pub alpha: f64,
    /// Added to the average's square root (1e-8).
    pub eps: f64,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
    square_avg: HashMap<String, Tensor>,
}

impl RmsProp {
    /// RMSprop over `params` at `lr`, with PyTorch's defaults otherwise.
    pub fn new(params: Vec<(String, Tensor)>, lr: f64) -> Self {
        RmsProp {
            params,
            lr,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            square_avg: HashMap::new(),
        }
    }
}

impl Optimizer for RmsProp {
    fn step(&mut self, grads: &Gradients) -> Result<()> {
        let spec = OptimizerStep::RmsProp(RmsPropSpec {
            lr: self.lr as f32,
            one_minus_alpha: (1.0 - self.alpha) as f32,
            eps: self.eps as f32,
            weight_decay: self.weight_decay as f32,
        });
        let states = &mut [&mut self.square_avg];
        kiln::no_grad(|| super::step_all(&self.params, grads, states, &spec))
    }

    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        save_buffers("rmsprop.square_avg", &self.square_avg)
    }

    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let op = "RmsProp::load_state";
        let buffers = ["rmsprop.square_avg"];
        super::check_state(op, &buffers, &[], &self.params, state)?;
        load_buffers(
            "rmsprop.square_avg",
            &self.params,
            state,
            &mut self.square_avg,
        );
        Ok(())
    }
}
