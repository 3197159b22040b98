//! Column reductions several to a launch. A backward pass leaves each bias and
//! layer-norm weight gradient as a deferred column sum, and all of them wait until the
//! optimizer reads the first (a transformer's step: 28, each a launch of its own).
//! When one must run, the device's other pending column reductions whose inputs are
//! computed run with it: `reduce_columns.wgsl`'s body for each workgroup, with the
//! params of the reduction the workgroup falls in, so each gives the bits it gives
//! alone.

use crate::deferred::Deferred;
use crate::deferred_group::{self, switch_on_member, Member};
use crate::device::GpuDevice;
use crate::fusion::FusedParams;
use crate::kernels::Kernel;
use crate::launch::Bindings;
use crate::ops::reduce::column_workgroups;
use crate::params::{ColumnsParams, ShaderParams};
use crate::pool::PooledBuffer;
use crate::storage::StorageData;
use kiln_core::{DType, Error, GpuErrorKind, Result};
use std::fmt::Write;
use std::time::Instant;

/// Reductions one launch takes at most: the most whose params fit in a launch's slot
/// (the size of a fused kernel's).
pub const MAX_GROUP: usize = 32;

/// The first workgroup of each of `k` reductions, then their total, four to a vec4.
const fn starts_vec4s(k: usize) -> usize {
    (k + 1).div_ceil(4)
}

/// Bytes of the params of a launch of `k` reductions: theirs, then the starts.
const fn params_size(k: usize) -> usize {
    ColumnsParams::LAYOUT.size * k + 16 * starts_vec4s(k)
}

const _: () = assert!(params_size(MAX_GROUP) <= std::mem::size_of::<FusedParams>());
// Uniform arrays take elements at multiples of 16 bytes.
const _: () = assert!(ColumnsParams::LAYOUT.size.is_multiple_of(16));

/// Runs `own`, taken from `data`, into `data`'s buffer, with the device's other pending
/// column reductions of its dtype whose inputs have been computed (as `own`'s must
/// be), as many to a launch as the device binds. Each fills its own storage.
pub(crate) fn run_with_others(
    device: &GpuDevice,
    data: &StorageData,
    own: Box<dyn Deferred>,
) -> Result<()> {
    let dtype = own.dtype();
    let joins = |l: &dyn Deferred| l.kernel() == Kernel::ReduceColumns && l.dtype() == dtype;
    // Each binds its input and its output.
    let size = (2, MAX_GROUP);
    deferred_group::run_with_others(device, data, own, size, joins, |launch| {
        launch_group(device, launch)
    })
}

/// One launch of the reductions `launch` (two or more of one dtype), into new buffers.
fn launch_group(device: &GpuDevice, launch: &[Member<'_>]) -> Result<Vec<PooledBuffer>> {
    let op = "column reduction";
    let start = Instant::now();
    let k = launch.len();
    let dtype = launch[0].1.dtype();
    let mut bytes = Vec::with_capacity(params_size(k));
    let mut starts = vec![0u32; 4 * starts_vec4s(k)];
    let mut total = 0usize;
    let mut outs = Vec::with_capacity(k);
    for (j, (_, l)) in launch.iter().enumerate() {
        let params: ColumnsParams = bytemuck::pod_read_unaligned(l.params());
        bytes.extend_from_slice(l.params());
        total += column_workgroups(&params);
        starts[j + 1] = u32::try_from(total).map_err(|_| Error::LimitExceeded {
            op,
            what: "workgroups",
            needed: total as u64,
            limit: u32::MAX as u64,
        })?;
        outs.push(device.alloc_output(op, l.len(), l.dtype())?);
    }
    bytes.extend_from_slice(bytemuck::cast_slice(&starts));
    let mut resources = Vec::with_capacity(2 * k);
    for ((_, l), out) in launch.iter().zip(&outs) {
        let input = l.inputs().first().ok_or_else(|| Error::Gpu {
            op,
            kind: GpuErrorKind::Internal,
            message: "a column reduction without its input".into(),
        })?;
        resources.push(input.raw()?.as_entire_binding());
        resources.push(out.buffer().as_entire_binding());
    }
    let kernel = Kernel::ReduceColumns;
    let key = format!("{kernel:?} [{dtype:?}] x{k}");
    let written = (0..k).map(|j| (0, 2 * j as u32 + 2)).collect();
    let pipeline = device.cached_pipeline(key, kernel, 1, written, || source(dtype, k))?;
    let groups = device.groups_for(op, total)?;
    let bind = Bindings::numbered(&bytes, &resources, 1);
    let name = || format!("{}:main [{dtype:?}] x{k} reductions", kernel.file().0);
    device.launch(op, &pipeline, &[bind], groups, start, name)?;
    Ok(outs)
}

/// `reduce_columns.wgsl` for `dtype`, built for `k` reductions: its params a private
/// copy of the workgroup's reduction's, its load and store switching on which one,
/// reduction j binding its input at 2j + 1 and its output at 2j + 2.
pub(crate) fn source(dtype: DType, k: usize) -> Result<String> {
    let kernel = Kernel::ReduceColumns;
    let text = kernel.specialise(&[dtype])?;
    let params = format!(
        "// Built for {k} reductions by kiln-wgpu's ops/column_group.rs.
struct GroupParams {{
    members: array<Params, {k}>,
    // the first workgroup of each reduction, then their total
    starts: array<vec4<u32>, {}>,
}}
@group(0) @binding(0) var<uniform> group: GroupParams;
// The reduction this workgroup runs, and its params.
var<private> member: u32;
var<private> params: Params;",
        starts_vec4s(k)
    );
    let text = kernel.splice(
        &text,
        "@group(0) @binding(0) var<uniform> params: Params;",
        Some(";"),
        &params,
    )?;
    let mut io = String::new();
    for j in 0..k {
        let _ = writeln!(
            io,
            "@group(0) @binding({}) var<storage, read> input{j}: array<T>;
@group(0) @binding({}) var<storage, read_write> output{j}: array<T>;",
            2 * j + 1,
            2 * j + 2
        );
    }
    let _ = write!(
        io,
        "fn load(i: u32) -> f32 {{\n{}\n}}\nfn store(i: u32, v: f32) {{\n{}\n}}",
        switch_on_member(k, |j| format!("return f32(input{j}[i]);")),
        switch_on_member(k, |j| format!("output{j}[i] = T(v);")),
    );
    let text = kernel.splice(&text, "// kiln:load", Some("// kiln:load end"), &io)?;
    let text = kernel.splice(&text, "// kiln:store", Some("// kiln:store end"), "")?;
    let entry = format!(
        "fn start(j: u32) -> u32 {{ return group.starts[j / 4u][j % 4u]; }}

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>, @builtin(local_invocation_index) t: u32) {{
    let w = wid.x + wid.y * groups.x;
    // The last reduction whose first workgroup is at or before this one (workgroups
    // past the total find no live output in the last).
    var j = 0u;
    while (j + 1u < {k}u && start(j + 1u) <= w) {{ j++; }}
    member = j;
    params = group.members[j];
    reduce_columns(w - start(j), t);
}}
"
    );
    kernel.splice(&text, "// kiln:entry", None, &entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generated_check::{bindings, struct_size};

    /// The kernel built for every group size is valid WGSL whose params are the bytes
    /// a launch writes, and which writes only the outputs.
    #[test]
    fn builds_validate_and_match_their_params() {
        for k in 2..=MAX_GROUP {
            let text = source(DType::F32, k).unwrap();
            let size = struct_size(&text, "GroupParams", &format!("x{k}"));
            assert_eq!(size, params_size(k), "x{k}");
            let written = bindings(&text, "read_write>");
            assert_eq!(
                written,
                (0..k as u32).map(|j| 2 * j + 2).collect::<Vec<_>>()
            );
        }
    }
}
