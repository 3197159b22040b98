//! Optimizer kernels over several parameters in one launch. The shaders in
//! `shaders/optim/` define the update of one element as `fn update`; the kernel built
//! here calls it for each of its parameters, whose elements lie one after another in
//! the launch's index space, found from where each starts.

use crate::kernels::Kernel;
use crate::params::ShaderParams;
use kiln_core::{DType, Error, Result};
use std::fmt::Write;

/// Parameters one launch takes at most: its params hold their starts, and a
/// parameter's elements are found by comparing with each start in turn.
pub(crate) const MAX_GROUP: usize = 16;

/// Uniform arrays take 16-byte elements: the starts are packed four to a vec4.
const STARTS_VEC4S: usize = (MAX_GROUP + 1).div_ceil(4);

/// Bytes of a group kernel's params: the step's params at a 16-byte multiple, then the
/// starts.
pub(crate) const fn params_size(step_params: usize) -> usize {
    step_params.div_ceil(16) * 16 + 16 * STARTS_VEC4S
}

/// Storage buffers one parameter binds: itself, its gradient, its states, and a new
/// parameter and states.
fn buffers_per_parameter(states: usize) -> usize {
    3 + 2 * states
}

/// Parameters a launch can take within `max_storage_buffers` (the stage's limit).
pub(crate) fn group_size(max_storage_buffers: u32, states: usize) -> usize {
    (max_storage_buffers as usize / buffers_per_parameter(states)).min(MAX_GROUP)
}

/// The params of a launch over parameters starting at `starts` (then their total):
/// the step's, padded, then the starts.
pub(crate) fn params_bytes<P: ShaderParams>(step: &P, starts: &[u32]) -> Result<Vec<u8>> {
    if starts.len() > 4 * STARTS_VEC4S {
        return Err(Error::InvalidArgument {
            op: "optimizer_update",
            reason: format!("{} starts, above {}", starts.len(), 4 * STARTS_VEC4S),
        });
    }
    let mut bytes = bytemuck::bytes_of(step).to_vec();
    bytes.resize(bytes.len().div_ceil(16) * 16, 0);
    let mut padded = [0u32; 4 * STARTS_VEC4S];
    padded[..starts.len()].copy_from_slice(starts);
    bytes.extend_from_slice(bytemuck::cast_slice(&padded));
    Ok(bytes)
}

/// The bindings a group kernel writes: each parameter's new value and states.
pub(crate) fn written_bindings(k: usize, states: usize) -> Vec<u32> {
    let per = buffers_per_parameter(states);
    (0..k)
        .flat_map(|j| (0..=states).map(move |s| (1 + j * per + 2 + states + s) as u32))
        .collect()
}

/// `kernel`'s source for `k` parameters of `dtype`, each binding its parameter,
/// gradient, `states` states, new parameter and new states in that order.
pub(crate) fn source(kernel: Kernel, dtype: DType, k: usize, states: usize) -> Result<String> {
    let (path, _) = kernel.file();
    let text = kernel.specialise(&[dtype])?;
    let first_binding = "@group(0) @binding(0)";
    let missing = || Error::InvalidArgument {
        op: "optimizer_update",
        reason: format!("{path} lacks `fn update` before `{first_binding}`"),
    };
    let cut = text.find(first_binding).ok_or_else(missing)?;
    if !text[..cut].contains("fn update(") {
        return Err(missing());
    }
    let mut s = text[..cut].to_string();
    let _ = writeln!(
        s,
        "// Built for {k} parameters: kiln-wgpu's ops/optim_group.rs.
struct GroupParams {{
    step: Params,
    // Where each parameter's elements start in the launch, then their total.
    starts: array<vec4<u32>, {STARTS_VEC4S}>,
}}

@group(0) @binding(0) var<uniform> group: GroupParams;"
    );
    let per = buffers_per_parameter(states);
    for j in 0..k {
        let first = 1 + j * per;
        let mut names = vec![format!("param{j}"), format!("grad{j}")];
        names.extend((0..states).map(|s| format!("state{j}_{s}")));
        names.push(format!("param_out{j}"));
        names.extend((0..states).map(|s| format!("state_out{j}_{s}")));
        for (b, name) in names.iter().enumerate() {
            let access = match b < 2 + states {
                true => "read",
                false => "read_write",
            };
            let _ = writeln!(
                s,
                "@group(0) @binding({}) var<storage, {access}> {name}: array<T>;",
                first + b
            );
        }
    }
    let _ = write!(
        s,
        "
fn start(j: u32) -> u32 {{ return group.starts[j / 4u][j % 4u]; }}

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
    let i = (wid.y * nwg.x + wid.x) * WORKGROUP + lid;
    if (i >= start({k}u)) {{ return; }}"
    );
    for j in 0..k {
        let states_in: Vec<String> = (0..states)
            .map(|s| format!("f32(state{j}_{s}[e])"))
            .collect();
        let _ = write!(
            s,
            "
    if (i < start({next}u)) {{
        let e = i - start({j}u);
        let r = update(group.step, f32(param{j}[e]), f32(grad{j}[e]), array({states_in}));
        param_out{j}[e] = T(r.param);",
            next = j + 1,
            states_in = states_in.join(", ")
        );
        for st in 0..states {
            let _ = write!(s, "\n        state_out{j}_{st}[e] = T(r.states[{st}]);");
        }
        s.push_str("\n        return;\n    }");
    }
    s.push_str("\n}\n");
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generated_check::{bindings, struct_size};
    use crate::params::{AdamParams, ParamsLayout, RmsPropParams, SgdParams};

    /// Every optimizer's group kernel, for every group size, is valid WGSL whose
    /// params are the bytes `params_bytes` writes, and binds what it says it writes.
    #[test]
    fn group_kernels_validate_and_match_their_params() {
        let kernels: [(Kernel, usize, ParamsLayout); 3] = [
            (Kernel::AdamUpdate, 2, AdamParams::LAYOUT),
            (Kernel::SgdUpdate, 1, SgdParams::LAYOUT),
            (Kernel::RmsPropUpdate, 1, RmsPropParams::LAYOUT),
        ];
        for (kernel, states, layout) in kernels {
            for k in 2..=MAX_GROUP {
                let text = source(kernel, DType::F32, k, states).unwrap();
                let label = format!("{kernel:?} x{k}");
                let size = struct_size(&text, "GroupParams", &label);
                assert_eq!(size, params_size(layout.size), "{label}");
                let written = bindings(&text, "read_write>");
                assert_eq!(written, written_bindings(k, states), "{kernel:?} x{k}");
            }
        }
        let bytes = params_bytes(&bytemuck::Zeroable::zeroed() as &SgdParams, &[0, 3, 7]).unwrap();
        assert_eq!(bytes.len(), params_size(SgdParams::LAYOUT.size));
        assert_eq!(
            &bytes[bytes.len() - 16 * STARTS_VEC4S..][..12],
            bytemuck::cast_slice::<u32, u8>(&[0, 3, 7])
        );
    }
}
