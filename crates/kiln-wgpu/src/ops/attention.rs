//! Fused attention (`shaders/attention/`): one launch forward, two backward, where the
//! composed way ran two products, a softmax and a masked scale forward and five
//! launches backward, each writing or reading the `[heads, queries, keys]` scores.

use crate::attention_split::AttentionSplit;
use crate::attention_way::AttentionWay;
use crate::autotune::{self, attention_class};
use crate::kernels::Kernel;
use crate::loop_budget;
use crate::ops::matmul::strides;
use crate::params::{to_u32, AttentionParams};
use crate::shader_constants::{ATTENTION_NARROW_QUADS, ATTENTION_QUADS, ATTENTION_ROWS};
use crate::storage::GpuStorage;
use kiln_core::{AttentionGradLayouts, AttentionSpec, DType, Error, MatmulOperand, Result};

/// The most features a query, key or value row may have.
pub const MAX_FEATURES: usize = 4 * ATTENTION_QUADS as usize;

/// `kernel`, or its build for narrow heads where `spec`'s fit it (fewer registers a
/// thread, and half the loop iterations over features).
fn build_for(kernel: Kernel, spec: &AttentionSpec) -> Kernel {
    let narrow = 4 * ATTENTION_NARROW_QUADS as usize;
    match spec.head_dim.max(spec.value_dim) <= narrow {
        true => kernel.narrow_attention().unwrap_or(kernel),
        false => kernel,
    }
}

/// The kernels' params, once `spec` is known to fit them; the backward's layouts too.
fn params(
    op: &'static str,
    q: &GpuStorage,
    spec: &AttentionSpec,
    layouts: Option<&AttentionGradLayouts>,
) -> Result<AttentionParams> {
    if q.dtype != DType::F32 {
        return Err(Error::Unsupported {
            op,
            reason: format!("the fused kernels take f32, not {:?}", q.dtype),
        });
    }
    if spec.head_dim.max(spec.value_dim) > MAX_FEATURES {
        return Err(Error::Unsupported {
            op,
            reason: format!(
                "heads of {} and {} features: the fused kernels keep at most {MAX_FEATURES} \
                 in registers",
                spec.head_dim, spec.value_dim
            ),
        });
    }
    // Each invocation loops over the rows of the other operand, a tile at a time, the
    // tile staged by a short loop: under two iterations a row. The loops over a row's
    // features have constant bounds, which llvmpipe unrolls: with this check off,
    // 20,000 keys of 64 features ran right there, and 70,000 keys of 8 did not.
    let longest = spec.queries.max(spec.keys);
    let iterations = 2 * longest;
    loop_budget::check(op, &q.device, iterations, || {
        format!(
            "attention over {} queries and {} keys",
            spec.queries, spec.keys
        )
    })?;
    // The kernels write the output through its strides unchecked.
    spec.check_out()?;
    let none = MatmulOperand::default();
    let l = match layouts {
        Some(l) => {
            l.check(spec)?;
            *l
        }
        None => AttentionGradLayouts {
            grad: none,
            dq: none,
            dk: none,
            dv: none,
            len: 0,
        },
    };
    let offsets = [spec.q.offset, spec.k.offset, spec.v.offset, l.grad.offset];
    let [oq, ok, ov, og] = offsets.map(|o| to_u32(op, "offset", o));
    let grad_offsets = [l.dq.offset, l.dk.offset, l.dv.offset];
    let [dq_offset, dk_offset, dv_offset] = grad_offsets.map(|o| to_u32(op, "offset", o));
    Ok(AttentionParams {
        queries: to_u32(op, "queries", spec.queries)?,
        keys: to_u32(op, "keys", spec.keys)?,
        head_dim: to_u32(op, "head size", spec.head_dim)?,
        value_dim: to_u32(op, "value size", spec.value_dim)?,
        batch1: to_u32(op, "batch", spec.batch[1].max(1))?,
        heads: to_u32(op, "heads", spec.heads())?,
        causal: u32::from(spec.causal),
        scale: spec.scale as f32,
        q_strides: strides(op, &spec.q)?,
        k_strides: strides(op, &spec.k)?,
        v_strides: strides(op, &spec.v)?,
        offsets: [oq?, ok?, ov?, og?],
        grad_strides: strides(op, &l.grad)?,
        dq_strides: strides(op, &l.dq)?,
        dk_strides: strides(op, &l.dk)?,
        dv_strides: strides(op, &l.dv)?,
        lanes: 1,
        dq_offset: dq_offset?,
        dk_offset: dk_offset?,
        dv_offset: dv_offset?,
        output_strides: strides(op, &spec.out)?,
    })
}

/// Launches `kernel` over `rows` rows of every head, each walking `walked` rows of the
/// other operand, spread as `split` says (`block_of` in the kernels counts the same
/// workgroups).
#[allow(clippy::too_many_arguments)]
fn launch(
    op: &'static str,
    kernel: Kernel,
    p: &AttentionParams,
    split: AttentionSplit,
    spec: &AttentionSpec,
    [rows, walked]: [usize; 2],
    inputs: &[&GpuStorage],
    outputs: &[&wgpu::Buffer],
) -> Result<()> {
    let device = &inputs[0].device;
    let lanes = split.lanes(spec.heads() * rows, walked);
    let per_group = (ATTENTION_ROWS / lanes) as usize;
    let groups = device.groups_for(op, rows.div_ceil(per_group) * spec.heads())?;
    let p = AttentionParams { lanes, ..*p };
    device.dispatch_with_inputs(
        op,
        build_for(kernel, spec),
        &[],
        &p,
        inputs,
        outputs,
        groups,
    )
}

/// How the kernels of one pass (forward, or the backward's two) spread their rows
/// here: the device's setting, or with `Autotune` the faster way for the shape class,
/// as `run` times it.
fn split_for<T>(
    q: &GpuStorage,
    spec: &AttentionSpec,
    backward: bool,
    run: impl FnMut(AttentionSplit) -> Result<T>,
) -> Result<AttentionSplit> {
    match q.device.attention_split() {
        AttentionSplit::Autotune => {
            let class = attention_class(
                q.dtype,
                spec.heads(),
                [spec.queries, spec.keys],
                [spec.head_dim, spec.value_dim],
                spec.causal,
                backward,
            );
            let class = format!("split {class}");
            autotune::tune(&q.device, class, &AttentionSplit::CANDIDATES, run)
        }
        split => Ok(split),
    }
}

/// The output (at `spec.out`) and each query's log-sum-exp.
pub(crate) fn attention(
    q: &GpuStorage,
    k: &GpuStorage,
    v: &GpuStorage,
    spec: &AttentionSpec,
) -> Result<(GpuStorage, GpuStorage)> {
    let op = "attention";
    let device = &q.device;
    // Set to compose, the forward is refused; a backward of a forward that ran still runs.
    if device.attention_way() == AttentionWay::Composed {
        return Err(Error::Unsupported {
            op,
            reason:
                "this device composes attention (KILN_ATTENTION=composed, or set_attention_way)"
                    .into(),
        });
    }
    let p = params(op, q, spec, None)?;
    let rows = spec.heads() * spec.queries;
    let run = |split| -> Result<(GpuStorage, GpuStorage)> {
        let out = device.alloc_output(op, rows * spec.value_dim, q.dtype)?;
        let lse = device.alloc_output(op, rows, q.dtype)?;
        if rows > 0 && spec.keys > 0 {
            let shape = [spec.queries, spec.keys];
            let outputs = [out.buffer(), lse.buffer()];
            launch(
                op,
                Kernel::Attention,
                &p,
                split,
                spec,
                shape,
                &[q, k, v],
                &outputs,
            )?;
        }
        Ok((
            GpuStorage::new(out, q.dtype, rows * spec.value_dim, device),
            GpuStorage::new(lse, q.dtype, rows, device),
        ))
    };
    match rows > 0 && spec.keys > 0 {
        true => run(split_for(q, spec, false, &run)?),
        false => run(AttentionSplit::Whole),
    }
}

/// The gradients of q, k and v in one storage, laid out as `layouts` says.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_backward(
    q: &GpuStorage,
    k: &GpuStorage,
    v: &GpuStorage,
    out: &GpuStorage,
    lse: &GpuStorage,
    grad: &GpuStorage,
    spec: &AttentionSpec,
    layouts: &AttentionGradLayouts,
) -> Result<GpuStorage> {
    let op = "attention_backward";
    let device = &q.device;
    let p = params(op, q, spec, Some(layouts))?;
    let (heads, queries, keys) = (spec.heads(), spec.queries, spec.keys);
    let run = |split| -> Result<GpuStorage> {
        let grads = device.alloc_output(op, layouts.len, q.dtype)?;
        if heads * queries > 0 && keys > 0 {
            let run_kernel = |kernel, shape, inputs: &[&GpuStorage], outputs: &[&wgpu::Buffer]| {
                launch(op, kernel, &p, split, spec, shape, inputs, outputs)
            };
            let delta = device.alloc_output(op, heads * queries, q.dtype)?;
            let (inputs, outputs) = ([q, k, v, out, grad, lse], [grads.buffer(), delta.buffer()]);
            let kernel = Kernel::AttentionBackwardQueries;
            run_kernel(kernel, [queries, keys], &inputs, &outputs)?;
            let delta = GpuStorage::new(delta, q.dtype, heads * queries, device);
            let (inputs, outputs) = ([q, k, v, grad, lse, &delta], [grads.buffer()]);
            let kernel = Kernel::AttentionBackwardKeys;
            run_kernel(kernel, [keys, queries], &inputs, &outputs)?;
        } else if layouts.len > 0 {
            // No query, so keys and values with zero gradients (0.0 is all zero bits).
            device.fill_words(op, &grads, 0)?;
        }
        Ok(GpuStorage::new(grads, q.dtype, layouts.len, device))
    };
    match heads * queries > 0 && keys > 0 {
        true => run(split_for(q, spec, true, &run)?),
        false => run(AttentionSplit::Whole),
    }
}
