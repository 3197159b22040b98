//! Writing a program out as one WGSL kernel, and its params. The op formulas are the
//! shader library's own (`unary_op`, `binary_op`, between the `kiln:formulas` marks of
//! `elementwise/unary.wgsl` and `binary.wgsl`, and the `real_edges` both include), so
//! a fused op computes what the op's own kernel computes. Each value is rounded to its
//! dtype, as a stored intermediate would be.

use super::epilogue::Epilogue;
use super::expr::FusedOp;
use super::program::{Program, ReadKind, Step, Value};
use super::{MAX_READS, MAX_SCALARS};
use crate::kernels::Kernel;
use crate::params::to_u32;
use crate::shader_constants;
use bytemuck::{Pod, Zeroable};
use kiln_core::{DType, Error, GpuErrorKind, Result, MAX_RANK};
use std::fmt::Write;
use std::sync::OnceLock;

/// How the kernel reads one buffer: mirrors the WGSL `Read` struct.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct FusedRead {
    pub rank: u32,
    pub offset: u32,
    pub _pad0: u32,
    pub _pad1: u32,
    /// For a pad's argument, the pad's output, whose element at `before + c` (per dim)
    /// is the argument's at `c` for `c` below `inner`.
    pub shape: [[u32; 4]; 2],
    pub strides: [[u32; 4]; 2],
    pub before: [[u32; 4]; 2],
    pub inner: [[u32; 4]; 2],
}

/// A fused kernel's uniform params: mirrors the WGSL `Params` struct.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct FusedParams {
    pub numel: u32,
    pub _pad: [u32; 3],
    pub reads: [FusedRead; MAX_READS],
    pub scalars: [[f32; 4]; MAX_SCALARS / 4],
}

const _: () = assert!(MAX_RANK <= 8 && MAX_SCALARS.is_multiple_of(4));

impl FusedParams {
    pub(crate) fn of(program: &Program) -> Result<FusedParams> {
        let op = "fusion";
        let mut p = FusedParams::zeroed();
        p.numel = to_u32(op, "element count", program.len)?;
        for (slot, read) in p.reads.iter_mut().zip(&program.reads) {
            let layout = &read.arg.layout;
            match &read.window {
                None => {
                    let (dims, strides) = fewest_dims(layout.dims(), layout.strides());
                    read_layout(slot, &dims, &strides, layout.offset(), op)?
                }
                Some(w) => {
                    read_layout(slot, &w.dims, layout.strides(), layout.offset(), op)?;
                    for (d, (&b, &n)) in w.before.iter().zip(layout.dims()).enumerate() {
                        slot.before[d / 4][d % 4] = to_u32(op, "pad", b)?;
                        slot.inner[d / 4][d % 4] = to_u32(op, "size", n)?;
                    }
                }
            }
        }
        for (i, &v) in program.scalars.iter().enumerate() {
            p.scalars[i / 4][i % 4] = v;
        }
        Ok(p)
    }
}

/// The same walk from an element index to an offset over as few dims as give it: dims
/// of one element dropped, neighbours that step as one dim merged, and leading dims
/// of stride 0 (a broadcast's) dropped, which add nothing to any offset. Each dim left
/// costs the strided walk a division and a remainder per element: a batch norm's
/// `[1, c, 1, 1]` statistics read across `[n, c, h, w]` walk 2 dims, not 4.
fn fewest_dims(dims: &[usize], strides: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let mut out: Vec<(usize, usize)> = Vec::with_capacity(dims.len());
    for (&size, &stride) in dims.iter().zip(strides).rev() {
        if size == 1 {
            continue;
        }
        match out.last_mut() {
            Some((inner, inner_stride)) if stride == *inner_stride * *inner => *inner *= size,
            _ => out.push((size, stride)),
        }
    }
    while out.last().is_some_and(|&(_, stride)| stride == 0) {
        out.pop();
    }
    out.iter().rev().copied().unzip()
}

/// For each read, the first read that walks the same dims with the same strides
/// (itself where no earlier one does): reads of one layout at different offsets, as a
/// batch norm's statistics and weights, all `[1, c, 1, 1]` across `[n, c, h, w]`, share
/// one walk, which costs a division and a remainder per dim and element. Reads that do
/// not walk are their own.
pub(crate) fn walk_owners(program: &Program) -> Vec<usize> {
    let walks: Vec<Option<(Vec<usize>, Vec<usize>)>> = program
        .reads
        .iter()
        .map(|r| {
            let layout = &r.arg.layout;
            (r.kind() == ReadKind::Strided).then(|| fewest_dims(layout.dims(), layout.strides()))
        })
        .collect();
    (0..walks.len())
        .map(|i| match &walks[i] {
            Some(walk) => walks
                .iter()
                .position(|w| w.as_ref() == Some(walk))
                .unwrap_or(i),
            None => i,
        })
        .collect()
}

fn read_layout(
    slot: &mut FusedRead,
    dims: &[usize],
    strides: &[usize],
    offset: usize,
    op: &'static str,
) -> Result<()> {
    slot.rank = dims.len() as u32;
    slot.offset = to_u32(op, "offset", offset)?;
    for (d, (&size, &stride)) in dims.iter().zip(strides).enumerate() {
        slot.shape[d / 4][d % 4] = to_u32(op, "size", size)?;
        slot.strides[d / 4][d % 4] = to_u32(op, "stride", stride)?;
    }
    Ok(())
}

/// The functions between a shader's `kiln:formulas` marks.
fn formulas(kernel: Kernel) -> Result<&'static str> {
    const BEGIN: &str = "// kiln:formulas";
    const END: &str = "// kiln:formulas end";
    let (path, text) = kernel.file();
    let missing = || Error::InvalidArgument {
        op: "fusion",
        reason: format!("{path} lacks its `{BEGIN}` ... `{END}` section"),
    };
    let start = text.find(BEGIN).ok_or_else(missing)?;
    let body = start + text[start..].find('\n').ok_or_else(missing)? + 1;
    let end = body + text[body..].find(END).ok_or_else(missing)?;
    Ok(&text[body..end])
}

/// Where past its offset a read finds the program's element `i`: its dims from the
/// last, written out for each of `MAX_RANK` rather than looped over. Software adapters
/// (llvmpipe) end a shader invocation's loops after 65,535 iterations in all,
/// silently: a reduction that read a fused input through this function once per
/// element ran out of them after 16,000 rows a lane.
fn strided_walk() -> String {
    let mut s = String::from(
        "
fn fused_strided_walk(i: u32, read: FusedRead) -> u32 {
    var rem = i;
    var off = 0u;",
    );
    for d in (0..MAX_RANK).rev() {
        let _ = write!(
            s,
            "
    if ({d}u < read.rank) {{
        let size = read.shape[{}][{}];
        off += (rem % size) * read.strides[{}][{}];
        rem = rem / size;
    }}",
            d / 4,
            d % 4,
            d / 4,
            d % 4
        );
    }
    s.push_str("\n    return off;\n}\n");
    s
}

/// Where a padded read finds the program's element `i` (x), and whether it does (y:
/// 0 where the element is padding, x then being any element of the argument); written
/// out per dim as `strided_index` is.
fn padded_index() -> String {
    let mut s = String::from(
        "
fn fused_padded_index(i: u32, read: FusedRead) -> vec2<u32> {
    var rem = i;
    var off = read.offset;
    var inside = 1u;",
    );
    for d in (0..MAX_RANK).rev() {
        let (v, l) = (d / 4, d % 4);
        let _ = write!(
            s,
            "
    if ({d}u < read.rank) {{
        let size = read.shape[{v}][{l}];
        var c = rem % size;
        rem = rem / size;
        let before = read.before[{v}][{l}];
        if (c < before || c - before >= read.inner[{v}][{l}]) {{
            inside = 0u;
            c = before;
        }}
        off += (c - before) * read.strides[{v}][{l}];
    }}"
        );
    }
    s.push_str("\n    return vec2<u32>(off, inside);\n}\n");
    s
}

/// Whether the program's WGSL needs `enable f16;`.
pub(crate) fn needs_f16(program: &Program) -> bool {
    let reads = program.reads.iter().map(|r| r.arg.storage.dtype);
    let steps = program.steps.iter().map(|st| st.dtype);
    reads.chain(steps).any(|d| d == DType::F16)
}

/// The program's kernel, entry point `main`: one invocation per output element.
pub(crate) fn source(program: &Program) -> Result<String> {
    let mut s = String::new();
    if needs_f16(program) {
        s.push_str("enable f16;\n\n");
    }
    let _ = writeln!(s, "// Generated by kiln's fusion: {}.", program.summary());
    s.push_str(&shader_constants::render_block(&[
        "workgroup",
        "unary_ops",
        "binary_ops",
    ])?);
    s.push_str(&shared_text(&[program])?);
    s.push_str(&program_text(program, 0, "", None)?);
    let _ = write!(
        s,
        "
@group(0) @binding({}) var<storage, read_write> output: array<{}>;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
    let i = (wid.y * nwg.x + wid.x) * WORKGROUP + lid;
    if (i >= fused.numel) {{ return; }}
    output[i] = {}(fused_value(i));
}}
",
        program.reads.len() + 1,
        program.out_dtype().name(),
        program.out_dtype().name(),
    );
    Ok(s)
}

/// A load section of a kernel's WGSL: `// kiln:load (...)`, or `// kiln:load NAME
/// (...)` where the kernel has several inputs, up to `// kiln:load end` (or `//
/// kiln:load NAME end`). It binds one input and defines the functions the kernel reads
/// it through, each `fn f(i: u32) -> f32` or `fn f(i: u32) -> vec4<f32>` (the four
/// elements from `4 * i`).
const LOAD: &str = "// kiln:load";

/// The names of `kernel`'s load sections (empty for the unnamed one), in the order of
/// the inputs they stand for (bindings 1, 2, ...); none: it takes no prologue.
pub(crate) fn load_sections(kernel: Kernel) -> &'static [&'static str] {
    static SECTIONS: OnceLock<Vec<Vec<&'static str>>> = OnceLock::new();
    kernel.read_once::<Vec<_>>(&SECTIONS, |kernel| {
        let (_, text) = kernel.file();
        text.match_indices(LOAD)
            .filter_map(|(at, _)| {
                let line = text[at + LOAD.len()..].lines().next()?;
                let (name, _) = line.split_once('(')?;
                Some(name.trim())
            })
            .collect()
    })
}

/// The functions a load or store section defines, with whether each reads or writes
/// four elements (a `vec4<f32>` in its signature).
fn section_functions(section: &str) -> Vec<(&str, bool)> {
    section
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.trim().strip_prefix("fn ")?.split_once('(')?;
            Some((name, rest.contains("vec4<f32>")))
        })
        .collect()
}

/// A kernel's store section, `// kiln:store (...)` to `// kiln:store end`: it binds
/// the output and defines the functions the kernel writes it through, `fn store(i:
/// u32, v: f32)` (element `i`) or `fn store4(i: u32, v: vec4<f32>)` (the four
/// elements from `4 * i`).
const STORE: &str = "// kiln:store";

/// Whether `kernel` has a store section, so that it can take an epilogue.
pub(crate) fn has_store_section(kernel: Kernel) -> bool {
    static HAS: OnceLock<Vec<bool>> = OnceLock::new();
    *kernel.read_once(&HAS, |kernel| {
        kernel.file().1.contains(&format!("{STORE} ("))
    })
}

/// `kernel`'s source specialised to `dtypes`, with the load section of each given
/// input replaced by its program (a prologue): the section's functions compute the
/// program's element instead of reading the input. `programs[j]` is for the kernel's
/// j-th section; the programs given bind in groups 1, 2, ... in that order. With an
/// epilogue, the store section computes and writes the epilogue's element instead,
/// its reads bound in the group after the prologues'.
pub(crate) fn fused_kernel(
    kernel: Kernel,
    dtypes: &[DType],
    programs: &[Option<&Program>],
    epilogue: Option<Epilogue>,
) -> Result<String> {
    let mut out = kernel.specialise(dtypes)?;
    let (path, _) = kernel.file();
    let mut given: Vec<&Program> = programs.iter().flatten().copied().collect();
    let prologues = given.len() as u32;
    given.extend(epilogue.map(|e| e.program));
    let mut shared = Some(format!(
        "{}{}",
        shader_constants::render_block(&["unary_ops", "binary_ops"])?,
        shared_text(&given)?
    ));
    let mut group = 0;
    for (&name, program) in load_sections(kernel).iter().zip(programs) {
        let Some(program) = program else { continue };
        group += 1;
        let marker = match name {
            "" => LOAD.to_string(),
            _ => format!("{LOAD} {name}"),
        };
        let begin = format!("{marker} (");
        let end_mark = format!("{marker} end");
        let missing = || Error::InvalidArgument {
            op: "fusion",
            reason: format!("{path} lacks its `{begin}` ... `{end_mark}` section"),
        };
        let start = out.find(&begin).ok_or_else(missing)?;
        let end = start + out[start..].find(&end_mark).ok_or_else(missing)? + end_mark.len();
        let section = &out[start..end];
        let tag = match name {
            "" => String::new(),
            _ => format!("_{name}"),
        };
        let mut text = String::new();
        let _ = writeln!(
            text,
            "{marker} replaced by a fused prologue: {}",
            program.summary()
        );
        // The formulas, structs and index functions, before the first prologue.
        text.push_str(&shared.take().unwrap_or_default());
        text.push_str(&program_text(program, group, &tag, None)?);
        let value = format!("fused{tag}_value");
        for (f, vec4) in section_functions(section) {
            match vec4 {
                false => {
                    let _ = writeln!(text, "\nfn {f}(i: u32) -> f32 {{ return {value}(i); }}");
                }
                true => {
                    let _ = writeln!(
                        text,
                        "
fn {f}(i: u32) -> vec4<f32> {{
    let j = 4u * i;
    return vec4<f32>({value}(j), {value}(j + 1u), {value}(j + 2u), {value}(j + 3u));
}}"
                    );
                }
            }
        }
        out.replace_range(start..end, &text);
    }
    if let Some(e) = epilogue {
        let missing = || Error::InvalidArgument {
            op: "fusion",
            reason: format!("{path} lacks its `{STORE} (` ... `{STORE} end` section"),
        };
        let start = out.find(&format!("{STORE} (")).ok_or_else(missing)?;
        let end_mark = format!("{STORE} end");
        let end = start + out[start..].find(&end_mark).ok_or_else(missing)? + end_mark.len();
        let binding = out[start..end]
            .lines()
            .find(|l| l.contains("var<storage, read_write>"))
            .ok_or_else(missing)?;
        let dtype = e.program.out_dtype().name();
        let mut text = format!(
            "{STORE} replaced by a fused epilogue: {}\n",
            e.program.summary()
        );
        text.push_str(&shared.take().unwrap_or_default());
        text.push_str(&program_text(
            e.program,
            prologues + 1,
            "_epilogue",
            Some(e.given),
        )?);
        // Where the program's values go: a binding of their own after its reads, the
        // kernel storing its own output as ever; or, private, the kernel's output
        // binding, retyped as the program's elements, its own values never stored.
        let (bindings, keep, target) = match e.out {
            Some(_) => {
                let slot = e.program.reads.len() + 1;
                let group = prologues + 1;
                let bindings = format!(
                    "{binding}\n@group({group}) @binding({slot}) var<storage, read_write> fused_epilogue_out: array<{dtype}>;"
                );
                (bindings, true, "fused_epilogue_out")
            }
            None => {
                let at = binding.find("output:").ok_or_else(missing)?;
                let bindings = format!("{}output: array<{dtype}>;", &binding[..at]);
                (bindings, false, "output")
            }
        };
        let _ = write!(
            text,
            "
{bindings}
var<private> fused_epilogue_given: f32;
"
        );
        for (f, vec4) in section_functions(&out[start..end]) {
            let _ = match vec4 {
                false => write!(
                    text,
                    "
fn {f}(i: u32, v: f32) {{{}
    fused_epilogue_given = f32(T(v));
    {target}[i] = {dtype}(fused_epilogue_value(i));
}}",
                    if keep { "\n    output[i] = T(v);" } else { "" }
                ),
                true => write!(
                    text,
                    "
fn {f}(i: u32, v: vec4<f32>) {{{}
    for (var c = 0u; c < 4u; c++) {{
        fused_epilogue_given = f32(T(v[c]));
        {target}[4u * i + c] = {dtype}(fused_epilogue_value(4u * i + c));
    }}
}}",
                    if keep {
                        "\n    output[i] = vec4<T>(v);"
                    } else {
                        ""
                    }
                ),
            };
        }
        out.replace_range(start..end, &text);
    }
    if given.iter().any(|p| needs_f16(p)) && !out.starts_with("enable f16;") {
        out.insert_str(0, "enable f16;\n");
    }
    Ok(out)
}

/// What every fused program's text uses, once per kernel: the op formulas (prefixed
/// `fused_`, so that they cannot clash with a host kernel's functions), the params
/// structs and the index functions the programs' reads need.
pub(crate) fn shared_text(programs: &[&Program]) -> Result<String> {
    let mut s = String::new();
    s.push('\n');
    let edges = crate::shader_constants::real_edges();
    let mut formulas = [&edges, formulas(Kernel::Unary)?, formulas(Kernel::Binary)?].concat();
    let names: Vec<String> = formulas
        .split("fn ")
        .skip(1)
        .filter_map(|f| f.split('(').next().map(str::to_string))
        .collect();
    for name in names {
        formulas = formulas.replace(&format!("{name}("), &format!("fused_{name}("));
    }
    s.push_str(&formulas);
    let _ = write!(
        s,
        "
struct FusedRead {{
    rank: u32,
    offset: u32,
    _pad0: u32,
    _pad1: u32,
    shape: array<vec4<u32>, 2>,
    strides: array<vec4<u32>, 2>,
    before: array<vec4<u32>, 2>,
    inner: array<vec4<u32>, 2>,
}}

struct FusedParams {{
    numel: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
    reads: array<FusedRead, {MAX_READS}>,
    scalars: array<vec4<f32>, {}>,
}}
",
        MAX_SCALARS / 4
    );
    let kinds: Vec<ReadKind> = programs
        .iter()
        .flat_map(|p| p.reads.iter().map(|r| r.kind()))
        .collect();
    if kinds.contains(&ReadKind::Strided) {
        s.push_str(&strided_walk());
    }
    if kinds.contains(&ReadKind::Padded) {
        s.push_str(&padded_index());
    }
    Ok(s)
}

/// One program's params (`fused<tag>`) and reads in bind group `group`, and `fn
/// fused<tag>_value(i: u32) -> f32`: the program's element `i`, rounded to its dtype.
/// Read `given` is not bound: its value is `fused<tag>_given`, set by the kernel.
pub(crate) fn program_text(
    program: &Program,
    group: u32,
    tag: &str,
    given: Option<usize>,
) -> Result<String> {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n@group({group}) @binding(0) var<uniform> fused{tag}: FusedParams;"
    );
    for (i, read) in program.reads.iter().enumerate() {
        if Some(i) == given {
            continue;
        }
        let _ = writeln!(
            s,
            "@group({group}) @binding({}) var<storage, read> fused{tag}_in{i}: array<{}>;",
            i + 1,
            read.arg.storage.dtype.name()
        );
    }
    let _ = writeln!(s, "\nfn fused{tag}_value(i: u32) -> f32 {{");
    // Uses the params whatever the program reads: an epilogue may read nothing else,
    // and a binding the shader leaves unused drops out of its pipeline's layout.
    let _ = writeln!(s, "    _ = fused{tag}.numel;");
    let walks = walk_owners(program);
    for (i, read) in program.reads.iter().enumerate() {
        let params = format!("fused{tag}.reads[{i}]");
        // A walk is taken for its first read, given or not: later ones reuse it.
        if read.kind() == ReadKind::Strided && walks[i] == i {
            let _ = writeln!(s, "    let w{i} = fused_strided_walk(i, {params});");
        }
        if Some(i) == given {
            let _ = writeln!(s, "    let x{i} = fused{tag}_given;");
            continue;
        }
        let index = match read.kind() {
            ReadKind::Contiguous => format!("{params}.offset + i"),
            ReadKind::Strided => format!("{params}.offset + w{}", walks[i]),
            ReadKind::Padded => {
                let _ = writeln!(s, "    let r{i} = fused_padded_index(i, {params});");
                format!("r{i}.x")
            }
        };
        let _ = writeln!(s, "    let x{i} = f32(fused{tag}_in{i}[{index}]);");
    }
    for (k, step) in program.steps.iter().enumerate() {
        let value = rounded(step, &expression(step, tag)?);
        let _ = writeln!(s, "    let v{k} = {value};");
    }
    let last = program.steps.len().saturating_sub(1);
    let _ = writeln!(s, "    return v{last};\n}}");
    Ok(s)
}

fn value(v: Value) -> String {
    match v {
        Value::Read(i) => format!("x{i}"),
        Value::Step(k) => format!("v{k}"),
    }
}

/// The step's value in f32.
fn expression(step: &Step, tag: &str) -> Result<String> {
    let a = |i: usize| value(step.args[i]);
    let scalar = |j: usize| {
        let slot = step.scalars.map_or(0, |s| s + j);
        match step.scalars {
            Some(_) => format!("fused{tag}.scalars[{}][{}]", slot / 4, slot % 4),
            None => "0.0".into(),
        }
    };
    Ok(match step.op {
        FusedOp::Unary(op) => format!(
            "fused_unary_op({}, {}, {}, {})",
            op.info().wgsl_constant(),
            a(0),
            scalar(0),
            scalar(1)
        ),
        FusedOp::Binary(op) => {
            let name = op.info().wgsl_constant();
            format!("fused_binary_op({name}, {}, {})", a(0), a(1))
        }
        // As where.wgsl: only zero picks on_false, so a NaN condition picks on_true.
        FusedOp::Where => format!("select({}, {}, {} == 0.0)", a(1), a(2), a(0)),
        FusedOp::Cast => a(0),
        FusedOp::Full(_) => scalar(0),
        FusedOp::Pad(_) => {
            // Lowering makes a pad's argument a read.
            let Value::Read(k) = step.args[0] else {
                return Err(Error::Gpu {
                    op: "fusion",
                    kind: GpuErrorKind::Internal,
                    message: "a pad's argument is not a read".into(),
                });
            };
            format!("select({}, {}, r{k}.y != 0u)", scalar(0), a(0))
        }
    })
}

/// `expr` rounded to the step's dtype when that is narrower than f32.
fn rounded(step: &Step, expr: &str) -> String {
    match step.dtype {
        DType::F16 => format!("f32(f16({expr}))"),
        _ => expr.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::fewest_dims;

    /// Element `i`'s offset by the strided walk over `dims` and `strides`.
    fn offset(mut i: usize, dims: &[usize], strides: &[usize]) -> usize {
        let mut off = 0;
        for (&size, &stride) in dims.iter().zip(strides).rev() {
            off += (i % size) * stride;
            i /= size;
        }
        off
    }

    /// The fewer dims walk every element to the same offset.
    #[test]
    fn fewest_dims_keep_every_offset() {
        for (dims, strides, rank) in [
            (vec![32, 64, 56, 56], vec![0, 1, 0, 0], 2),
            (vec![2, 3, 4], vec![12, 4, 1], 1),
            (vec![2, 3, 4], vec![1, 2, 6], 3),
            (vec![5, 1, 7], vec![7, 99, 1], 1),
            (vec![4, 6], vec![0, 0], 0),
            (vec![3, 5, 2], vec![0, 2, 1], 1),
            (vec![3, 1, 5], vec![5, 0, 3], 2),
        ] {
            let (fewer, fewer_strides) = fewest_dims(&dims, &strides);
            assert_eq!(fewer.len(), rank, "{dims:?} {strides:?}: {fewer:?}");
            for i in 0..dims.iter().product() {
                assert_eq!(
                    offset(i, &fewer, &fewer_strides),
                    offset(i, &dims, &strides),
                    "{dims:?} {strides:?} element {i}"
                );
            }
        }
    }
}
