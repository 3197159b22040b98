//! Parses and validates every WGSL kernel, in every dtype specialisation kiln uses,
//! with naga on the CPU: a broken shader fails here even where no adapter exists. And
//! checks each shader against the Rust side: its constants block is the one the op
//! table and `shader_constants.rs` generate, it names every table op it computes and
//! no op by number, and its `Params` struct matches the Rust mirror member for member.

use kiln::backend::{shader_constants, Kernel};
use std::path::PathBuf;

fn shader_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shaders")
}

fn parse(label: &str, text: &str) -> naga::Module {
    naga::front::wgsl::parse_str(text)
        .unwrap_or_else(|e| panic!("{label} does not parse:\n{}", e.emit_to_string(text)))
}

#[test]
fn every_shader_file_is_registered() {
    let dir = shader_dir();
    let mut on_disk = Vec::new();
    for family in std::fs::read_dir(&dir).unwrap() {
        let family = family.unwrap().path();
        for file in std::fs::read_dir(&family).unwrap() {
            let file = file.unwrap().path();
            if file.extension().is_some_and(|e| e == "wgsl") {
                on_disk.push(
                    file.strip_prefix(&dir)
                        .unwrap()
                        .to_string_lossy()
                        .replace('\\', "/"),
                );
            }
        }
    }
    on_disk.sort();
    let mut registered: Vec<String> = Kernel::ALL.iter().map(|k| k.file().0.to_string()).collect();
    registered.sort();
    registered.dedup(); // kernels that share a file differ in entry point
    assert_eq!(
        on_disk, registered,
        "shaders/ and kiln_wgpu::Kernel disagree"
    );
}

#[test]
fn every_shader_variant_validates_with_naga() {
    let sources = kiln::backend::specialised_sources().unwrap();
    assert!(
        sources.len() > 40,
        "expected every kernel in several dtypes, got {}",
        sources.len()
    );
    for (label, source) in sources {
        let module = parse(&label, &source);
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{label} does not validate: {e:?}"));
    }
}

#[test]
fn each_file_is_valid_wgsl_as_written() {
    for &kernel in Kernel::ALL {
        let (path, text) = kernel.file();
        let module = parse(path, text);
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{path} does not validate: {e:?}"));
    }
}

/// The copy of each constants block kept in the files is the generated one. With
/// `KILN_BLESS=1` the files are rewritten instead (then rebuild and run again).
#[test]
fn constants_blocks_are_current() {
    let bless = std::env::var("KILN_BLESS").as_deref() == Ok("1");
    let mut stale = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for kernel in Kernel::ALL {
        let path = kernel.file().0;
        if !seen.insert(path) {
            continue;
        }
        // Read from disk, so that a blessed file is checked as it now is.
        let file = shader_dir().join(path);
        let text = std::fs::read_to_string(&file).unwrap();
        let Some((range, groups)) = shader_constants::find_block(&text).unwrap() else {
            continue;
        };
        let fresh = shader_constants::render_block_for(&groups, kernel.build()).unwrap();
        if text[range.clone()] != fresh {
            if bless {
                let updated = format!("{}{fresh}{}", &text[..range.start], &text[range.end..]);
                std::fs::write(&file, updated).unwrap();
            }
            stale.push(path);
        }
    }
    assert!(
        stale.is_empty() || bless,
        "constants blocks differ from the op table in {stale:?}; run KILN_BLESS=1 cargo test --test shaders"
    );
}

/// Every op of the table a kernel computes is named by its constant in the code the
/// kernel is built from (its file and the functions its constants block brings, not the
/// block's constant declarations), and no shader switches on a bare number.
#[test]
fn shaders_name_every_table_op_and_no_op_by_number() {
    for &kernel in Kernel::ALL {
        let (path, _) = kernel.file();
        let source = kernel.specialise(&kernel.variants()[0]).unwrap();
        let body: String = source
            .lines()
            .filter(|l| !(l.starts_with("const ") && l.ends_with("u;")))
            .map(|l| format!("{l}\n"))
            .collect();
        for op in kernel.table_ops() {
            let name = op.wgsl_constant();
            let named = body.match_indices(&name).any(|(i, _)| {
                !body[i + name.len()..].starts_with(|c: char| c == '_' || c.is_alphanumeric())
            });
            assert!(
                named,
                "{path} ({kernel:?}) computes {} but never names {name}",
                op.name
            );
        }
        for line in body.lines() {
            let code = line.split("//").next().unwrap();
            for pattern in ["case ", "op == ", "op != "] {
                for (i, _) in code.match_indices(pattern) {
                    let after = &code[i + pattern.len()..];
                    assert!(
                        !after.starts_with(|c: char| c.is_ascii_digit()),
                        "{path} names an op by number: `{}`",
                        line.trim()
                    );
                }
            }
        }
    }
}

/// How naga prints a member's type, in the form `ParamsMember::wgsl` uses.
fn wgsl_type(module: &naga::Module, ty: naga::Handle<naga::Type>) -> String {
    use naga::{ArraySize, ScalarKind, TypeInner, VectorSize};
    let scalar = |s: naga::Scalar| match (s.kind, s.width) {
        (ScalarKind::Uint, 4) => "u32".to_string(),
        (ScalarKind::Sint, 4) => "i32".to_string(),
        (ScalarKind::Float, 4) => "f32".to_string(),
        (ScalarKind::Float, 2) => "f16".to_string(),
        other => format!("{other:?}"),
    };
    match &module.types[ty].inner {
        TypeInner::Scalar(s) => scalar(*s),
        TypeInner::Vector { size, scalar: s } => {
            let n = match size {
                VectorSize::Bi => 2,
                VectorSize::Tri => 3,
                VectorSize::Quad => 4,
            };
            format!("vec{n}<{}>", scalar(*s))
        }
        TypeInner::Array {
            base,
            size: ArraySize::Constant(n),
            ..
        } => {
            format!("array<{}, {n}>", wgsl_type(module, *base))
        }
        other => format!("{other:?}"),
    }
}

/// Each kernel's uniform at binding 0 is the struct its Rust mirror describes: the same
/// members, in order, with the same names, WGSL types and byte offsets, and the same size.
#[test]
fn params_structs_match_their_rust_mirrors() {
    for &kernel in Kernel::ALL {
        let (path, _) = kernel.file();
        let source = kernel.specialise(&kernel.variants()[0]).unwrap();
        let module = parse(path, &source);
        let uniform = module
            .global_variables
            .iter()
            .map(|(_, v)| v)
            .find(|v| {
                v.space == naga::AddressSpace::Uniform
                    && v.binding
                        .as_ref()
                        .is_some_and(|b| b.group == 0 && b.binding == 0)
            })
            .unwrap_or_else(|| panic!("{path} has no uniform at binding 0"));
        let naga::TypeInner::Struct { members, span } = &module.types[uniform.ty].inner else {
            panic!("{path}: binding 0 is not a struct");
        };
        let layout = kernel.params();
        let shader: Vec<(String, String, usize)> = members
            .iter()
            .map(|m| {
                let name = m.name.clone().unwrap_or_default();
                (name, wgsl_type(&module, m.ty), m.offset as usize)
            })
            .collect();
        let rust: Vec<(String, String, usize)> = layout
            .members
            .iter()
            .map(|m| (m.name.to_string(), m.wgsl.to_string(), m.offset))
            .collect();
        assert_eq!(
            shader, rust,
            "{path} ({kernel:?}) and {} disagree",
            layout.name
        );
        assert_eq!(
            *span as usize, layout.size,
            "{path}: struct size differs from {}",
            layout.name
        );
    }
}
