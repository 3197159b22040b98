//! Optimizer kernels over several parameters in one launch. The shaders in
//! `shaders/optim/` define the update of one element as `fn update`; the kernel built
//! here calls it for each of its parameters, whose elements lie one after another in
//! the launch's index space, found from where each starts, on its gradient times the
//! parameter's scale. It writes new buffers beside the old ones, or over the parameters
//! and states themselves (`Writes`).

use crate::kernels::Kernel;
use kiln_core::{DType, Error, Result};
use std::fmt::Write;

/// Parameters one launch takes at most: its params hold their starts and scales, and a
/// parameter's elements are found by comparing with each start in turn.
pub(crate) const MAX_GROUP: usize = 16;

/// Uniform arrays take 16-byte elements: the starts are packed four to a vec4.
const STARTS_VEC4S: usize = (MAX_GROUP + 1).div_ceil(4);
/// And the gradients' scales.
const SCALES_VEC4S: usize = MAX_GROUP.div_ceil(4);

/// Where a group kernel writes each parameter's new value and states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Writes {
    /// Into new buffers: a parameter binds itself, its gradient, its states, then the
    /// new parameter and states.
    New,
    /// Over the parameter and states: each binds itself, its gradient, then its states.
    InPlace,
}

impl Writes {
    /// Storage buffers one parameter binds.
    fn buffers_per_parameter(self, states: usize) -> usize {
        match self {
            Writes::New => 3 + 2 * states,
            Writes::InPlace => 2 + states,
        }
    }

    /// The binding (from 0, after the params) of parameter `j`'s value written, and of
    /// its state `s` written after it.
    fn written(self, j: usize, states: usize) -> impl Iterator<Item = usize> {
        let first = j * self.buffers_per_parameter(states);
        let (param, states_from) = match self {
            Writes::New => (first + 2 + states, first + 3 + states),
            Writes::InPlace => (first, first + 2),
        };
        std::iter::once(param).chain(states_from..states_from + states)
    }
}

/// Bytes of a group kernel's params: the step's params at a 16-byte multiple, then the
/// starts, then the scales.
pub(crate) const fn params_size(step_params: usize) -> usize {
    step_params.div_ceil(16) * 16 + 16 * (STARTS_VEC4S + SCALES_VEC4S)
}

/// Parameters a launch can take within `max_storage_buffers` (the stage's limit), the
/// launch binding one more buffer where its gradients are also multiplied by a value on
/// the device (`by_device`).
pub(crate) fn group_size(
    max_storage_buffers: u32,
    states: usize,
    writes: Writes,
    by_device: bool,
) -> usize {
    let room = (max_storage_buffers as usize).saturating_sub(by_device as usize);
    (room / writes.buffers_per_parameter(states)).min(MAX_GROUP)
}

/// The params of a launch over parameters starting at `starts` (then their total),
/// their gradients times `scales`: the step's, padded, then the starts and the scales.
pub(crate) fn params_bytes(step: &[u8], starts: &[u32], scales: &[f32]) -> Result<Vec<u8>> {
    if starts.len() > 4 * STARTS_VEC4S || scales.len() > 4 * SCALES_VEC4S {
        return Err(Error::InvalidArgument {
            op: "optimizer_update",
            reason: format!(
                "{} starts and {} scales, above {} and {}",
                starts.len(),
                scales.len(),
                4 * STARTS_VEC4S,
                4 * SCALES_VEC4S
            ),
        });
    }
    let mut bytes = step.to_vec();
    bytes.resize(bytes.len().div_ceil(16) * 16, 0);
    let mut padded = [0u32; 4 * STARTS_VEC4S];
    padded[..starts.len()].copy_from_slice(starts);
    bytes.extend_from_slice(bytemuck::cast_slice(&padded));
    let mut padded = [0f32; 4 * SCALES_VEC4S];
    padded[..scales.len()].copy_from_slice(scales);
    bytes.extend_from_slice(bytemuck::cast_slice(&padded));
    Ok(bytes)
}

/// The bindings a group kernel writes: each parameter's new value and states.
pub(crate) fn written_bindings(k: usize, states: usize, writes: Writes) -> Vec<u32> {
    (0..k)
        .flat_map(|j| writes.written(j, states).map(|b| 1 + b as u32))
        .collect()
}

/// `kernel`'s source for `k` parameters of `dtype` with `states` states each, binding
/// them as `writes` says; with `by_device`, every gradient is also multiplied by the
/// one value of a buffer bound after them (a clipping coefficient the device computed).
pub(crate) fn source(
    kernel: Kernel,
    dtype: DType,
    k: usize,
    states: usize,
    writes: Writes,
    by_device: bool,
) -> Result<String> {
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
        "// Built for {k} parameters ({writes:?}): kiln-wgpu's ops/optim_group.rs.
struct GroupParams {{
    step: Params,
    // Where each parameter's elements start in the launch, then their total.
    starts: array<vec4<u32>, {STARTS_VEC4S}>,
    // What each parameter's gradient is multiplied by.
    scales: array<vec4<f32>, {SCALES_VEC4S}>,
}}

@group(0) @binding(0) var<uniform> group: GroupParams;"
    );
    let per = writes.buffers_per_parameter(states);
    // Each parameter's value and states as read, then as written.
    let read = |j: usize| -> (String, Vec<String>) {
        let states = (0..states).map(|s| format!("state{j}_{s}")).collect();
        (format!("param{j}"), states)
    };
    let written = |j: usize| match writes {
        Writes::New => {
            let states = (0..states).map(|s| format!("state_out{j}_{s}")).collect();
            (format!("param_out{j}"), states)
        }
        Writes::InPlace => read(j),
    };
    for j in 0..k {
        let (param, state_names) = read(j);
        let mut names = vec![param, format!("grad{j}")];
        names.extend(state_names);
        if writes == Writes::New {
            let (param_out, states_out) = written(j);
            names.push(param_out);
            names.extend(states_out);
        }
        let writes_to: Vec<usize> = writes.written(j, states).collect();
        for (b, name) in names.iter().enumerate() {
            let access = match writes_to.contains(&(j * per + b)) {
                true => "read_write",
                false => "read",
            };
            let _ = writeln!(
                s,
                "@group(0) @binding({}) var<storage, {access}> {name}: array<T>;",
                1 + j * per + b
            );
        }
    }
    let scale = match by_device {
        true => {
            let _ = writeln!(
                s,
                "@group(0) @binding({}) var<storage, read> device_scale: array<T>;",
                1 + k * per
            );
            "group.scales[j / 4u][j % 4u] * f32(device_scale[0])"
        }
        false => "group.scales[j / 4u][j % 4u]",
    };
    let _ = write!(
        s,
        "
fn start(j: u32) -> u32 {{ return group.starts[j / 4u][j % 4u]; }}
fn scale(j: u32) -> f32 {{ return {scale}; }}

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
    let i = (wid.y * nwg.x + wid.x) * WORKGROUP + lid;
    if (i >= start({k}u)) {{ return; }}"
    );
    for j in 0..k {
        let (param, state_names) = read(j);
        let mut states_in: Vec<String> =
            state_names.iter().map(|n| format!("f32({n}[e])")).collect();
        if states_in.is_empty() {
            // A step that keeps no state (SGD without momentum) reads a zero.
            states_in.push("0.0".into());
        }
        let (param_out, states_out) = written(j);
        let _ = write!(
            s,
            "
    if (i < start({next}u)) {{
        let e = i - start({j}u);
        let r = update(group.step, f32({param}[e]), scale({j}u) * f32(grad{j}[e]), array({states_in}));
        {param_out}[e] = T(r.param);",
            next = j + 1,
            states_in = states_in.join(", ")
        );
        for (st, name) in states_out.iter().enumerate() {
            let _ = write!(s, "\n        {name}[e] = T(r.states[{st}]);");
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
    use crate::params::{
        AdamParams, MovingAverageParams, ParamsLayout, RmsPropParams, SgdParams, ShaderParams,
    };

    /// Every optimizer's group kernel, for every group size, with and without a scale
    /// on the device, is valid WGSL whose params are the bytes `params_bytes` writes,
    /// and binds what it says it writes and as many buffers as `group_size` allows for.
    #[test]
    fn group_kernels_validate_and_match_their_params() {
        let kernels: [(Kernel, usize, ParamsLayout); 5] = [
            (Kernel::AdamUpdate, 2, AdamParams::LAYOUT),
            (Kernel::SgdUpdate, 1, SgdParams::LAYOUT),
            (Kernel::SgdUpdate, 0, SgdParams::LAYOUT),
            (Kernel::RmsPropUpdate, 1, RmsPropParams::LAYOUT),
            (Kernel::MovingAverageUpdate, 0, MovingAverageParams::LAYOUT),
        ];
        for (kernel, states, layout) in kernels {
            for (writes, by_device) in [Writes::New, Writes::InPlace]
                .into_iter()
                .flat_map(|w| [(w, false), (w, true)])
            {
                for k in 1..=MAX_GROUP {
                    let text = source(kernel, DType::F32, k, states, writes, by_device).unwrap();
                    let label = format!("{kernel:?} x{k} {writes:?}, by device {by_device}");
                    let size = struct_size(&text, "GroupParams", &label);
                    assert_eq!(size, params_size(layout.size), "{label}");
                    let written = bindings(&text, "read_write>");
                    assert_eq!(written, written_bindings(k, states, writes), "{label}");
                    let all = bindings(&text, "array<T>;");
                    let bound = k * writes.buffers_per_parameter(states) + by_device as usize;
                    assert_eq!(all, (1..=bound as u32).collect::<Vec<_>>(), "{label}");
                    // Exactly what a launch of k binds takes k to a launch.
                    let most = group_size(bound as u32, states, writes, by_device);
                    assert_eq!(most, k, "{label}");
                }
            }
        }
        let step: SgdParams = bytemuck::Zeroable::zeroed();
        let bytes = params_bytes(bytemuck::bytes_of(&step), &[0, 3, 7], &[1.0, 0.5]).unwrap();
        assert_eq!(bytes.len(), params_size(SgdParams::LAYOUT.size));
        let starts = &bytes[SgdParams::LAYOUT.size.div_ceil(16) * 16..];
        assert_eq!(&starts[..12], bytemuck::cast_slice::<u32, u8>(&[0, 3, 7]));
        assert_eq!(
            &bytes[bytes.len() - 16 * SCALES_VEC4S..][..8],
            bytemuck::cast_slice::<f32, u8>(&[1.0, 0.5])
        );
    }
}
