//! Where a run stands, kept in the metadata of the checkpoints `fit` writes so that a
//! later `fit` can continue it: the epochs done and the loss monitored after each.
//! Replaying those losses puts any learning-rate schedule and the early-stopping count
//! back as they were; the epoch number continues the data's shuffling stream.

use kiln::{Error, Result};
use std::collections::HashMap;

const EPOCHS: &str = "run.epochs_done";
const MONITORED: &str = "run.monitored_losses";

#[derive(Clone, Debug, PartialEq)]
/// Where a run stands, kept in its checkpoints' metadata so that `--resume` can
/// continue it.
pub struct RunState {
    /// Epochs finished.
    pub epochs_done: usize,
    /// The monitored loss (validation, else training) after each epoch done.
    pub monitored: Vec<f64>,
}

impl RunState {
    /// As checkpoint metadata.
    pub fn to_metadata(&self) -> HashMap<String, String> {
        // `{:?}` prints the shortest text that reads back to the same f64.
        let losses: Vec<String> = self.monitored.iter().map(|m| format!("{m:?}")).collect();
        HashMap::from([
            (EPOCHS.to_string(), self.epochs_done.to_string()),
            (MONITORED.to_string(), losses.join(",")),
        ])
    }

    /// The run state of a checkpoint's metadata; an error naming what is missing or
    /// malformed (a checkpoint not written by `fit`, or edited).
    pub fn from_metadata(metadata: &HashMap<String, String>) -> Result<Self> {
        let bad = |reason: String| Error::InvalidArgument {
            op: "RunState",
            reason,
        };
        let get = |key: &str| {
            metadata.get(key).ok_or_else(|| {
                bad(format!("the checkpoint has no {key}: it was not written by fit (resume from last.safetensors)"))
            })
        };
        let epochs_done = get(EPOCHS)?
            .parse::<usize>()
            .map_err(|e| bad(format!("{EPOCHS}: {e}")))?;
        let text = get(MONITORED)?;
        let monitored = match text.is_empty() {
            true => Vec::new(),
            false => text
                .split(',')
                .map(|v| v.parse::<f64>())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| bad(format!("{MONITORED}: {e}")))?,
        };
        if monitored.len() != epochs_done {
            let reason = format!(
                "{epochs_done} epochs done but {} monitored losses",
                monitored.len()
            );
            return Err(bad(reason));
        }
        Ok(RunState {
            epochs_done,
            monitored,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_state_reads_back_exactly_and_refuses_what_does_not_fit() {
        let state = RunState {
            epochs_done: 3,
            monitored: vec![std::f64::consts::LN_10, 0.1 + 0.2, 1e-300],
        };
        assert_eq!(
            RunState::from_metadata(&state.to_metadata()).unwrap(),
            state
        );
        let mut broken = state.to_metadata();
        broken.insert(EPOCHS.into(), "4".into());
        assert!(RunState::from_metadata(&broken).is_err());
        assert!(RunState::from_metadata(&HashMap::new()).is_err());
    }
}
