//! Adam and AdamW (decoupled weight decay), following PyTorch's update with bias
//! correction.

use super::{load_buffers, save_buffers, Optimizer};
use kiln::{AdamSpec, DType, Device, Gradients, OptimizerStep, Result, Tensor};
use std::collections::HashMap;

/// Adam, and AdamW with `adamw`: PyTorch's update, bias corrections included, one
/// fused kernel per parameter (or per group of them on a GPU).
pub struct Adam {
    params: Vec<(String, Tensor)>,
    /// The learning rate.
    pub lr: f64,
    /// The decay rates of the first and second moments (0.9, 0.999).
    pub betas: (f64, f64),
    /// Added to the second moment's square root (1e-8).
    pub eps: f64,
    /// L2 penalty (Adam) or decoupled decay (AdamW).
    pub weight_decay: f64,
    /// AdamW: decay the weights directly instead of adding `weight_decay * p` to the gradient.
    pub decoupled: bool,
    steps: u64,
    m: HashMap<String, Tensor>,
    v: HashMap<String, Tensor>,
}

impl Adam {
    /// Adam over `params` at `lr`, with PyTorch's defaults otherwise.
    pub fn new(params: Vec<(String, Tensor)>, lr: f64) -> Self {
        Adam {
            params,
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
            steps: 0,
            m: HashMap::new(),
            v: HashMap::new(),
        }
    }

    /// AdamW with PyTorch's default weight decay of 0.01.
    pub fn adamw(params: Vec<(String, Tensor)>, lr: f64) -> Self {
        Adam {
            weight_decay: 0.01,
            decoupled: true,
            ..Adam::new(params, lr)
        }
    }

    /// Other moment decay rates, e.g. `(0.5, 0.999)` for GANs.
    pub fn with_betas(mut self, betas: (f64, f64)) -> Self {
        self.betas = betas;
        self
    }

    /// Adds weight decay: an L2 term in the gradient for Adam, a decoupled shrink
    /// for AdamW.
    pub fn with_weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    /// This step's update (`steps` already counts it), bias corrections folded in.
    fn spec(&self) -> OptimizerStep {
        let (b1, b2) = self.betas;
        let t = self.steps as i32;
        let (coupled, factor) = match self.decoupled {
            true => (0.0, 1.0 - self.lr * self.weight_decay),
            false => (self.weight_decay, 1.0),
        };
        OptimizerStep::Adam(AdamSpec {
            one_minus_beta1: (1.0 - b1) as f32,
            one_minus_beta2: (1.0 - b2) as f32,
            eps: self.eps as f32,
            step_size: (self.lr / (1.0 - b1.powi(t))) as f32,
            inv_correction2: (1.0 / (1.0 - b2.powi(t))) as f32,
            coupled_decay: coupled as f32,
            decay_factor: factor as f32,
        })
    }
}

impl Optimizer for Adam {
    fn step(&mut self, grads: &Gradients) -> Result<()> {
        self.steps += 1;
        let spec = self.spec();
        // One fused kernel per parameter, or per group of them on a GPU;
        // `adam_reference` in the tests keeps the update written as tensor ops, and
        // checks this against it.
        let states = &mut [&mut self.m, &mut self.v];
        kiln::no_grad(|| super::step_all(&self.params, grads, states, &spec))
    }

    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = save_buffers("adam.m", &self.m);
        out.extend(save_buffers("adam.v", &self.v));
        let steps = Tensor::from_vec(vec![self.steps as f32], [1], &Device::cpu())
            .expect("a one-element tensor");
        out.push(("adam.steps".into(), steps));
        out
    }

    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let op = "Adam::load_state";
        let buffers = ["adam.m", "adam.v"];
        super::check_state(op, &buffers, &["adam.steps"], &self.params, state)?;
        load_buffers("adam.m", &self.params, state, &mut self.m);
        load_buffers("adam.v", &self.params, state, &mut self.v);
        if let Some(s) = state.get("adam.steps") {
            self.steps = s.to_dtype(DType::F32)?.item::<f32>()? as u64;
        }
        Ok(())
    }
}
