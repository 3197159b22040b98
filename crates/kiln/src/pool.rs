//! Pooling over NCHW tensors: max (with indices), average, adaptive and global average.

use crate::autograd::{track, Op};
use crate::Tensor;
use kiln_core::{Error, PoolKind, Result, WindowSpec};

impl Tensor {
    fn window(
        &self,
        op: &'static str,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
        dilation: (usize, usize),
    ) -> Result<WindowSpec> {
        self.require_rank(op, 4)?;
        self.require_float(op)?;
        let (n, c, h, w) = (
            self.dims()[0],
            self.dims()[1],
            self.dims()[2],
            self.dims()[3],
        );
        if kernel.0 == 0
            || kernel.1 == 0
            || stride.0 == 0
            || stride.1 == 0
            || dilation.0 == 0
            || dilation.1 == 0
        {
            return Err(Error::InvalidArgument { op, reason: format!("kernel {kernel:?}, stride {stride:?} and dilation {dilation:?} must be positive") });
        }
        if 2 * padding.0 > kernel.0 || 2 * padding.1 > kernel.1 {
            return Err(Error::InvalidArgument {
                op,
                reason: format!("padding {padding:?} must be at most half the kernel {kernel:?}"),
            });
        }
        match (
            WindowSpec::out_size(h, kernel.0, stride.0, padding.0, dilation.0),
            WindowSpec::out_size(w, kernel.1, stride.1, padding.1, dilation.1),
        ) {
            (Some(oh), Some(ow)) => Ok(WindowSpec {
                n,
                c,
                h,
                w,
                kh: kernel.0,
                kw: kernel.1,
                stride,
                padding,
                dilation,
                oh,
                ow,
            }),
            _ => Err(Error::InvalidShape {
                op,
                shape: self.shape().clone(),
                reason: format!("a {kernel:?} window does not fit"),
            }),
        }
    }

    /// Max over each window; also returns the i32 index (`iy * w + ix` within the
    /// channel's plane) of each maximum, as PyTorch's `return_indices=True`.
    pub fn max_pool2d_with_indices(
        &self,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
        dilation: (usize, usize),
    ) -> Result<(Tensor, Tensor)> {
        let s = self.window("max_pool2d", kernel, stride, padding, dilation)?;
        let shape = [s.n, s.c, s.oh, s.ow];
        let (values, indices) = crate::no_grad(|| self.contiguous()?.storage().max_pool2d(&s))?;
        let (values, indices) = (
            Tensor::from_storage(values, shape),
            Tensor::from_storage(indices, shape),
        );
        let record = Op::MaxPool2d {
            x: self.into(),
            indices: indices.clone(),
            spec: s,
        };
        Ok((track(record, || Ok(values))?, indices))
    }

    /// The maximum of each window of `[n, c, h, w]` (padding never wins; NaN does).
    pub fn max_pool2d(
        &self,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Result<Tensor> {
        Ok(self
            .max_pool2d_with_indices(kernel, stride, padding, (1, 1))?
            .0)
    }

    /// Average over each window; `count_include_pad` as in PyTorch (default true there).
    pub fn avg_pool2d(
        &self,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
        count_include_pad: bool,
    ) -> Result<Tensor> {
        let s = self.window("avg_pool2d", kernel, stride, padding, (1, 1))?;
        self.avg_pool_tracked(s, PoolKind::Avg { count_include_pad })
    }

    /// Average over PyTorch's adaptive windows so the output is `[n, c, oh, ow]`.
    pub fn adaptive_avg_pool2d(&self, output: (usize, usize)) -> Result<Tensor> {
        let op = "adaptive_avg_pool2d";
        self.require_rank(op, 4)?;
        self.require_float(op)?;
        let (n, c, h, w) = (
            self.dims()[0],
            self.dims()[1],
            self.dims()[2],
            self.dims()[3],
        );
        if output.0 == 0 || output.1 == 0 || h == 0 || w == 0 {
            return Err(Error::InvalidArgument {
                op,
                reason: format!(
                    "output {output:?} and input {:?} must be non-empty",
                    self.shape()
                ),
            });
        }
        let s = WindowSpec {
            n,
            c,
            h,
            w,
            kh: 0,
            kw: 0,
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
            oh: output.0,
            ow: output.1,
        };
        self.avg_pool_tracked(s, PoolKind::AdaptiveAvg)
    }

    /// Mean over the spatial dims, keeping them as size 1: `[n, c, 1, 1]`.
    pub fn global_avg_pool2d(&self) -> Result<Tensor> {
        self.require_rank("global_avg_pool2d", 4)?;
        self.mean(&[2, 3], true)
    }
}

impl Tensor {
    fn avg_pool_tracked(&self, s: WindowSpec, kind: PoolKind) -> Result<Tensor> {
        track(
            Op::AvgPool2d {
                x: self.into(),
                spec: s,
                kind,
            },
            || {
                let storage = self.contiguous()?.storage().avg_pool2d(&s, kind)?;
                Ok(Tensor::from_storage(storage, [s.n, s.c, s.oh, s.ow]))
            },
        )
    }

    /// The input gradient of max pooling, from the output gradient `self`.
    pub(crate) fn max_pool2d_backward(&self, indices: &Tensor, s: &WindowSpec) -> Result<Tensor> {
        let (dy, indices) = (self.contiguous()?, indices.contiguous()?);
        let storage = dy.storage().max_pool2d_backward(&indices.storage(), s)?;
        Ok(Tensor::from_storage(storage, [s.n, s.c, s.h, s.w]))
    }

    /// The input gradient of (adaptive) average pooling, from the output gradient `self`.
    pub(crate) fn avg_pool2d_backward(&self, s: &WindowSpec, kind: PoolKind) -> Result<Tensor> {
        let storage = self.contiguous()?.storage().avg_pool2d_backward(s, kind)?;
        Ok(Tensor::from_storage(storage, [s.n, s.c, s.h, s.w]))
    }
}
