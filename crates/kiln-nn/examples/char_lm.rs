//! A character-level language model on tinyshakespeare, written as a user would: a
//! module of one's own (embeddings, GPT-style blocks, a head), windows of text
//! (`next_token_windows`), `fit` with the next-token step, then greedy sampling.
//!
//!     cargo run --release -p kiln-nn --example char_lm
//!
//! KILN_EXAMPLE_STEPS caps the training steps (CI runs it short).

use kiln::{DType, Device, Result, Rng, Tensor};
use kiln_nn::data::{next_token_windows, tinyshakespeare, CharVocab, DataLoader};
use kiln_nn::layers::{Embedding, LayerNorm, Linear, TransformerEncoderLayer};
use kiln_nn::module_helpers::prefixed;
use kiln_nn::optim::Adam;
use kiln_nn::train::{fit, next_token_step, Control, FitConfig, OnStepEnd};
use kiln_nn::{Module, ModuleExt};
use std::sync::Arc;

const CONTEXT: usize = 32;

/// Token and position embeddings, causal pre-norm blocks, a final norm and a head.
struct Gpt {
    tokens: Embedding,
    positions: Embedding,
    blocks: Vec<TransformerEncoderLayer>,
    norm: LayerNorm,
    head: Linear,
}

impl Module for Gpt {
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let t = ids.dims()[1];
        let pos = Tensor::arange(0.0, t as f64, 1.0, DType::I32, &ids.device())?;
        let mut h = self
            .tokens
            .forward(ids)?
            .add(&self.positions.forward(&pos)?)?;
        for block in &self.blocks {
            h = block.forward(&h)?;
        }
        self.head.forward(&self.norm.forward(&h)?)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = prefixed("tokens", self.tokens.named_parameters());
        p.extend(prefixed("positions", self.positions.named_parameters()));
        for (i, b) in self.blocks.iter().enumerate() {
            p.extend(prefixed(&format!("blocks.{i}"), b.named_parameters()));
        }
        p.extend(prefixed("norm", self.norm.named_parameters()));
        p.extend(prefixed("head", self.head.named_parameters()));
        p
    }

    fn set_training(&self, training: bool) {
        self.blocks.iter().for_each(|b| b.set_training(training));
    }
}

fn main() -> Result<()> {
    let max_steps: usize = std::env::var("KILN_EXAMPLE_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let text = tinyshakespeare();
    let vocab = CharVocab::from_text(text);
    let ids = vocab.encode(text)?;
    let split = ids.len() * 9 / 10;
    let (train, val) = (
        next_token_windows(&ids[..split], CONTEXT)?,
        next_token_windows(&ids[split..], CONTEXT)?,
    );

    let device = Device::best()?;
    let mut rng = Rng::new(0);
    let (embed, heads) = (64, 4);
    let model = Gpt {
        tokens: Embedding::new(vocab.len(), embed, &device, &mut rng)?,
        positions: Embedding::new(CONTEXT, embed, &device, &mut rng)?,
        blocks: (0..2)
            .map(|_| TransformerEncoderLayer::gpt_block(embed, heads, 0.0, &device, &mut rng))
            .collect::<Result<_>>()?,
        norm: LayerNorm::new(&[embed], &device)?,
        head: Linear::new(embed, vocab.len(), &device, &mut rng)?,
    };
    let mut optimizer = Adam::new(model.named_parameters(), 3e-3);
    let config = FitConfig {
        epochs: 1,
        // Stop after `max_steps` steps: a hook may end training.
        callbacks: vec![Arc::new(OnStepEnd(move |end: &kiln_nn::train::StepEnd| {
            Ok(match end.step >= max_steps {
                true => Control::Stop,
                false => Control::Continue,
            })
        }))],
        ..FitConfig::default()
    };
    let train_loader = DataLoader::new(&train, 32, &device)?.shuffled(0);
    let val_loader = DataLoader::new(&val, 128, &device)?;
    let history = fit(
        &model,
        &mut optimizer,
        None,
        &train_loader,
        Some(&val_loader),
        &next_token_step,
        &config,
    )?;
    let val_loss = history.epochs[0].val_loss.unwrap_or(f64::NAN);

    // Greedy continuation of a prompt, one character at a time.
    model.eval();
    let mut out = vocab.encode("ROMEO:")?;
    for _ in 0..120 {
        let window = &out[out.len().saturating_sub(CONTEXT)..];
        let ids = Tensor::from_vec(window.to_vec(), [1, window.len()], &device)?;
        let next = kiln::no_grad(|| {
            model
                .forward(&ids)?
                .narrow(1, window.len() - 1, 1)?
                .argmax(-1, false)
        })?;
        out.push(next.to_vec::<i32>()?[0]);
    }
    println!("{}", vocab.decode(&out));
    println!("validation loss: {val_loss:.4} nats per character");
    Ok(())
}
