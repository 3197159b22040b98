//! Stochastic gradient descent with momentum, Nesterov momentum and weight decay,
//! following PyTorch's update.

use super::{buffer, load_buffers, save_buffers, Optimizer};
use kiln::{Gradients, Result, Tensor};
use std::collections::HashMap;

pub struct Sgd {
    params: Vec<(String, Tensor)>,
    pub lr: f64,
    pub momentum: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
    velocity: HashMap<String, Tensor>,
}

impl Sgd {
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

    pub fn with_momentum(mut self, momentum: f64, nesterov: bool) -> Self {
        self.momentum = momentum;
        self.nesterov = nesterov;
        self
    }

    pub fn with_weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, grads: &Gradients) -> Result<()> {
        kiln::no_grad(|| {
            for (name, p) in &self.params {
                let Some(g) = grads.get(p) else { continue };
                let mut g = g.clone();
                if self.weight_decay != 0.0 {
                    g = g.add(&p.mul_scalar(self.weight_decay)?)?;
                }
                if self.momentum != 0.0 {
                    // buf = momentum * buf + g (the first step starts from g).
                    let buf = match self.velocity.get(name) {
                        Some(b) => b.mul_scalar(self.momentum)?.add(&g)?,
                        None => g.contiguous()?,
                    };
                    g = if self.nesterov {
                        g.add(&buf.mul_scalar(self.momentum)?)?
                    } else {
                        buf.clone()
                    };
                    buffer(&mut self.velocity, name, p)?;
                    self.velocity.insert(name.clone(), buf);
                }
                p.set_data(&p.sub(&g.mul_scalar(self.lr)?)?)?;
            }
            Ok(())
        })
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
