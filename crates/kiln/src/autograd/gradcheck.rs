//! `gradcheck`: compares the analytic gradient of any function built from kiln ops
//! with central finite differences, in f64 on the CPU.

use super::grad_mode::no_grad;
use crate::{DType, Device, Rng, Tensor};
use kiln_core::{Error, Result};

/// Finite-difference step and acceptance. The defaults are PyTorch's: the analytic
/// and numeric values agree when `|a - n| <= atol + rtol * |n|`.
#[derive(Clone, Copy, Debug)]
pub struct GradcheckOptions {
    /// The finite-difference step (1e-6).
    pub eps: f64,
    /// Absolute tolerance (1e-5).
    pub atol: f64,
    /// Relative tolerance (1e-3).
    pub rtol: f64,
    /// Seeds the random projection used when the output has several elements.
    pub seed: u64,
}

impl Default for GradcheckOptions {
    fn default() -> Self {
        GradcheckOptions {
            eps: 1e-6,
            atol: 1e-5,
            rtol: 1e-3,
            seed: 0,
        }
    }
}

/// What a passing check compared.
#[derive(Clone, Copy, Debug, Default)]
pub struct GradcheckReport {
    /// Gradient entries compared.
    pub checked: usize,
    /// Largest `|analytic - numeric|` seen.
    pub max_abs_error: f64,
}

/// Checks `f`'s gradient with respect to every floating-point input. Inputs are
/// copied to the CPU as f64 (integer inputs, such as indices, pass through as
/// constants). A multi-element output `y` is checked through `sum(y * r)` for a fixed
/// random `r`, which tests the whole vector-Jacobian product. Returns
/// `Err(Error::GradcheckFailed)` naming the first entry that disagrees.
pub fn gradcheck(
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[Tensor],
    opts: GradcheckOptions,
) -> Result<GradcheckReport> {
    let cpu = Device::cpu();
    let prepared = inputs
        .iter()
        .map(|t| {
            let t = t.detach().to_device(&cpu)?;
            if t.dtype().is_float() {
                t.to_dtype(DType::F64)?.contiguous()?.detach().into_var()
            } else {
                Ok(t)
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let y = f(&prepared)?;
    let r = Tensor::randn(
        y.shape().clone(),
        DType::F64,
        &cpu,
        &mut Rng::new(opts.seed),
    )?;
    let objective = |ins: &[Tensor]| -> Result<f64> {
        f(ins)?
            .to_dtype(DType::F64)?
            .mul(&r)?
            .sum_all()?
            .item::<f64>()
    };
    let grads = y.to_dtype(DType::F64)?.mul(&r)?.sum_all()?.backward()?;

    let mut report = GradcheckReport::default();
    for (i, input) in prepared.iter().enumerate() {
        if !input.dtype().is_float() {
            continue;
        }
        let analytic = match grads.get(input) {
            Some(g) => g.to_dtype(DType::F64)?.to_vec::<f64>()?,
            None => vec![0.0; input.elem_count()],
        };
        let base = input.to_vec::<f64>()?;
        for (j, &a) in analytic.iter().enumerate() {
            let at = |delta: f64| -> Result<f64> {
                let mut values = base.clone();
                values[j] += delta;
                let moved = Tensor::from_vec(values, input.shape().clone(), &cpu)?;
                let mut ins = prepared.clone();
                ins[i] = moved;
                no_grad(|| objective(&ins))
            };
            let numeric = (at(opts.eps)? - at(-opts.eps)?) / (2.0 * opts.eps);
            let error = (a - numeric).abs();
            // A NaN on either side fails too.
            let agrees = error <= opts.atol + opts.rtol * numeric.abs();
            if !agrees {
                return Err(Error::GradcheckFailed {
                    input: i,
                    index: j,
                    analytic: a,
                    numeric,
                });
            }
            report.checked += 1;
            report.max_abs_error = report.max_abs_error.max(error);
        }
    }
    Ok(report)
}
