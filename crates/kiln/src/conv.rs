//! Convolutions as im2col + batched matmul (1x1 convolutions skip the unfold; a backend
//! may unfold and multiply image by image, or read the columns in place, instead), and
//! transposed convolution as matmul + col2im (or as a backend computes it in one pass).
//! Weights follow PyTorch's layouts.

use crate::autograd::{track, Op};
use crate::Tensor;
use kiln_core::{DType, Error, Result, WindowSpec};

/// Stride, padding and dilation of a 2-D convolution, and its group count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dOptions {
    /// The window's step, (rows, columns).
    pub stride: (usize, usize),
    /// Zeros added on each side, (rows, columns).
    pub padding: (usize, usize),
    /// The spacing between the window's taps.
    pub dilation: (usize, usize),
    /// Channel groups: 1 for a full convolution, the channel count for a depthwise one.
    pub groups: usize,
}

impl Default for Conv2dOptions {
    fn default() -> Self {
        Conv2dOptions {
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
            groups: 1,
        }
    }
}

fn invalid(op: &'static str, reason: String) -> Error {
    Error::InvalidArgument { op, reason }
}

/// Dims of a 4-D input and a 4-D weight after the checks both convolutions share:
/// rank, device, dtype, and positive strides, dilations and kernel sizes.
fn conv_operands(
    op: &'static str,
    x: &Tensor,
    weight: &Tensor,
    o: &Conv2dOptions,
) -> Result<([usize; 4], [usize; 4])> {
    x.require_rank(op, 4)?;
    weight.require_rank(op, 4)?;
    x.same_device(op, weight)?;
    x.same_dtype(op, weight)?;
    x.require_float(op)?;
    let dims = |t: &Tensor| [t.dims()[0], t.dims()[1], t.dims()[2], t.dims()[3]];
    let (xd, wd) = (dims(x), dims(weight));
    if o.stride.0 == 0
        || o.stride.1 == 0
        || o.dilation.0 == 0
        || o.dilation.1 == 0
        || wd[2] == 0
        || wd[3] == 0
    {
        let reason = format!(
            "stride {:?}, dilation {:?} and kernel sizes must be positive",
            o.stride, o.dilation
        );
        return Err(invalid(op, reason));
    }
    Ok((xd, wd))
}

/// Grouped convolutions with at most this many input channels per group (depthwise has
/// one) are summed directly: through im2col they become many tiny matmuls.
const DIRECT_MAX_GROUP_CHANNELS: usize = 4;

impl Tensor {
    /// `input [n, c, h, w]`, `weight [out, c / groups, kh, kw]`, `bias [out]`.
    pub fn conv2d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        o: Conv2dOptions,
    ) -> Result<Tensor> {
        let op = "conv2d";
        let ([n, c, h, w], [out_c, wc, kh, kw]) = conv_operands(op, self, weight, &o)?;
        let g = o.groups;
        if g == 0 || c % g != 0 || out_c % g != 0 || wc * g != c {
            return Err(Error::ShapeMismatch {
                op,
                lhs: self.shape().clone(),
                rhs: weight.shape().clone(),
            });
        }
        let (oh, ow) = match (
            WindowSpec::out_size(h, kh, o.stride.0, o.padding.0, o.dilation.0),
            WindowSpec::out_size(w, kw, o.stride.1, o.padding.1, o.dilation.1),
        ) {
            (Some(a), Some(b)) => (a, b),
            _ => {
                return Err(Error::ShapeMismatch {
                    op,
                    lhs: self.shape().clone(),
                    rhs: weight.shape().clone(),
                })
            }
        };
        let (stride, padding, dilation) = (o.stride, o.padding, o.dilation);
        let spec = WindowSpec {
            n,
            c,
            h,
            w,
            kh,
            kw,
            stride,
            padding,
            dilation,
            oh,
            ow,
        };
        let record = Op::Conv2d {
            x: self.into(),
            w: weight.into(),
            spec,
            groups: g,
        };
        let mut out = track(record, || {
            let (x, weights) = (self.contiguous()?, weight.contiguous()?);
            if g > 1 && wc <= DIRECT_MAX_GROUP_CHANNELS {
                let storage = x
                    .storage()
                    .conv2d_direct(&weights.storage(), &spec, out_c, g)?;
                return Ok(Tensor::from_storage(storage, [n, out_c, oh, ow]));
            }
            let pointwise = kh == 1 && kw == 1 && o.stride == (1, 1) && o.padding == (0, 0);
            if !pointwise {
                if let Some(storage) =
                    x.storage()
                        .conv2d_unfolded(&weights.storage(), &spec, out_c, g)?
                {
                    return Ok(Tensor::from_storage(storage, [n, out_c, oh, ow]));
                }
            }
            let cols = if pointwise {
                x.reshape([n, c, h * w])?
            } else {
                Tensor::from_storage(x.storage().im2col(&spec)?, [n, c * kh * kw, oh * ow])
            };
            let kdim = wc * kh * kw;
            // [n, g, kdim, l] columns against [g, out/g, kdim] filters broadcast over n.
            let cols = cols.reshape([n, g, kdim, oh * ow])?;
            let filters = weights.reshape([1, g, out_c / g, kdim])?;
            filters.matmul(&cols)?.reshape([n, out_c, oh, ow])
        })?;
        if let Some(b) = bias {
            out = out.add(&b.reshape([1, out_c, 1, 1])?)?;
        }
        Ok(out)
    }

    /// `input [n, c, l]`, `weight [out, c / groups, k]`, `bias [out]`; options as in
    /// `conv2d` with the height entries ignored.
    pub fn conv1d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: usize,
        padding: usize,
        dilation: usize,
        groups: usize,
    ) -> Result<Tensor> {
        self.require_rank("conv1d", 3)?;
        weight.require_rank("conv1d", 3)?;
        let o = Conv2dOptions {
            stride: (1, stride),
            padding: (0, padding),
            dilation: (1, dilation),
            groups,
        };
        self.unsqueeze(2)?
            .conv2d(&weight.unsqueeze(2)?, bias, o)?
            .squeeze(2)
    }

    /// Transposed convolution (the gradient of `conv2d` with respect to its input):
    /// `input [n, c, h, w]`, `weight [c, out / groups, kh, kw]`, `bias [out]`.
    pub fn conv_transpose2d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        o: Conv2dOptions,
        output_padding: (usize, usize),
    ) -> Result<Tensor> {
        let op = "conv_transpose2d";
        let ([n, c, h, w], [wc, out_per_group, kh, kw]) = conv_operands(op, self, weight, &o)?;
        let g = o.groups;
        if g == 0 || wc != c || c % g != 0 {
            return Err(Error::ShapeMismatch {
                op,
                lhs: self.shape().clone(),
                rhs: weight.shape().clone(),
            });
        }
        if output_padding.0 >= o.stride.0.max(o.dilation.0)
            || output_padding.1 >= o.stride.1.max(o.dilation.1)
        {
            return Err(invalid(
                op,
                format!("output_padding {output_padding:?} must be below stride or dilation"),
            ));
        }
        if h == 0 || w == 0 {
            return Err(Error::InvalidShape {
                op,
                shape: self.shape().clone(),
                reason: "empty spatial dims".into(),
            });
        }
        let size = |i: usize, s: usize, p: usize, d: usize, k: usize, op_: usize| {
            ((i - 1) * s + d * (k - 1) + op_ + 1).checked_sub(2 * p)
        };
        let (oh, ow) = match (
            size(
                h,
                o.stride.0,
                o.padding.0,
                o.dilation.0,
                kh,
                output_padding.0,
            ),
            size(
                w,
                o.stride.1,
                o.padding.1,
                o.dilation.1,
                kw,
                output_padding.1,
            ),
        ) {
            (Some(a), Some(b)) if a > 0 && b > 0 => (a, b),
            _ => {
                return Err(Error::ShapeMismatch {
                    op,
                    lhs: self.shape().clone(),
                    rhs: weight.shape().clone(),
                })
            }
        };
        let out_c = out_per_group * g;
        let kdim = out_per_group * kh * kw;
        let (stride, padding, dilation) = (o.stride, o.padding, o.dilation);
        // The fold's geometry: the output is the image, the input sets the window grid.
        let spec = WindowSpec {
            n,
            c: out_c,
            h: oh,
            w: ow,
            kh,
            kw,
            stride,
            padding,
            dilation,
            oh: h,
            ow: w,
        };
        let record = Op::ConvTranspose2d {
            x: self.into(),
            w: weight.into(),
            spec,
            groups: g,
        };
        let mut out = track(record, || {
            let (x, weights) = (self.contiguous()?, weight.contiguous()?);
            if let Some(storage) =
                x.storage()
                    .conv_transpose2d_as_conv(&weights.storage(), &spec, c, g)?
            {
                return Ok(Tensor::from_storage(storage, [n, out_c, oh, ow]));
            }
            // columns [n, g, kdim, h*w] = filters^T [g, kdim, c/g] @ input [n, g, c/g, h*w].
            // f16 is multiplied and folded in f32 and rounded once at the end, as every
            // other product is: f16 columns would round each tap's sum before the fold
            // adds them (a 4% error on a near-cancelling output, against the in-place
            // kernels' one rounding).
            let dtype = x.dtype();
            let wide = |t: &Tensor| match dtype {
                DType::F16 => t.to_dtype(DType::F32),
                _ => Ok(t.clone()),
            };
            let filters = wide(&weights)?
                .reshape([1, g, c / g, kdim])?
                .transpose(-2, -1)?;
            let x = wide(&x)?.reshape([n, g, c / g, h * w])?;
            let cols = filters.matmul(&x)?.reshape([n, out_c * kh * kw, h * w])?;
            let folded = Tensor::from_storage(
                cols.contiguous()?.storage().col2im(&spec)?,
                [n, out_c, oh, ow],
            );
            folded.to_dtype(dtype)
        })?;
        if let Some(b) = bias {
            out = out.add(&b.reshape([1, out_c, 1, 1])?)?;
        }
        Ok(out)
    }
}

impl Tensor {
    /// The weight gradient of a convolution whose compact input is `self` and whose
    /// output gradient is `dy` (see `BackendStorage::conv2d_weight_grad`).
    pub(crate) fn conv2d_weight_grad(
        &self,
        dy: &Tensor,
        spec: &WindowSpec,
        out_channels: usize,
        groups: usize,
    ) -> Result<Tensor> {
        let (x, dy) = (self.contiguous()?, dy.contiguous()?);
        let storage = x
            .storage()
            .conv2d_weight_grad(&dy.storage(), spec, out_channels, groups)?;
        Ok(Tensor::from_storage(
            storage,
            [out_channels, spec.c / groups, spec.kh, spec.kw],
        ))
    }
}
