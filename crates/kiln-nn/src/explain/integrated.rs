//! Integrated Gradients (Sundararajan et al., 2017): the gradient averaged along the
//! straight path from a baseline to the input, times their difference. Its
//! attributions sum to score(x) - score(baseline) ("completeness") up to the error of
//! the path integral's discretisation, which is returned with them.

use super::{check_batch, class_scores, repeat_batch, score_gradient, Model};
use kiln::{Error, Result, Tensor};

/// Integrated Gradients' settings and result.
#[derive(Clone, Debug)]
pub struct IntegratedGradients {
    /// Attributions, the shape of the input.
    pub attribution: Tensor,
    /// Per input: the attributions' sum minus (score(x) - score(baseline)).
    pub completeness_error: Vec<f64>,
    /// Per input: score(x) - score(baseline), against which the error is small.
    pub score_change: Vec<f64>,
}

/// Integrated Gradients over `steps` points of the path (their midpoints, all inputs'
/// points as one batch), from `baseline` (the shape of `x`; zeros, a black image, when
/// `None`).
pub fn integrated_gradients(
    model: &Model<'_>,
    x: &Tensor,
    classes: &[usize],
    baseline: Option<&Tensor>,
    steps: usize,
) -> Result<IntegratedGradients> {
    let op = "integrated_gradients";
    check_batch(op, x, classes)?;
    if steps == 0 {
        return Err(Error::InvalidArgument {
            op,
            reason: "steps must be at least 1".into(),
        });
    }
    let x = x.detach();
    let baseline = match baseline {
        Some(b) if b.dims() != x.dims() => {
            return Err(Error::ShapeMismatch {
                op,
                lhs: x.shape().clone(),
                rhs: b.shape().clone(),
            })
        }
        Some(b) => b.detach().to_device(&x.device())?.to_dtype(x.dtype())?,
        None => x.zeros_like()?,
    };
    let n = classes.len();
    let diff = x.sub(&baseline)?;
    // Point k of every input: baseline + alpha_k (x - baseline), alpha_k at the
    // midpoints of `steps` equal parts of [0, 1].
    let mut alpha_shape = vec![steps * n];
    alpha_shape.extend(std::iter::repeat_n(1, x.rank() - 1));
    let alphas: Vec<f32> = (0..steps)
        .flat_map(|k| std::iter::repeat_n((k as f32 + 0.5) / steps as f32, n))
        .collect();
    let alphas = Tensor::from_vec(alphas, alpha_shape, &x.device())?.to_dtype(x.dtype())?;
    let points = repeat_batch(&baseline, steps)?.add(&repeat_batch(&diff, steps)?.mul(&alphas)?)?;
    let all_classes: Vec<usize> = (0..steps).flat_map(|_| classes.iter().copied()).collect();
    let grads = score_gradient(model, &points, &all_classes)?;
    let mut dims = vec![steps];
    dims.extend_from_slice(x.dims());
    let attribution = grads.reshape(dims)?.mean(&[0], false)?.mul(&diff)?;
    let ends = kiln::no_grad(|| {
        class_scores(
            &model(&Tensor::cat(&[x.clone(), baseline.clone()], 0)?)?,
            &[classes, classes].concat(),
        )
    })?
    .to_f64_vec()?;
    let score_change: Vec<f64> = (0..n).map(|i| ends[i] - ends[n + i]).collect();
    let rest: Vec<isize> = (1..x.rank() as isize).collect();
    let sums = match rest.is_empty() {
        true => attribution.clone(),
        false => attribution.sum(&rest, false)?,
    }
    .to_f64_vec()?;
    let completeness_error = sums.iter().zip(&score_change).map(|(s, c)| s - c).collect();
    Ok(IntegratedGradients {
        attribution,
        completeness_error,
        score_change,
    })
}
