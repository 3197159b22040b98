//! Character-level language models on tinyshakespeare: an LSTM or GRU over learned
//! character embeddings, or a small decoder-only (GPT-style) transformer. Trained on
//! the first 90% of the text, validated on the last 10%, then sampled.

use kiln::philox::{random_word, word_to_unit};
use kiln::{Device, Result, Rng, Tensor};
use kiln_nn::layers::{
    Embedding, LayerNorm, Linear, Rnn, RnnKind, RnnState, TransformerEncoderLayer,
};
use kiln_nn::module_helpers::prefixed;
use kiln_nn::Module;

/// Which network reads the characters.
pub enum Body {
    Recurrent(Rnn),
    Transformer {
        positions: Embedding,
        blocks: Vec<TransformerEncoderLayer>,
        norm: LayerNorm,
    },
}

pub struct CharLm {
    pub embedding: Embedding,
    pub body: Body,
    pub head: Linear,
    pub context: usize,
}

impl CharLm {
    pub fn recurrent(
        kind: RnnKind,
        vocab: usize,
        hidden: usize,
        context: usize,
        device: &Device,
        rng: &mut Rng,
    ) -> Result<Self> {
        let embed = 64;
        Ok(CharLm {
            embedding: Embedding::new(vocab, embed, device, rng)?,
            body: Body::Recurrent(Rnn::new(kind, embed, hidden, 1, device, rng)?.batch_first(true)),
            head: Linear::new(hidden, vocab, device, rng)?,
            context,
        })
    }

    pub fn transformer(
        vocab: usize,
        embed: usize,
        heads: usize,
        layers: usize,
        context: usize,
        device: &Device,
        rng: &mut Rng,
    ) -> Result<Self> {
        let scaled = |t: Tensor| -> Result<Tensor> {
            kiln::no_grad(|| t.detach().mul_scalar(0.02))?.into_var()
        };
        let mut embedding = Embedding::new(vocab, embed, device, rng)?;
        embedding.weight = scaled(embedding.weight)?; // GPT-2's 0.02 scale
        let mut positions = Embedding::new(context, embed, device, rng)?;
        positions.weight = scaled(positions.weight)?;
        // No dropout: a ten-minute run covers one or two epochs and underfits; dropout
        // would only slow it down.
        let blocks = (0..layers)
            .map(|_| TransformerEncoderLayer::gpt_block(embed, heads, 0.0, device, rng))
            .collect::<Result<Vec<_>>>()?;
        Ok(CharLm {
            embedding,
            body: Body::Transformer {
                positions,
                blocks,
                norm: LayerNorm::new(&[embed], device)?,
            },
            head: Linear::new(embed, vocab, device, rng)?,
            context,
        })
    }

    /// Logits `[batch, time, vocab]` for ids `[batch, time]`, and the recurrent state.
    pub fn logits(
        &self,
        ids: &Tensor,
        state: Option<&RnnState>,
    ) -> Result<(Tensor, Option<RnnState>)> {
        self.logits_of_embedded(&self.embedding.forward(ids)?, state)
    }

    /// `logits` from the characters' embeddings `[batch, time, embed]`, the point at
    /// which attribution methods vary the input.
    pub fn logits_of_embedded(
        &self,
        x: &Tensor,
        state: Option<&RnnState>,
    ) -> Result<(Tensor, Option<RnnState>)> {
        let x = x.clone();
        match &self.body {
            Body::Recurrent(rnn) => {
                let (h, s) = rnn.forward_with_state(&x, state)?;
                Ok((self.head.forward(&h)?, Some(s)))
            }
            Body::Transformer {
                positions,
                blocks,
                norm,
            } => {
                // Positions 0..t are the table's first t rows: a view, where looking
                // them up would gather them forward and scatter their gradient back.
                let t = x.dims()[1];
                let mut h = x.add(&positions.weight.narrow(0, 0, t)?)?;
                for block in blocks {
                    h = block.forward(&h)?;
                }
                Ok((self.head.forward(&norm.forward(&h)?)?, None))
            }
        }
    }

    /// `n` characters continuing `prompt`, sampled at `temperature`.
    pub fn sample(
        &self,
        prompt: &[i32],
        n: usize,
        temperature: f64,
        seed: u64,
        device: &Device,
    ) -> Result<Vec<i32>> {
        self.set_training(false);
        let mut out = prompt.to_vec();
        let mut state: Option<RnnState> = None;
        let mut feed = prompt.to_vec();
        for i in 0..n {
            let logits = kiln::no_grad(|| -> Result<Tensor> {
                let window = match self.body {
                    Body::Recurrent(_) => feed.clone(),
                    Body::Transformer { .. } => {
                        out[out.len().saturating_sub(self.context)..].to_vec()
                    }
                };
                let ids = Tensor::from_vec(window.clone(), [1, window.len()], device)?;
                let (logits, s) = self.logits(&ids, state.as_ref())?;
                state = s;
                logits
                    .narrow(1, window.len() - 1, 1)?
                    .reshape([logits.dims()[2]])?
                    .mul_scalar(1.0 / temperature)?
                    .softmax(0)
            })?;
            let probs = logits.to_vec::<f32>()?;
            let u = word_to_unit(random_word(seed, 0, i as u64)) as f64;
            let (mut acc, mut pick) = (0.0, probs.len() - 1);
            for (j, &p) in probs.iter().enumerate() {
                acc += p as f64;
                if u < acc {
                    pick = j;
                    break;
                }
            }
            out.push(pick as i32);
            feed = vec![pick as i32];
        }
        self.set_training(true);
        Ok(out[prompt.len()..].to_vec())
    }
}

impl Module for CharLm {
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(self.logits(ids, None)?.0)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = prefixed("embedding", self.embedding.named_parameters());
        match &self.body {
            Body::Recurrent(rnn) => p.extend(prefixed("rnn", rnn.named_parameters())),
            Body::Transformer {
                positions,
                blocks,
                norm,
            } => {
                p.extend(prefixed("positions", positions.named_parameters()));
                for (i, b) in blocks.iter().enumerate() {
                    p.extend(prefixed(&format!("blocks.{i}"), b.named_parameters()));
                }
                p.extend(prefixed("norm", norm.named_parameters()));
            }
        }
        p.extend(prefixed("head", self.head.named_parameters()));
        p
    }

    fn set_training(&self, training: bool) {
        if let Body::Transformer { blocks, .. } = &self.body {
            blocks.iter().for_each(|b| b.set_training(training));
        }
    }
}
