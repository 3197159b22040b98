//! Single-step recurrent cells, PyTorch's `LSTMCell`, `GRUCell` and `RNNCell`: one time
//! step from an input `[batch, input]` and a state, for loops the caller writes
//! (decoders feeding back their output, attention over a memory, ...). Weights are
//! named and laid out as PyTorch's (`weight_ih [gates*hidden, input]`, no layer suffix).

use super::rnn::{cell, LayerWeights, RnnKind};
use crate::module::Module;
use kiln::{Device, Error, Result, Rng, Tensor};

/// A recurrent cell's state: `h` `[batch, hidden]` and, for the LSTM, `c`.
#[derive(Clone, Debug)]
pub struct CellState {
    /// The hidden state, `[batch, hidden]`.
    pub h: Tensor,
    /// The LSTM's cell state, `[batch, hidden]`.
    pub c: Option<Tensor>,
}

/// One step of a tanh RNN, an LSTM or a GRU.
#[doc(alias = "LSTMCell")]
#[doc(alias = "GRUCell")]
#[doc(alias = "RNNCell")]
pub struct RnnCell {
    /// The cell.
    pub kind: RnnKind,
    /// Hidden units.
    pub hidden: usize,
    weights: LayerWeights,
}

impl RnnCell {
    /// A cell with PyTorch's initialisation (uniform in ±1/sqrt(hidden)).
    pub fn new(
        kind: RnnKind,
        input: usize,
        hidden: usize,
        device: &Device,
        rng: &mut Rng,
    ) -> Result<Self> {
        Ok(RnnCell {
            kind,
            hidden,
            weights: LayerWeights::new(kind, input, hidden, device, rng)?,
        })
    }

    /// PyTorch's `LSTMCell(input, hidden)`.
    pub fn lstm(input: usize, hidden: usize, device: &Device, rng: &mut Rng) -> Result<Self> {
        RnnCell::new(RnnKind::Lstm, input, hidden, device, rng)
    }

    /// PyTorch's `GRUCell(input, hidden)`.
    pub fn gru(input: usize, hidden: usize, device: &Device, rng: &mut Rng) -> Result<Self> {
        RnnCell::new(RnnKind::Gru, input, hidden, device, rng)
    }

    /// The state after one step on `x` `[batch, input]` from `state` (zeros when
    /// `None`, as PyTorch's default `hx`).
    pub fn step(&self, x: &Tensor, state: Option<&CellState>) -> Result<CellState> {
        let op = "RnnCell";
        if x.rank() != 2 {
            return Err(Error::InvalidShape {
                op,
                shape: x.shape().clone(),
                reason: "a cell takes one step: [batch, input]".into(),
            });
        }
        let zeros = || Tensor::zeros([x.dims()[0], self.hidden], x.dtype(), &x.device());
        let (h, c) = match state {
            Some(s) => (s.h.clone(), s.c.clone()),
            None => (zeros()?, None),
        };
        let c = match (self.kind, c) {
            (RnnKind::Lstm, None) => Some(zeros()?),
            (_, c) => c,
        };
        let w = &self.weights;
        let xt = x.matmul(&w.weight_ih.t()?)?.add(&w.bias_ih)?;
        let ht = h.matmul(&w.weight_hh.t()?)?.add(&w.bias_hh)?;
        let (h, c) = cell(self.kind, self.hidden, &xt, ht, &h, c.as_ref())?;
        Ok(CellState { h, c })
    }
}

impl Module for RnnCell {
    /// One step from the zero state: the new `h`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.step(x, None)?.h)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.weights.named("")
    }
}
