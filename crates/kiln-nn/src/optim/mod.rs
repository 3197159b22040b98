//! Optimizers, gradient clipping, learning-rate schedules and parameter averaging. Updates run under
//! `no_grad` and write each parameter and its states in place
//! (`Tensor::optimizer_update_in_place`).

mod adam;
mod average;
mod clip;
mod rmsprop;
mod scheduler;
mod sgd;

pub use adam::Adam;
pub use average::ParameterAverage;
pub use clip::clip_grad_norm;
pub use rmsprop::RmsProp;
pub use scheduler::{CosineAnnealing, LinearWarmup, LrScheduler, ReduceLrOnPlateau, StepLr};
pub use sgd::Sgd;

use kiln::{Gradients, OptimizerStep, ParamUpdate, Result, Tensor};
use std::collections::{HashMap, HashSet};

/// Updates parameters from their gradients; its state (moments, momentum) can be
/// saved and loaded with a checkpoint.
pub trait Optimizer {
    /// Applies one update from `grads`; parameters without a gradient are left alone.
    fn step(&mut self, grads: &Gradients) -> Result<()>;
    /// The current learning rate.
    fn lr(&self) -> f64;
    /// Sets the learning rate (schedulers do).
    fn set_lr(&mut self, lr: f64);
    /// Named state tensors (moments, step count), for checkpoints.
    fn state(&self) -> Vec<(String, Tensor)>;
    /// Restores what `state` returned.
    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()>;
}

/// Parameter elements stepped together at most (64 MiB of f32 parameters).
const STEP_ELEMENTS: usize = 1 << 24;

/// One fused step (`spec`) of every parameter with a gradient in `grads`, in place
/// (`Tensor::optimizer_update_in_place`): the states of parameter `name` are
/// `states[k][name]` (created at zero on first use), stepped with it. A parameter
/// listed twice (weights tied under two names) is stepped once, with the first name's
/// states. The parameters of one device step together, on a GPU several to a launch.
pub(crate) fn step_all(
    params: &[(String, Tensor)],
    grads: &Gradients,
    states: &mut [&mut HashMap<String, Tensor>],
    spec: &OptimizerStep,
) -> Result<()> {
    step_in_runs(params, grads, states, spec, STEP_ELEMENTS)
}

/// `step_all` in runs of at most `run_elements` parameter elements.
fn step_in_runs(
    params: &[(String, Tensor)],
    grads: &Gradients,
    states: &mut [&mut HashMap<String, Tensor>],
    spec: &OptimizerStep,
    run_elements: usize,
) -> Result<()> {
    let mut held = Vec::new();
    let mut seen = HashSet::new();
    for (name, p) in params {
        let Some(g) = grads.get(p) else { continue };
        if !seen.insert(p.id()) {
            continue;
        }
        let s = states
            .iter_mut()
            .map(|b| buffer(b, name, p).cloned())
            .collect::<Result<Vec<_>>>()?;
        held.push((p, g, s));
    }
    // Parameters of one device, in runs of at most `run_elements` elements: where a
    // parameter cannot be written over (its data shared), its new values exist beside
    // the old until the run is stored, so a large model never holds two copies of all
    // its parameters and states at once.
    let mut runs: Vec<&[_]> = Vec::new();
    for same in held.chunk_by(|a, b| a.0.device() == b.0.device()) {
        let mut rest = same;
        while !rest.is_empty() {
            let mut elements = 0;
            let take = rest
                .iter()
                .take_while(|u| {
                    elements += u.0.elem_count();
                    elements <= run_elements
                })
                .count()
                .max(1);
            let (run, after) = rest.split_at(take);
            runs.push(run);
            rest = after;
        }
    }
    for same in runs {
        let updates: Vec<_> = same
            .iter()
            .map(|(param, grad, s)| ParamUpdate {
                param: *param,
                grad,
                states: s.iter().collect(),
                grad_scale: 1.0,
            })
            .collect();
        Tensor::optimizer_update_in_place(&updates, spec)?;
    }
    Ok(())
}

/// One named per-parameter buffer, created at zero on first use.
pub(crate) fn buffer<'a>(
    buffers: &'a mut HashMap<String, Tensor>,
    name: &str,
    like: &Tensor,
) -> Result<&'a Tensor> {
    if !buffers.contains_key(name) {
        buffers.insert(name.to_string(), like.detach().zeros_like()?);
    }
    Ok(&buffers[name])
}

/// Checks a saved optimizer state before any of it is loaded: each name must be one of
/// `scalars` or `{prefix}.{param}` for one of `prefixes` (the optimizer's own kind) and
/// one of its parameters, with that parameter's shape and dtype. State saved by another
/// optimizer is refused, naming the tensors. Buffers not yet created are not missing.
pub(crate) fn check_state(
    op: &'static str,
    prefixes: &[&str],
    scalars: &[&str],
    params: &[(String, Tensor)],
    state: &HashMap<String, Tensor>,
) -> Result<()> {
    let (mut unexpected, mut mismatched) = (Vec::new(), Vec::new());
    for (name, saved) in state {
        if scalars.contains(&name.as_str()) {
            continue;
        }
        let param = prefixes
            .iter()
            .find_map(|p| name.strip_prefix(p)?.strip_prefix('.'))
            .and_then(|p| params.iter().find(|(n, _)| n == p));
        match param {
            None => unexpected.push(name.clone()),
            Some((_, p)) => mismatched.extend(crate::train::mismatch(name, saved, p)),
        }
    }
    if unexpected.is_empty() && mismatched.is_empty() {
        return Ok(());
    }
    unexpected.sort();
    mismatched.sort();
    Err(kiln::Error::StateMismatch {
        op,
        missing: Vec::new(),
        unexpected,
        mismatched,
    })
}

/// Copies tensors named `{prefix}.{param}` from a checkpoint into `buffers`.
pub(crate) fn load_buffers(
    prefix: &str,
    params: &[(String, Tensor)],
    state: &HashMap<String, Tensor>,
    buffers: &mut HashMap<String, Tensor>,
) {
    for (name, _) in params {
        if let Some(t) = state.get(&format!("{prefix}.{name}")) {
            buffers.insert(name.clone(), t.detach());
        }
    }
}

pub(crate) fn save_buffers(
    prefix: &str,
    buffers: &HashMap<String, Tensor>,
) -> Vec<(String, Tensor)> {
    // Detached: tensors of their own, which keep these values when the optimizer's
    // next step writes over its buffers.
    let mut out: Vec<_> = buffers
        .iter()
        .map(|(n, t)| (format!("{prefix}.{n}"), t.detach()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln::{DType, Device, SgdSpec};

    /// Stepping in runs (of at most 15 elements here: one or two of the 10-, 4- and
    /// 12-element parameters at a time) gives every parameter and state what one run
    /// of all gives.
    #[test]
    fn stepping_in_runs_updates_every_parameter() {
        let spec = OptimizerStep::SgdMomentum(SgdSpec {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.0,
            nesterov: false,
        });
        let mut results = Vec::new();
        for run_elements in [15, usize::MAX] {
            let mut rng = kiln::Rng::new(5);
            let params: Vec<(String, Tensor)> = [10usize, 4, 12]
                .iter()
                .enumerate()
                .map(|(i, &n)| {
                    let t = Tensor::randn([n], DType::F32, &Device::cpu(), &mut rng).unwrap();
                    (format!("p{i}"), t.into_var().unwrap())
                })
                .collect();
            let mut momentum = HashMap::new();
            for _ in 0..2 {
                let loss = params
                    .iter()
                    .map(|(_, p)| p.square().unwrap().sum_all().unwrap())
                    .reduce(|a, b| a.add(&b).unwrap())
                    .unwrap();
                let grads = loss.backward().unwrap();
                let states = &mut [&mut momentum];
                kiln::no_grad(|| step_in_runs(&params, &grads, states, &spec, run_elements))
                    .unwrap();
            }
            let mut values: Vec<Vec<f32>> =
                params.iter().map(|(_, p)| p.to_vec().unwrap()).collect();
            for (name, _) in &params {
                values.push(momentum[name].to_vec().unwrap());
            }
            results.push(values);
        }
        assert_eq!(results[0], results[1]);
        assert_ne!(results[0][0], results[0][3], "the momentum was not stored");
    }
}
