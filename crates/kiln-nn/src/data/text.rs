//! Character-level text: a vocabulary of the characters a corpus uses, and the
//! next-token windows a language model trains on.

use super::TensorDataset;
use kiln::{Device, Error, Result, Tensor};
use std::collections::HashMap;

/// The characters of a text, each given an id: the vocabulary of a character-level
/// language model.
pub struct CharVocab {
    chars: Vec<char>,
    index: HashMap<char, i32>,
}

impl CharVocab {
    /// Every distinct character of `text`, sorted.
    pub fn from_text(text: &str) -> Self {
        let mut chars: Vec<char> = text
            .chars()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        chars.dedup();
        let index = chars
            .iter()
            .enumerate()
            .map(|(i, &c)| (c, i as i32))
            .collect();
        CharVocab { chars, index }
    }

    /// How many distinct characters.
    pub fn len(&self) -> usize {
        self.chars.len()
    }

    /// True for an empty text's vocabulary.
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// i32 ids, one per character; unknown characters are an error.
    pub fn encode(&self, text: &str) -> Result<Vec<i32>> {
        text.chars()
            .map(|c| {
                self.index.get(&c).copied().ok_or(Error::InvalidArgument {
                    op: "CharVocab::encode",
                    reason: format!("character {c:?} is not in the vocabulary"),
                })
            })
            .collect()
    }

    /// The text of `ids` (an unknown id is skipped).
    pub fn decode(&self, ids: &[i32]) -> String {
        ids.iter()
            .filter_map(|&i| self.chars.get(i as usize))
            .collect()
    }

    /// The encoded text as a 1-D i32 tensor on the CPU.
    pub fn encode_tensor(&self, text: &str) -> Result<Tensor> {
        let ids = self.encode(text)?;
        let n = ids.len();
        Tensor::from_vec(ids, [n], &Device::cpu())
    }
}

/// Non-overlapping windows of `ids` for next-token training: inputs are `context`
/// ids, targets the `context` ids one position on (i32 `[windows, context]` each, on the
/// CPU). Ids left over after the last whole window are not used; too few ids for one
/// window is an error.
pub fn next_token_windows(ids: &[i32], context: usize) -> Result<TensorDataset> {
    if context == 0 || ids.len() <= context {
        return Err(Error::InvalidArgument {
            op: "next_token_windows",
            reason: format!(
                "{} ids do not make one window of {context} and its next id",
                ids.len()
            ),
        });
    }
    let n = (ids.len() - 1) / context;
    let window = |shift: usize| -> Vec<i32> {
        (0..n)
            .flat_map(|i| ids[i * context + shift..(i + 1) * context + shift].to_vec())
            .collect()
    };
    let cpu = Device::cpu();
    TensorDataset::new(
        Tensor::from_vec(window(0), [n, context], &cpu)?,
        Tensor::from_vec(window(1), [n, context], &cpu)?,
    )
}
