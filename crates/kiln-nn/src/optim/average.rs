//! `ParameterAverage`: an exponential moving average of a model's parameters, kept in a
//! second copy of the model (PyTorch's `AveragedModel` with an EMA update). Averaging
//! damps the step-to-step swings of noisy training, GANs' above all, and the averaged
//! copy is the one to sample or evaluate.

use crate::module::Module;
use kiln::{Error, Result, Tensor};

/// An exponential moving average of a model's parameters, kept in a second copy of
/// the model (PyTorch's `AveragedModel` with an EMA update).
pub struct ParameterAverage {
    decay: f64,
    /// (live parameter, its average), matched by name.
    pairs: Vec<(Tensor, Tensor)>,
}

impl ParameterAverage {
    /// Tracks `live` in `average`, a model of the same architecture whose parameters are
    /// overwritten with `live`'s now. Each `update` then moves every average a share
    /// `1 - decay` of the way to its parameter.
    pub fn new(live: &dyn Module, average: &dyn Module, decay: f64) -> Result<Self> {
        if !(0.0..1.0).contains(&decay) {
            return Err(Error::InvalidArgument {
                op: "ParameterAverage",
                reason: format!("decay must be in [0, 1), got {decay}"),
            });
        }
        let (live, average) = (live.named_parameters(), average.named_parameters());
        let names = |p: &[(String, Tensor)]| p.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        if names(&live) != names(&average) {
            return Err(Error::InvalidArgument {
                op: "ParameterAverage",
                reason: format!(
                    "the models' parameters differ: {:?} and {:?}",
                    names(&live),
                    names(&average)
                ),
            });
        }
        let pairs: Vec<(Tensor, Tensor)> = live
            .into_iter()
            .zip(average)
            .map(|((_, p), (_, a))| (p, a))
            .collect();
        kiln::no_grad(|| pairs.iter().try_for_each(|(p, a)| a.set_data(&p.detach())))?;
        Ok(ParameterAverage { decay, pairs })
    }

    /// `average = decay * average + (1 - decay) * parameter`, for every parameter, in
    /// place (on a GPU, several averages to a launch).
    pub fn update(&self) -> Result<()> {
        let updates: Vec<_> = self.pairs.iter().map(|(p, a)| (a, p, 1.0)).collect();
        Tensor::update_moving_averages(&updates, self.decay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::Linear;
    use kiln::{Device, Rng};

    #[test]
    fn averages_follow_the_ema_formula() {
        let cpu = Device::cpu();
        let live = Linear::new(3, 2, &cpu, &mut Rng::new(1)).unwrap();
        let avg = Linear::new(3, 2, &cpu, &mut Rng::new(2)).unwrap();
        let ema = ParameterAverage::new(&live, &avg, 0.75).unwrap();
        let start = live.weight.to_vec::<f32>().unwrap();
        assert_eq!(
            avg.weight.to_vec::<f32>().unwrap(),
            start,
            "starts as a copy"
        );
        // Move the live weight by +1 twice: the average moves 0.25, then 0.25 * 0.75 + ...
        for step in 1..=2 {
            let moved = live.weight.detach().add_scalar(1.0).unwrap();
            kiln::no_grad(|| live.weight.set_data(&moved)).unwrap();
            ema.update().unwrap();
            let expected_shift: f64 = match step {
                1 => 0.25, // 0.75 * 0 + 0.25 * 1
                _ => 0.75 * 0.25 + 0.25 * 2.0,
            };
            for (a, s) in avg.weight.to_vec::<f32>().unwrap().iter().zip(&start) {
                assert!((*a as f64 - (*s as f64 + expected_shift)).abs() < 1e-6);
            }
        }
        // Same names, other shapes: the copy fails with a shape error.
        let other = Linear::new(3, 4, &cpu, &mut Rng::new(3)).unwrap();
        assert!(ParameterAverage::new(&live, &other, 0.9).is_err());
        assert!(ParameterAverage::new(&live, &avg, 1.0).is_err());
    }
}
