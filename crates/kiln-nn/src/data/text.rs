//! Character-level text: a vocabulary of the characters a corpus uses.

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
