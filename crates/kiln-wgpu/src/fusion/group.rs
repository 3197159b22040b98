//! Pending expressions several to a launch. An optimizer step needs every gradient at
//! once, and a gradient that autograd summed from two passes over a layer (a GAN's
//! discriminator sees real and generated images) is a pending sum of values already
//! computed: nothing fuses it, and each ran as a small kernel of its own, six in a row
//! in a GAN step. Expressions needed together that share no storage run in one launch:
//! each in a bind group of its own, as in its own kernel, the invocations past one
//! expression's elements taking the next one's. Each gives the bits it gives alone.

use super::epilogue::epilogue_read;
use super::program::Program;
use super::run::run;
use super::wgsl::{self, FusedParams};
use crate::device::GpuDevice;
use crate::kernels::Kernel;
use crate::launch::Bindings;
use crate::shader_constants;
use crate::storage::{GpuStorage, StorageData};
use kiln_core::Result;
use std::fmt::Write;
use std::sync::Arc;
use std::time::Instant;

/// Expressions of more elements than this run alone: their launch's fixed cost is a
/// small share of their work, and the sum of several must stay within a launch's
/// workgroups.
pub(crate) const SMALL_ELEMENTS: usize = 1 << 20;

/// Computes each of `storages` that is pending, those that are small expressions
/// needing no launch's epilogue and sharing no storage with each other several to a
/// launch; the rest as `GpuStorage::buffer` would.
pub(crate) fn run_together(device: &GpuDevice, storages: &[&GpuStorage]) -> Result<()> {
    let mut members: Vec<&GpuStorage> = Vec::new();
    for s in storages {
        let alone = !s.is_pending() || s.is_deferred() || s.len == 0 || s.len > SMALL_ELEMENTS;
        let seen = members.iter().any(|m| Arc::ptr_eq(&m.data, &s.data));
        if !alone && !seen {
            members.push(s);
        }
    }
    if members.len() > 1 {
        // What each reads is computed first, but for a launch still to run that can
        // take it as its epilogue (a sum of two weight gradients, the second's product
        // yet to run): that may run a member (a read of another's expression), or the
        // launch another would have followed, with others of its kernel (a column
        // reduction's group), leaving that one to run here.
        for m in &members {
            if let Some((p, follows)) = lowered(device, m)? {
                let candidate = follows.then(|| epilogue_read(&p)).flatten();
                for (i, read) in p.reads.iter().enumerate() {
                    if Some(i) != candidate {
                        read.arg.storage.buffer()?;
                    }
                }
            }
        }
        // Those a launch still takes as its epilogue run with it, their programs let go
        // first: held, the launch's output would not be the epilogue's alone, and it
        // would write it too.
        for m in &members {
            let follows = lowered(device, m)?.is_some_and(|(_, follows)| follows);
            if follows {
                m.buffer()?;
            }
        }
        let mut programs = Vec::with_capacity(members.len());
        for m in &members {
            if let Some(p) = program(device, m)? {
                programs.push((m.data.clone(), p));
            }
        }
        // A program that reads or computes another's storage runs alone, after.
        let shares = |i: usize| {
            let (own, p) = &programs[i];
            let storages = p.reads.iter().map(|r| &r.arg.storage).chain(&p.inlined);
            let touched: Vec<&Arc<StorageData>> = storages.map(|s| &s.data).collect();
            programs.iter().any(|(other, _)| {
                !Arc::ptr_eq(other, own) && touched.iter().any(|t| Arc::ptr_eq(t, other))
            })
        };
        let free: Vec<bool> = (0..programs.len()).map(|i| !shares(i)).collect();
        let together: Vec<_> = (programs.iter().zip(&free))
            .filter(|(_, &f)| f)
            .map(|(p, _)| p)
            .collect();
        for launch in launches(device, &together) {
            match launch {
                [(data, _)] => run(data, device)?,
                _ => launch_group(device, launch)?,
            }
        }
    }
    for s in storages {
        s.buffer()?;
    }
    Ok(())
}

/// The program `m` runs as, if it is still a pending expression, and whether a launch
/// still to run can take it as its epilogue.
fn lowered(device: &GpuDevice, m: &GpuStorage) -> Result<Option<(Program, bool)>> {
    let expr = m.data.expr.lock().unwrap().clone();
    let Some(expr) = expr else { return Ok(None) };
    let p = Program::lower(&expr, device.max_fused_reads())?;
    let follows = epilogue_read(&p).is_some();
    Ok(Some((p, follows)))
}

/// The program `m` runs as, if it is still a pending expression that no launch takes
/// as its epilogue.
fn program(device: &GpuDevice, m: &GpuStorage) -> Result<Option<Program>> {
    Ok(lowered(device, m)?.and_then(|(p, follows)| (!follows).then_some(p)))
}

/// `programs` cut into launches, in order: as many to one as the device's bind groups
/// (one each, `kernel_groups`) and storage buffers (each's reads and output) allow.
fn launches<'a, T>(
    device: &GpuDevice,
    programs: &'a [&'a (T, Program)],
) -> Vec<&'a [&'a (T, Program)]> {
    let most = device.inner.kernel_groups;
    let buffers = device.inner.limits.max_storage_buffers_per_shader_stage as usize;
    let mut out = Vec::new();
    let (mut start, mut bound) = (0, 0);
    for (i, (_, p)) in programs.iter().enumerate() {
        let needs = p.reads.len() + 1;
        if i > start && (i - start == most || bound + needs > buffers) {
            out.push(&programs[start..i]);
            (start, bound) = (i, 0);
        }
        bound += needs;
    }
    if start < programs.len() {
        out.push(&programs[start..]);
    }
    out
}

/// One launch of `members`' programs (two or more), each filling its storage.
fn launch_group(device: &GpuDevice, members: &[&(Arc<StorageData>, Program)]) -> Result<()> {
    let op = "fusion";
    let start = Instant::now();
    // Each expression held through the launch, as `run` holds one, so that no other
    // thread runs it meanwhile; taken in one order (by address) wherever a group runs.
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_by_key(|&j| Arc::as_ptr(&members[j].0) as usize);
    let mut held: Vec<_> = order
        .iter()
        .map(|&j| (j, members[j].0.expr.lock().unwrap()))
        .collect();
    if held.iter().any(|(_, e)| e.is_none()) {
        // Another thread ran one: each runs as it would alone (`run` does nothing for
        // one that has run).
        drop(held);
        for (data, _) in members {
            run(data, device)?;
        }
        return Ok(());
    }
    let programs: Vec<&Program> = members.iter().map(|(_, p)| p).collect();
    let mut outs = Vec::with_capacity(members.len());
    for p in &programs {
        outs.push(device.alloc_output(op, p.len, p.out_dtype())?);
    }
    let mut key = format!("group x{}", programs.len());
    for p in &programs {
        let _ = write!(key, " [{}]", p.key());
    }
    let written = (programs.iter().enumerate())
        .map(|(j, p)| (j as u32, p.reads.len() as u32 + 1))
        .collect();
    let groups = programs.len() as u32;
    // Addressed like the elementwise kernels: their bounds-check policy.
    let pipeline =
        device.cached_pipeline(key, Kernel::Unary, groups, written, || source(&programs))?;
    let params: Vec<FusedParams> = programs
        .iter()
        .map(|p| FusedParams::of(p))
        .collect::<Result<_>>()?;
    let mut resources = Vec::with_capacity(programs.len());
    for (p, out) in programs.iter().zip(&outs) {
        let mut r = p.resources()?;
        r.push(out.buffer().as_entire_binding());
        resources.push(r);
    }
    let bind: Vec<Bindings<'_>> = (programs.iter().zip(&params).zip(&resources))
        .map(|((p, params), r)| {
            Bindings::numbered(bytemuck::bytes_of(params), r, 1).spanning(p.read_spans(1))
        })
        .collect();
    let total = programs.iter().map(|p| p.len).sum();
    let workgroups = device.groups_1d(op, total)?;
    let name = || {
        let each: Vec<String> = programs.iter().map(|p| p.summary()).collect();
        format!("fused x{} expressions: {}", programs.len(), each.join("; "))
    };
    device.launch(op, &pipeline, &bind, workgroups, start, name)?;
    let mut outs: Vec<Option<_>> = outs.into_iter().map(Some).collect();
    for (j, expr) in &mut held {
        let out = outs[*j].take().expect("one output a member");
        members[*j].0.fill(out)?;
        // Lets go of the inputs.
        **expr = None;
    }
    Ok(())
}

/// The kernel of `programs`: program j's params and reads in bind group j, its output
/// after its reads, and invocation `i` past the elements of those before it computing
/// its element.
pub(crate) fn source(programs: &[&Program]) -> Result<String> {
    let mut s = String::new();
    if programs.iter().any(|p| wgsl::needs_f16(p)) {
        s.push_str("enable f16;\n\n");
    }
    let _ = writeln!(
        s,
        "// Generated by kiln's fusion for {} expressions.",
        programs.len()
    );
    s.push_str(&shader_constants::render_block(&[
        "workgroup",
        "unary_ops",
        "binary_ops",
    ])?);
    s.push_str(&wgsl::shared_text(programs)?);
    let mut cases = String::new();
    for (j, p) in programs.iter().enumerate() {
        let tag = format!("_{j}");
        s.push_str(&wgsl::program_text(p, j as u32, &tag, None)?);
        let dtype = p.out_dtype().name();
        let _ = writeln!(
            s,
            "@group({j}) @binding({}) var<storage, read_write> output{tag}: array<{dtype}>;",
            p.reads.len() + 1
        );
        let _ = write!(
            cases,
            "
    if (at < fused{tag}.numel) {{
        output{tag}[at] = {dtype}(fused{tag}_value(at));
        return;
    }}
    at -= fused{tag}.numel;"
        );
    }
    let _ = write!(
        s,
        "
@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
    // This invocation's element, of the first expression whose elements it is past
    // the others'.
    var at = (wid.y * nwg.x + wid.x) * WORKGROUP + lid;{cases}
}}
"
    );
    Ok(s)
}
