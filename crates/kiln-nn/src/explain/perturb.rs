//! Perturbation methods: what the score loses when part of the input is replaced by a
//! baseline value. Occlusion slides a square patch over images (Zeiler and Fergus,
//! 2014); feature ablation replaces one feature of tabular rows at a time.

use super::{check_batch, class_scores, Model};
use kiln::{DType, Error, Result, Tensor};

/// Occlusion's settings: a `size` x `size` patch moved by `stride`, filled with `fill`.
#[derive(Clone, Copy, Debug)]
pub struct Occlusion {
    /// The square patch's side, in pixels.
    pub size: usize,
    /// How far the patch moves between positions.
    pub stride: usize,
    /// The value an occluded pixel takes.
    pub fill: f64,
}

impl Default for Occlusion {
    fn default() -> Self {
        Occlusion {
            size: 4,
            stride: 2,
            fill: 0.0,
        }
    }
}

/// For each pixel of images `[N, C, H, W]`: the mean drop of the class score over the
/// patch positions that cover it (every channel patched together): `[N, H, W]`. All
/// patched copies of one image run as one batch.
pub fn occlusion(
    model: &Model<'_>,
    x: &Tensor,
    classes: &[usize],
    opts: Occlusion,
) -> Result<Tensor> {
    let op = "occlusion";
    check_batch(op, x, classes)?;
    let dims = x.dims().to_vec();
    if dims.len() != 4 || opts.size == 0 || opts.stride == 0 || opts.size > dims[2].min(dims[3]) {
        return Err(Error::InvalidArgument {
            op,
            reason: format!(
                "a {}-pixel patch with stride {} over images of shape {dims:?} ([N, C, H, W])",
                opts.size, opts.stride
            ),
        });
    }
    let (c, h, w) = (dims[1], dims[2], dims[3]);
    let starts = |n: usize| (0..=n - opts.size).step_by(opts.stride).collect::<Vec<_>>();
    let positions: Vec<(usize, usize)> = starts(h)
        .into_iter()
        .flat_map(|y| starts(w).into_iter().map(move |x| (y, x)))
        .collect();
    let device = x.device();
    let values = x.to_dtype(DType::F32)?.to_vec::<f32>()?;
    let mut out = Vec::with_capacity(classes.len() * h * w);
    for (i, image) in values.chunks(c * h * w).enumerate() {
        // The image itself, then one copy per patch position.
        let mut batch = image.to_vec();
        for &(y0, x0) in &positions {
            let mut copy = image.to_vec();
            for ch in 0..c {
                for y in y0..y0 + opts.size {
                    let row = ch * h * w + y * w;
                    copy[row + x0..row + x0 + opts.size].fill(opts.fill as f32);
                }
            }
            batch.extend(copy);
        }
        let copies = positions.len() + 1;
        let batch = Tensor::from_vec(batch, [copies, c, h, w], &device)?.to_dtype(x.dtype())?;
        let scores = kiln::no_grad(|| class_scores(&model(&batch)?, &vec![classes[i]; copies]))?
            .to_f64_vec()?;
        let (mut total, mut count) = (vec![0.0f64; h * w], vec![0u32; h * w]);
        for (&(y0, x0), s) in positions.iter().zip(&scores[1..]) {
            for y in y0..y0 + opts.size {
                for x in x0..x0 + opts.size {
                    total[y * w + x] += scores[0] - s;
                    count[y * w + x] += 1;
                }
            }
        }
        out.extend(
            total
                .iter()
                .zip(&count)
                .map(|(t, &k)| if k == 0 { 0.0 } else { (t / k as f64) as f32 }),
        );
    }
    Tensor::from_vec(out, [classes.len(), h, w], &device)?.to_dtype(x.dtype())
}

/// For tabular rows `[N, F]`: score(x) - score(x with feature j set to `baseline[j]`),
/// `[N, F]`. All ablated copies run as one batch.
pub fn feature_ablation(
    model: &Model<'_>,
    x: &Tensor,
    classes: &[usize],
    baseline: &[f32],
) -> Result<Tensor> {
    let op = "feature_ablation";
    check_batch(op, x, classes)?;
    let dims = x.dims().to_vec();
    if dims.len() != 2 || baseline.len() != dims[1] {
        return Err(Error::InvalidArgument {
            op,
            reason: format!(
                "rows [N, F] and one baseline value per feature, got {dims:?} and {}",
                baseline.len()
            ),
        });
    }
    let (n, f) = (dims[0], dims[1]);
    let values = x.to_dtype(DType::F32)?.to_vec::<f32>()?;
    // The rows, then for each feature j the rows with j ablated.
    let mut batch = values.clone();
    for (j, &b) in baseline.iter().enumerate() {
        let mut copy = values.clone();
        for row in copy.chunks_mut(f) {
            row[j] = b;
        }
        batch.extend(copy);
    }
    let batch = Tensor::from_vec(batch, [(f + 1) * n, f], &x.device())?.to_dtype(x.dtype())?;
    let all: Vec<usize> = (0..=f).flat_map(|_| classes.iter().copied()).collect();
    let scores = kiln::no_grad(|| class_scores(&model(&batch)?, &all))?.to_f64_vec()?;
    let mut out = vec![0.0f32; n * f];
    for i in 0..n {
        for j in 0..f {
            out[i * f + j] = (scores[i] - scores[(j + 1) * n + i]) as f32;
        }
    }
    Tensor::from_vec(out, [n, f], &x.device())?.to_dtype(x.dtype())
}
