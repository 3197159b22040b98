//! Parses and validates every WGSL kernel, in every dtype specialisation kiln uses,
//! with naga on the CPU: a broken shader fails here even where no adapter exists.

use kiln::backend::Kernel;

#[test]
fn every_shader_file_is_registered() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shaders");
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
        let module = naga::front::wgsl::parse_str(&source)
            .unwrap_or_else(|e| panic!("{label} does not parse:\n{}", e.emit_to_string(&source)));
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
    for kernel in Kernel::ALL {
        let (path, text) = kernel.file();
        let module = naga::front::wgsl::parse_str(text)
            .unwrap_or_else(|e| panic!("{path} does not parse:\n{}", e.emit_to_string(text)));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{path} does not validate: {e:?}"));
    }
}
