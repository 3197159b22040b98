//! Recurrent layers: the tanh RNN, LSTM and GRU, multi-layer, with PyTorch's weight
//! names and layouts (`weight_ih_l0 [gates*hidden, input]`, gate order i, f, g, o for
//! the LSTM and r, z, n for the GRU) and time-first inputs `[time, batch, features]`
//! by default, as PyTorch; `batch_first(true)` takes `[batch, time, features]`. The
//! single-step cells (`RnnCell`) are in `rnn_cell.rs`.

use crate::module::Module;
use crate::uniform;
use kiln::{Device, Error, Result, Rng, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
/// Which recurrent cell.
pub enum RnnKind {
    /// `h' = tanh(W x + U h + b)`, PyTorch's `RNN`.
    Tanh,
    /// Long short-term memory, PyTorch's `LSTM` (gates i, f, g, o).
    Lstm,
    /// Gated recurrent unit, PyTorch's `GRU` (gates r, z, n).
    Gru,
}

impl RnnKind {
    pub(crate) fn gates(self) -> usize {
        match self {
            RnnKind::Tanh => 1,
            RnnKind::Lstm => 4,
            RnnKind::Gru => 3,
        }
    }
}

/// One layer's (or one cell's) weights, in PyTorch's layouts.
pub(crate) struct LayerWeights {
    pub(crate) weight_ih: Tensor,
    pub(crate) weight_hh: Tensor,
    pub(crate) bias_ih: Tensor,
    pub(crate) bias_hh: Tensor,
}

impl LayerWeights {
    /// PyTorch's initialisation: every weight and bias uniform in ±1/sqrt(hidden).
    pub(crate) fn new(
        kind: RnnKind,
        input: usize,
        hidden: usize,
        device: &Device,
        rng: &mut Rng,
    ) -> Result<Self> {
        let bound = 1.0 / (hidden.max(1) as f64).sqrt();
        let g = kind.gates() * hidden;
        Ok(LayerWeights {
            weight_ih: uniform(&[g, input], bound, device, rng)?,
            weight_hh: uniform(&[g, hidden], bound, device, rng)?,
            bias_ih: uniform(&[g], bound, device, rng)?,
            bias_hh: uniform(&[g], bound, device, rng)?,
        })
    }

    /// Named as PyTorch names them, with `suffix` (`_l0` in a multi-layer RNN, none in
    /// a cell).
    pub(crate) fn named(&self, suffix: &str) -> Vec<(String, Tensor)> {
        vec![
            (format!("weight_ih{suffix}"), self.weight_ih.clone()),
            (format!("weight_hh{suffix}"), self.weight_hh.clone()),
            (format!("bias_ih{suffix}"), self.bias_ih.clone()),
            (format!("bias_hh{suffix}"), self.bias_hh.clone()),
        ]
    }
}

/// The state between calls: per layer `h [batch, hidden]` and, for the LSTM, `c`.
#[derive(Clone)]
pub struct RnnState {
    /// Each layer's hidden state, `[batch, hidden]`.
    pub h: Vec<Tensor>,
    /// Each layer's cell state, for the LSTM.
    pub c: Option<Vec<Tensor>>,
}

/// A multi-layer recurrent network: PyTorch's `RNN`, `LSTM` and `GRU`.
pub struct Rnn {
    /// The cell.
    pub kind: RnnKind,
    /// Hidden units per layer.
    pub hidden: usize,
    /// Inputs `[batch, time, features]` when true (PyTorch's `batch_first`), else
    /// `[time, batch, features]` (the default, as in PyTorch).
    pub batch_first: bool,
    layers: Vec<LayerWeights>,
}

impl Rnn {
    /// `num_layers` layers of `kind` cells from `input` features to `hidden` units,
    /// with PyTorch's initialisation; time first.
    pub fn new(
        kind: RnnKind,
        input: usize,
        hidden: usize,
        num_layers: usize,
        device: &Device,
        rng: &mut Rng,
    ) -> Result<Self> {
        let layers = (0..num_layers.max(1))
            .map(|l| {
                let fan = if l == 0 { input } else { hidden };
                LayerWeights::new(kind, fan, hidden, device, rng)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Rnn {
            kind,
            hidden,
            batch_first: false,
            layers,
        })
    }

    /// Takes and gives `[batch, time, features]` (PyTorch's `batch_first=True`) when
    /// `on`, else `[time, batch, features]`, the default.
    pub fn batch_first(mut self, on: bool) -> Self {
        self.batch_first = on;
        self
    }

    /// PyTorch's `LSTM(input, hidden, num_layers)`.
    pub fn lstm(
        input: usize,
        hidden: usize,
        num_layers: usize,
        device: &Device,
        rng: &mut Rng,
    ) -> Result<Self> {
        Rnn::new(RnnKind::Lstm, input, hidden, num_layers, device, rng)
    }

    /// PyTorch's `GRU(input, hidden, num_layers)`.
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
            // The tanh and LSTM cells add both biases to the sum of the projections, so
            // the hidden one joins the input's here, once: its gradient is then one
            // column sum, not one a step. (The GRU's n gate scales the hidden projection,
            // bias included, by r: its hidden bias stays in the step.)
            let step_bias = (self.kind == RnnKind::Gru).then_some(&w.bias_hh);
            let input_bias = match step_bias {
                Some(_) => w.bias_ih.clone(),
                None => w.bias_ih.add(&w.bias_hh)?,
            };
            let projected = input.matmul(&w.weight_ih.t()?)?.add(&input_bias)?;
            let w_hh = w.weight_hh.t()?;
            let mut outputs = Vec::with_capacity(time);
            for t in 0..time {
                let xt = projected.narrow(1, t, 1)?.squeeze(1)?;
                let mut ht = h.matmul(&w_hh)?;
                if let Some(b) = step_bias {
                    ht = ht.add(b)?;
                }
                (h, c) = cell(self.kind, self.hidden, &xt, ht, &h, c.as_ref())?;
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
}

/// One step of a `kind` cell of `hidden` units from the input projection `xt` and the
/// hidden projection `ht` (both `[batch, gates*hidden]`; both biases in one or the
/// other, the GRU's hidden bias in `ht`), the hidden state `h` and, for the LSTM, the
/// cell state `c`: the new `h` and `c`. `ht` is taken, and let go of once summed with
/// `xt`: on a GPU the sum then runs in the stores of the product that computes `ht`,
/// which writes the sum alone (held here, the product's own output was written too:
/// 8.4 MB a step in the char LSTM).
pub(crate) fn cell(
    kind: RnnKind,
    hidden: usize,
    xt: &Tensor,
    ht: Tensor,
    h: &Tensor,
    c: Option<&Tensor>,
) -> Result<(Tensor, Option<Tensor>)> {
    let sum = |ht: Tensor| xt.add(&ht);
    match (kind, c) {
        (RnnKind::Tanh, _) => Ok((sum(ht)?.tanh()?, None)),
        (RnnKind::Lstm, Some(c)) => {
            // One fused kernel for the gates and both states (and one back);
            // `lstm_reference` in the tests keeps the step written as tensor ops.
            let hc = sum(ht)?.lstm_cell(c)?;
            Ok((
                hc.narrow(1, 0, hidden)?,
                Some(hc.narrow(1, hidden, hidden)?),
            ))
        }
        (RnnKind::Lstm, None) => Err(Error::InvalidArgument {
            op: "lstm",
            reason: "an LSTM step needs a cell state".into(),
        }),
        // One fused kernel each way; `gru_reference` in the tests keeps the step
        // written as tensor ops.
        (RnnKind::Gru, _) => Ok((xt.gru_cell(&ht, h)?, None)),
    }
}

impl Module for Rnn {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.forward_with_state(x, None)?.0)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.layers
            .iter()
            .enumerate()
            .flat_map(|(l, w)| w.named(&format!("_l{l}")))
            .collect()
    }
}
