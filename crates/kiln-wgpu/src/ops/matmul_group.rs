//! Matrix products several to a launch. A backward pass leaves each weight's gradient
//! (the layer input's transpose times the output's gradient) as a deferred product
//! that nothing reads until the optimizer; a transformer's step then ran thirteen
//! products in a row, each of 4 to 16 tiles, on a card of 132 SMs. When a product of
//! the tiled or blocked kernels must run, the device's other pending products of its
//! kernel and dtype whose operands are computed run with it: each workgroup runs its
//! product's own copy of the kernel's code, reading that product's params and
//! bindings, so each gives the bits it gives alone. Only products too small to fill a
//! card alone join (a group costs a branch a workgroup; on a software adapter more:
//! `device::matmul_groups_by_default`).

use crate::deferred::Deferred;
use crate::deferred_group::{self, switch_on_member, Member};
use crate::device::GpuDevice;
use crate::fusion::FusedParams;
use crate::kernels::Kernel;
use crate::launch::Bindings;
use crate::ops::matmul::SPLIT_K_WORKGROUPS;
use crate::params::{MatmulMember, MatmulParams, ShaderParams};
use crate::pool::PooledBuffer;
use crate::storage::StorageData;
use crate::wgsl_functions;
use kiln_core::{DType, Error, GpuErrorKind, Result};
use std::fmt::Write;
use std::time::Instant;

/// Products one launch takes at most: the most whose params fit in a launch's slot
/// (the size of a fused kernel's).
pub const MAX_GROUP: usize = 15;

/// Bytes of the params of a launch of `k` products: theirs, then the total.
const fn params_size(k: usize) -> usize {
    MatmulMember::LAYOUT.size * k + 16
}

const _: () = assert!(params_size(MAX_GROUP) <= std::mem::size_of::<FusedParams>());
// Uniform arrays take elements at multiples of 16 bytes.
const _: () = assert!(MatmulMember::LAYOUT.size.is_multiple_of(16));

/// Whether `kernel`'s deferred products run several to a launch.
pub(crate) fn groups(kernel: Kernel) -> bool {
    matches!(
        kernel,
        Kernel::Matmul | Kernel::MatmulSmallTiled | Kernel::MatmulBlocked
    )
}

/// Products of fewer workgroups than this join launches of several: they leave a card
/// idle alone, where about two workgroups per SM of a 132-SM card fill it (and then a
/// group saves only a launch).
pub const SMALL_BELOW: usize = SPLIT_K_WORKGROUPS;

fn small(groups: [u32; 3]) -> bool {
    groups.iter().map(|&g| g as usize).product::<usize>() < SMALL_BELOW
}

/// Runs `own`, taken from `data`, into `data`'s buffer, with the device's other pending
/// small products of its kernel and dtype whose operands have been computed (as
/// `own`'s must be), as many to a launch as the device binds. Each fills its own
/// storage.
pub(crate) fn run_with_others(
    device: &GpuDevice,
    data: &StorageData,
    own: Box<dyn Deferred>,
) -> Result<()> {
    let (kernel, dtype) = (own.kernel(), own.dtype());
    let joins = |l: &dyn Deferred| {
        l.kernel() == kernel && l.dtype() == dtype && l.buffers() == 3 && small(l.groups())
    };
    // Each binds its operands and its output.
    let size = (3, MAX_GROUP);
    deferred_group::run_with_others(device, data, own, size, joins, |launch| {
        launch_group(device, launch)
    })
}

/// One launch of the products `launch` (two or more of one kernel and dtype), into new
/// buffers.
fn launch_group(device: &GpuDevice, launch: &[Member<'_>]) -> Result<Vec<PooledBuffer>> {
    let op = "matmul";
    let start = Instant::now();
    let k = launch.len();
    let kernel = launch[0].1.kernel();
    let dtype = launch[0].1.dtype();
    let workgroups = |total: usize| {
        u32::try_from(total).map_err(|_| Error::LimitExceeded {
            op,
            what: "workgroups",
            needed: total as u64,
            limit: u32::MAX as u64,
        })
    };
    let mut bytes = Vec::with_capacity(params_size(k));
    let mut total = 0usize;
    let mut outs = Vec::with_capacity(k);
    for (_, l) in launch {
        let p: MatmulParams = bytemuck::pod_read_unaligned(l.params());
        let [across, down, batches] = l.groups();
        let first = workgroups(total)?;
        let member = MatmulMember {
            m: p.m,
            n: p.n,
            k: p.k,
            batch1: p.batch1,
            lhs_strides: p.lhs_strides,
            rhs_strides: p.rhs_strides,
            offsets: p.offsets,
            tiles: [first, across, down, 0],
        };
        bytes.extend_from_slice(bytemuck::bytes_of(&member));
        total += (across * down * batches) as usize;
        outs.push(device.alloc_output(op, l.len(), l.dtype())?);
    }
    let mut resources = Vec::with_capacity(3 * k);
    for ((_, l), out) in launch.iter().zip(&outs) {
        let [lhs, rhs] = l.inputs() else {
            return Err(Error::Gpu {
                op,
                kind: GpuErrorKind::Internal,
                message: "a product without its two operands".into(),
            });
        };
        resources.push(lhs.raw()?.as_entire_binding());
        resources.push(rhs.raw()?.as_entire_binding());
        resources.push(out.buffer().as_entire_binding());
    }
    bytes.extend_from_slice(bytemuck::cast_slice(&[workgroups(total)?, 0, 0, 0]));
    let key = format!("{kernel:?} [{dtype:?}] x{k}");
    let written = (0..k).map(|j| (0, 3 * j as u32 + 3)).collect();
    let pipeline = device.cached_pipeline(key, kernel, 1, written, || source(kernel, dtype, k))?;
    let groups = device.groups_for(op, total)?;
    let bind = Bindings::numbered(&bytes, &resources, 1).per_member(3);
    let name = || format!("{} [{dtype:?}] x{k} products", kernel.label());
    device.launch(op, &pipeline, &[bind], groups, start, name)?;
    Ok(outs)
}

/// A product's sections beside its params, each binding one buffer (the operands, then
/// the output) and defining the function the kernel reads or writes it through:
/// (section, binding's name, binding from 1, function).
const IO: [(&str, &str, usize, &str); 3] = [
    ("load lhs", "lhs", 1, "read_lhs"),
    ("load rhs", "rhs", 2, "read_rhs"),
    ("store", "output", 3, "store"),
];

/// `kernel`'s source for `dtype`, built for `k` products: product j binding its lhs at
/// 3j + 1, its rhs at 3j + 2 and its output at 3j + 3, and running its own copy of the
/// functions that read the params, the operands or the output (or call one that
/// does), the copy reading product j's params and bindings by constant index. The entry
/// point finds the workgroup's product and switches once to its copy, where a switch in
/// each load would branch eight times a slice of k (the tiled kernel's loads).
pub(crate) fn source(kernel: Kernel, dtype: DType, k: usize) -> Result<String> {
    let text = kernel.specialise(&[dtype])?;
    let params = format!(
        "// Built for {k} products by kiln-wgpu's ops/matmul_group.rs.
{}struct GroupParams {{
    members: array<MatmulMember, {k}>,
    // x: the workgroups of all the products
    total: vec4<u32>,
}}
@group(0) @binding(0) var<uniform> group: GroupParams;",
        MatmulMember::LAYOUT.wgsl_struct()
    );
    let mut text = kernel.splice(
        &text,
        "@group(0) @binding(0) var<uniform> params: Params;",
        Some(";"),
        &params,
    )?;
    for (section, binding, first, function) in IO {
        let mut with = String::new();
        for j in 0..k {
            let at = 3 * j + first;
            let _ = match first {
                3 => writeln!(
                    with,
                    "@group(0) @binding({at}) var<storage, read_write> {binding}{j}: array<T>;
fn {function}_{j}(i: u32, v: f32) {{ {binding}{j}[i] = T(v); }}"
                ),
                _ => writeln!(
                    with,
                    "@group(0) @binding({at}) var<storage, read> {binding}{j}: array<T>;
fn {function}_{j}(i: u32) -> f32 {{ return f32({binding}{j}[i]); }}"
                ),
            };
        }
        let from = format!("// kiln:{section}");
        let to = format!("// kiln:{section} end");
        text = kernel.splice(&text, &from, Some(&to), with.trim_end())?;
    }
    // The kernel's own workgroup size, from its entry point, which is replaced.
    let lacks = |what: &str| Error::InvalidArgument {
        op: "specialise",
        reason: format!("{} lacks {what}", kernel.file().0),
    };
    let entry_at = text
        .find("// kiln:entry")
        .ok_or_else(|| lacks("`// kiln:entry`"))?;
    let size = (text[entry_at..].lines())
        .find(|l| l.starts_with("@compute"))
        .ok_or_else(|| lacks("an entry point after `// kiln:entry`"))?
        .to_string();
    let text = kernel.splice(&text, "// kiln:entry", None, "")?;
    // The functions each product runs a copy of.
    let functions = wgsl_functions::functions(&text);
    let mut own: Vec<&str> = IO.iter().map(|(.., f)| *f).collect();
    let reads_own = |f: &wgsl_functions::Function, own: &[&str]| {
        let body = &text[f.range.clone()];
        wgsl_functions::reads_member(body, "params")
            || own.iter().any(|&o| wgsl_functions::calls(body, o))
    };
    let mut copied = vec![false; functions.len()];
    while let Some(i) = (0..functions.len()).find(|&i| !copied[i] && reads_own(&functions[i], &own))
    {
        copied[i] = true;
        own.push(&functions[i].name);
    }
    if !own.contains(&"product") {
        return Err(lacks("a `fn product` that reads its params"));
    }
    let mut shared = String::with_capacity(text.len());
    let mut last = 0;
    for (f, _) in functions.iter().zip(&copied).filter(|(_, &c)| c) {
        shared.push_str(&text[last..f.range.start]);
        last = f.range.end;
    }
    shared.push_str(&text[last..]);
    let mut copies = String::new();
    for j in 0..k {
        let _ = writeln!(copies, "// Product {j}'s code.");
        for (f, _) in functions.iter().zip(&copied).filter(|(_, &c)| c) {
            let mut body = text[f.range.clone()].to_string();
            for name in &own {
                body = wgsl_functions::replace_word(&body, name, '(', &format!("{name}_{j}"));
            }
            let member = format!("group.members[{j}]");
            body = wgsl_functions::replace_word(&body, "params", '.', &member);
            let _ = writeln!(copies, "{body}");
        }
    }
    let cases = switch_on_member(k, |j| format!("product_{j}(tile, local, lid);"));
    Ok(format!(
        "{shared}{copies}
{size}
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
    let w = wid.x + wid.y * groups.x;
    // Workgroups past the total (the grid rounds it up) have no tile.
    if (w >= group.total.x) {{ return; }}
    // The last product whose first workgroup is at or before this one.
    var member = 0u;
    while (member + 1u < {k}u && group.members[member + 1u].tiles.x <= w) {{ member++; }}
    let g = group.members[member].tiles;
    let t = w - g.x;
    let tile = vec3(t % g.y, (t / g.y) % g.z, t / (g.y * g.z));
{cases}
}}
"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generated_check::{bindings, struct_size};

    /// The kernel built for every group size is valid WGSL whose params are the bytes
    /// a launch writes, and which writes only the outputs; every member it copies into
    /// a product's params is one of `MatmulParams`'.
    #[test]
    fn builds_validate_and_match_their_params() {
        for kernel in [
            Kernel::Matmul,
            Kernel::MatmulSmallTiled,
            Kernel::MatmulBlocked,
        ] {
            for dtype in [DType::F32, DType::F16] {
                for k in 2..=MAX_GROUP {
                    let label = format!("{kernel:?} {dtype:?} x{k}");
                    let text = source(kernel, dtype, k).unwrap();
                    let size = struct_size(&text, "GroupParams", &label);
                    assert_eq!(size, params_size(k), "{label}");
                    let written = bindings(&text, "read_write>");
                    let outputs: Vec<u32> = (0..k as u32).map(|j| 3 * j + 3).collect();
                    assert_eq!(written, outputs, "{label}");
                    let read = bindings(&text, "storage, read>");
                    assert_eq!(read.len(), 2 * k, "{label}");
                }
            }
        }
        for m in MatmulMember::LAYOUT
            .members
            .iter()
            .filter(|m| m.name != "tiles")
        {
            let twin = MatmulParams::LAYOUT
                .members
                .iter()
                .find(|p| p.name == m.name);
            assert_eq!(twin.map(|p| p.wgsl), Some(m.wgsl), "{}", m.name);
        }
    }
}
