//! Class names to class ids and back, as scikit-learn's `LabelEncoder`: a target
//! column of text becomes the i32 ids `cross_entropy` takes.

use super::csv::MISSING_MARKERS;
use kiln::{Device, Error, Result, Tensor};

/// The classes of a classification target, in id order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classes {
    names: Vec<String>,
}

impl Classes {
    /// The distinct values of `labels`, sorted: numerically when every one is a number
    /// (so "10" follows "9"), else as text. A missing value is an error naming its row.
    pub fn fit(labels: &[String]) -> Result<Classes> {
        if let Some(i) = labels
            .iter()
            .position(|l| MISSING_MARKERS.contains(&l.as_str()))
        {
            return Err(Error::InvalidArgument {
                op: "Classes::fit",
                reason: format!("row {i} has a missing label ({:?})", labels[i]),
            });
        }
        let mut names: Vec<String> = labels.to_vec();
        let numbers: Option<Vec<f64>> = names.iter().map(|n| n.parse().ok()).collect();
        match numbers {
            Some(_) => names.sort_by(|a, b| {
                let (x, y): (f64, f64) = (a.parse().unwrap_or(0.0), b.parse().unwrap_or(0.0));
                x.total_cmp(&y).then_with(|| a.cmp(b))
            }),
            None => names.sort(),
        }
        names.dedup();
        Classes::from_names(names)
    }

    /// Classes with these names, id i for `names[i]`; the names must be distinct.
    pub fn from_names(names: Vec<String>) -> Result<Classes> {
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        if names.is_empty() || sorted.len() != names.len() {
            return Err(Error::InvalidArgument {
                op: "Classes::from_names",
                reason: format!("class names must be distinct and at least one: {names:?}"),
            });
        }
        Ok(Classes { names })
    }

    /// The ids of `labels`, i32 `[labels.len()]` on the CPU; a label that is not one of
    /// the classes is an error naming its row.
    pub fn encode(&self, labels: &[String]) -> Result<Tensor> {
        let ids = labels
            .iter()
            .enumerate()
            .map(|(i, l)| {
                self.id(l)
                    .map(|id| id as i32)
                    .ok_or_else(|| Error::InvalidArgument {
                        op: "Classes::encode",
                        reason: format!("row {i}'s label {l:?} is not one of {:?}", self.names),
                    })
            })
            .collect::<Result<Vec<i32>>>()?;
        Tensor::from_vec(ids, [labels.len()], &Device::cpu())
    }

    /// The id of the class named `label`.
    pub fn id(&self, label: &str) -> Option<usize> {
        self.names.iter().position(|n| n == label)
    }

    /// The name of class `id`.
    pub fn name(&self, id: usize) -> Option<&str> {
        self.names.get(id).map(String::as_str)
    }

    /// The class names, in id order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// How many classes.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when there are no classes (never, for `fit` and `from_names`).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}
