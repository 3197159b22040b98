//! Checks that an attribution means something (Adebayo et al., 2018; Samek et al.,
//! 2017): a map that barely changes when the model's weights are randomised shows the
//! input, not the model (compare them with `spearman`); a map that ranks the input's
//! elements well makes the class's probability fall fast when they are removed in its
//! order, faster than in a random order (`deletion_curve`).

use kiln::{DType, Error, Result, Rng, Tensor};

use super::Model;

/// Spearman's rank correlation of two equally long samples (ties take their mean
/// rank): 1 for the same order, near 0 for unrelated ones.
pub fn spearman(a: &[f32], b: &[f32]) -> Result<f64> {
    if a.len() != b.len() || a.len() < 2 {
        return Err(Error::InvalidArgument {
            op: "spearman",
            reason: format!(
                "two samples of one length >= 2, got {} and {}",
                a.len(),
                b.len()
            ),
        });
    }
    let (ra, rb) = (ranks(a), ranks(b));
    let mean = (a.len() as f64 - 1.0) / 2.0;
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        cov += (x - mean) * (y - mean);
        va += (x - mean) * (x - mean);
        vb += (y - mean) * (y - mean);
    }
    if va == 0.0 || vb == 0.0 {
        // A constant sample has no order to agree with.
        return Ok(0.0);
    }
    Ok(cov / (va * vb).sqrt())
}

/// Ranks from 0, ties sharing their mean rank; NaN ranks last.
fn ranks(v: &[f32]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
    let mut out = vec![0.0; v.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && v[order[end]] == v[order[start]] {
            end += 1;
        }
        let rank = (start + end - 1) as f64 / 2.0;
        for &i in &order[start..end] {
            out[i] = rank;
        }
        start = end;
    }
    out
}

/// The probability of `class` as the elements of the single input `x` (`[1, ..]`) are
/// replaced by `fill`, in `order` (element indices), at `steps + 1` equally spaced
/// fractions from none to all: `[p_0, .., p_steps]`. All the copies run as one batch.
pub fn deletion_curve(
    model: &Model<'_>,
    x: &Tensor,
    class: usize,
    order: &[usize],
    steps: usize,
    fill: f32,
) -> Result<Vec<f64>> {
    let op = "deletion_curve";
    let n = x.elem_count();
    let mut seen = vec![false; n];
    let permutation = order.len() == n
        && order
            .iter()
            .all(|&i| i < n && !std::mem::replace(&mut seen[i], true));
    if x.rank() == 0 || x.dims()[0] != 1 || !permutation || steps == 0 {
        return Err(Error::InvalidArgument {
            op,
            reason: format!(
                "one input [1, ..] (got {:?}), an order that is a permutation of its {n} elements, and steps >= 1",
                x.dims()
            ),
        });
    }
    let values = x.to_dtype(DType::F32)?.to_vec::<f32>()?;
    let mut batch = Vec::with_capacity(n * (steps + 1));
    for k in 0..=steps {
        let mut copy = values.clone();
        for &i in &order[..n * k / steps] {
            copy[i] = fill;
        }
        batch.extend(copy);
    }
    let mut dims = x.dims().to_vec();
    dims[0] = steps + 1;
    let batch = Tensor::from_vec(batch, dims, &x.device())?.to_dtype(x.dtype())?;
    let probs = kiln::no_grad(|| model(&batch)?.softmax(-1))?;
    let classes = probs.dims()[1];
    if class >= classes {
        return Err(Error::InvalidArgument {
            op,
            reason: format!("class {class} for a model of {classes} classes"),
        });
    }
    let probs = probs.to_f64_vec()?;
    Ok((0..=steps).map(|k| probs[k * classes + class]).collect())
}

/// The mean of a curve sampled at equal steps over [0, 1] (the trapezoid rule): the
/// area under it.
pub fn mean_area(curve: &[f64]) -> f64 {
    match curve.len() {
        0 => f64::NAN,
        1 => curve[0],
        n => {
            let inner: f64 = curve[1..n - 1].iter().sum();
            (inner + (curve[0] + curve[n - 1]) / 2.0) / (n - 1) as f64
        }
    }
}

/// Element indices by decreasing `attribution` (the order a deletion curve removes
/// them in), NaN last.
pub fn by_attribution(attribution: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..attribution.len()).collect();
    order.sort_by(|&i, &j| {
        let key = |v: f32| if v.is_nan() { f32::NEG_INFINITY } else { v };
        key(attribution[j]).total_cmp(&key(attribution[i]))
    });
    order
}

/// A seeded random order of `n` element indices.
pub fn random_order(n: usize, seed: u64) -> Result<Vec<usize>> {
    let keys = Tensor::rand([n], DType::F32, &kiln::Device::cpu(), &mut Rng::new(seed))?
        .to_vec::<f32>()?;
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| keys[i].total_cmp(&keys[j]));
    Ok(order)
}
