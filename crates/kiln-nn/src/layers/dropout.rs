//! `Dropout`: zeroes elements with probability `p` in training mode, the identity in
//! evaluation mode. Masks come from the layer's own seeded generator.

use crate::module::Module;
use kiln::{Result, Rng, Tensor};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Zeroes each element with probability `p` in training mode and scales the rest by
/// `1 / (1 - p)`; the identity in evaluation mode.
pub struct Dropout {
    /// The probability of zeroing an element.
    pub p: f64,
    rng: Mutex<Rng>,
    training: AtomicBool,
}

impl Dropout {
    /// Dropout with probability `p`, its masks drawn from `seed`.
    pub fn new(p: f64, seed: u64) -> Self {
        Dropout {
            p,
            rng: Mutex::new(Rng::new(seed)),
            training: AtomicBool::new(true),
        }
    }
}

impl Module for Dropout {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        x.dropout(self.p, self.training.load(Ordering::Relaxed), &mut rng)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
    }
}
