//! The gradients a backward pass produced, keyed by tensor, and the gradient-flow
//! audit that names trainable variables left without a (finite) gradient.

use crate::tensor::TensorId;
use crate::Tensor;
use kiln_core::Result;
use std::collections::HashMap;

/// Gradients of leaf variables. Several `backward_into` calls accumulate (add) here.
#[derive(Default, Clone)]
pub struct Gradients {
    map: HashMap<TensorId, Tensor>,
}

/// Why the audit flagged a variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GradIssueKind {
    /// No gradient reached it: it does not influence the loss (a disconnected parameter).
    Missing,
    /// Its gradient holds NaN or infinity.
    NonFinite,
}

#[derive(Clone, Debug, PartialEq, Eq)]
/// A variable the audit found wrong.
pub struct GradIssue {
    /// The name it was given to `audit`.
    pub name: String,
    /// What is wrong with its gradient.
    pub kind: GradIssueKind,
}

impl std::fmt::Debug for Gradients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.map.iter()).finish()
    }
}

impl Gradients {
    /// The gradient of `t`, if the pass reached it.
    pub fn get(&self, t: &Tensor) -> Option<&Tensor> {
        self.map.get(&t.id())
    }

    /// Replaces the gradient held for `t` (e.g. after clipping).
    pub fn insert(&mut self, t: &Tensor, g: Tensor) {
        self.map.insert(t.id(), g);
    }

    /// Takes the gradient of `t` out.
    pub fn remove(&mut self, t: &Tensor) -> Option<Tensor> {
        self.map.remove(&t.id())
    }

    /// How many variables have a gradient.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when no variable has a gradient.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Forgets every gradient (before accumulating anew).
    pub fn clear(&mut self) {
        self.map.clear();
    }

    /// Adds `g` to the gradient held for `id`.
    pub(crate) fn accumulate(&mut self, id: TensorId, g: Tensor) -> Result<()> {
        let total = match self.map.remove(&id) {
            Some(previous) => previous.add(&g)?,
            None => g,
        };
        self.map.insert(id, total);
        Ok(())
    }

    /// Lists the named variables that received no gradient or a non-finite one
    /// (reading each gradient back: a sync point). Empty means every variable is
    /// connected to the loss and its gradient is finite.
    pub fn audit<'a>(
        &self,
        variables: impl IntoIterator<Item = (&'a str, &'a Tensor)>,
    ) -> Result<Vec<GradIssue>> {
        let mut issues = Vec::new();
        for (name, var) in variables {
            let kind = match self.get(var) {
                None => Some(GradIssueKind::Missing),
                Some(g) if g.to_f64_vec()?.iter().any(|v| !v.is_finite()) => {
                    Some(GradIssueKind::NonFinite)
                }
                Some(_) => None,
            };
            if let Some(kind) = kind {
                issues.push(GradIssue {
                    name: name.to_string(),
                    kind,
                });
            }
        }
        Ok(issues)
    }
}
