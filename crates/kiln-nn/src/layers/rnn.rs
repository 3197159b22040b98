//! Recurrent layers: the tanh RNN, LSTM and GRU, multi-layer, with PyTorch's weight
//! names and layouts (`weight_ih_l0 [gates*hidden, input]`, gate order i, f, g, o for
//! the LSTM and r, z, n for the GRU) and batch-first or time-first inputs.

use crate::module::Module;
use crate::uniform;
use kiln::{Device, Error, Result, Rng, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RnnKind {
    Tanh,
    Lstm,
    Gru,
}

impl RnnKind {
    fn gates(self) -> usize {
        match self {
            RnnKind::Tanh => 1,
            RnnKind::Lstm => 4,
            RnnKind::Gru => 3,
        }
    }
}

struct LayerWeights {
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor,
    bias_hh: Tensor,
}

/// The state between calls: per layer `h [batch, hidden]` and, for the LSTM, `c`.
#[derive(Clone)]
pub struct RnnState {
    pub h: Vec<Tensor>,
    pub c: Option<Vec<Tensor>>,
}

pub struct Rnn {
    pub kind: RnnKind,
    pub hidden: usize,
    /// Inputs `[batch, time, features]` when true (PyTorch's `batch_first`), else `[time, batch, features]`.
    pub batch_first: bool,
    layers: Vec<LayerWeights>,
}

impl Rnn {
    pub fn new(
        kind: RnnKind,
        input: usize,
        hidden: usize,
        num_layers: usize,
        device: &Device,
        rng: &mut Rng,
    ) -> Result<Self> {
        let bound = 1.0 / (hidden.max(1) as f64).sqrt();
        let g = kind.gates() * hidden;
        let layers = (0..num_layers.max(1))
            .map(|l| {
                let fan = if l == 0 { input } else { hidden };
                Ok(LayerWeights {
                    weight_ih: uniform(&[g, fan], bound, device, rng)?,
                    weight_hh: uniform(&[g, hidden], bound, device, rng)?,
                    bias_ih: uniform(&[g], bound, device, rng)?,
                    bias_hh: uniform(&[g], bound, device, rng)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Rnn {
            kind,
            hidden,
            batch_first: true,
            layers,
        })
    }

    pub fn lstm(
        input: usize,
        hidden: usize,
        num_layers: usize,
        device: &Device,
        rng: &mut Rng,
    ) -> Result<Self> {
        Rnn::new(RnnKind::Lstm, input, hidden, num_layers, device, rng)
    }

    pub fn gru(
        input: usize,
        hidden: usize,
        num_layers: usize,
        device: &Device,
        rng: &mut Rng,
    ) -> Result<Self> {
        Rnn::new(RnnKind::Gru, input, hidden, num_layers, device, rng)
    }

    /// Runs the sequence from `state` (zeros when `None`); returns the top layer's
    /// output at every step and the final state.
    pub fn forward_with_state(
        &self,
        x: &Tensor,
        state: Option<&RnnState>,
    ) -> Result<(Tensor, RnnState)> {
        if x.rank() != 3 {
            return Err(Error::InvalidShape {
                op: "Rnn",
                shape: x.shape().clone(),
                reason: "expected a 3-D sequence".into(),
            });
        }
        let x = if self.batch_first {
            x.clone()
        } else {
            x.transpose(0, 1)?
        };
        let (batch, time) = (x.dims()[0], x.dims()[1]);
        let (dtype, device) = (x.dtype(), x.device());
        let zeros = || Tensor::zeros([batch, self.hidden], dtype, &device);
        let mut out_state = RnnState {
            h: Vec::new(),
            c: (self.kind == RnnKind::Lstm).then(Vec::new),
        };
        let mut input = x;
        for (l, w) in self.layers.iter().enumerate() {
            let mut h = match state {
                Some(s) => s.h[l].clone(),
                None => zeros()?,
            };
            let mut c = match (self.kind, state.and_then(|s| s.c.as_ref())) {
                (RnnKind::Lstm, Some(cs)) => Some(cs[l].clone()),
                (RnnKind::Lstm, None) => Some(zeros()?),
                _ => None,
            };
            // Input projections for every step at once: [batch, time, gates*hidden].
            let projected = input.matmul(&w.weight_ih.t()?)?.add(&w.bias_ih)?;
            let w_hh = w.weight_hh.t()?;
            let mut outputs = Vec::with_capacity(time);
            for t in 0..time {
                let xt = projected.narrow(1, t, 1)?.squeeze(1)?;
                let ht = h.matmul(&w_hh)?.add(&w.bias_hh)?;
                (h, c) = self.cell(&xt, &ht, &h, c.as_ref())?;
                outputs.push(h.clone());
            }
            input = Tensor::stack(&outputs, 1)?;
            out_state.h.push(h);
            if let (Some(cs), Some(c)) = (out_state.c.as_mut(), c) {
                cs.push(c);
            }
        }
        let output = if self.batch_first {
            input
        } else {
            input.transpose(0, 1)?
        };
        Ok((output, out_state))
    }

    /// One step from the input projection `xt` and hidden projection `ht` (both
    /// `[batch, gates*hidden]`, biases included).
    fn cell(
        &self,
        xt: &Tensor,
        ht: &Tensor,
        h: &Tensor,
        c: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let hs = self.hidden;
        match self.kind {
            RnnKind::Tanh => Ok((xt.add(ht)?.tanh()?, None)),
            RnnKind::Lstm => {
                // One fused kernel for the gates and both states (and one back);
                // `lstm_reference` in the tests keeps the step written as tensor ops.
                let hc = xt
                    .add(ht)?
                    .lstm_cell(c.expect("an LSTM carries a cell state"))?;
                Ok((hc.narrow(1, 0, hs)?, Some(hc.narrow(1, hs, hs)?)))
            }
            // One fused kernel each way; `gru_reference` in the tests keeps the step
            // written as tensor ops.
            RnnKind::Gru => Ok((xt.gru_cell(ht, h)?, None)),
        }
    }
}

impl Module for Rnn {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.forward_with_state(x, None)?.0)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (l, w) in self.layers.iter().enumerate() {
            out.push((format!("weight_ih_l{l}"), w.weight_ih.clone()));
            out.push((format!("weight_hh_l{l}"), w.weight_hh.clone()));
            out.push((format!("bias_ih_l{l}"), w.bias_ih.clone()));
            out.push((format!("bias_hh_l{l}"), w.bias_hh.clone()));
        }
        out
    }
}
