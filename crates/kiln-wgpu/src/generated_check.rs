//! What the tests of kiln-wgpu's generated kernels check of each build's WGSL.

/// The byte size of struct `name` in `text`, which must parse and validate with naga
/// (a failure panics with the source, labelled `label`).
pub(crate) fn struct_size(text: &str, name: &str, label: &str) -> usize {
    let module = naga::front::wgsl::parse_str(text)
        .unwrap_or_else(|e| panic!("{label}: {}\n{text}", e.emit_to_string(text)));
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .unwrap_or_else(|e| panic!("{label}: {e:?}\n{text}"));
    let size = module
        .types
        .iter()
        .find(|(_, t)| t.name.as_deref() == Some(name))
        .map(|(_, t)| t.inner.size(module.to_ctx()) as usize);
    size.unwrap_or_else(|| panic!("{label}: no struct {name}\n{text}"))
}

/// The bindings `text` declares whose declaration contains `access`
/// (`"read_write>"`, `"storage, read>"`), in order.
pub(crate) fn bindings(text: &str, access: &str) -> Vec<u32> {
    text.lines()
        .filter(|l| l.contains(access))
        .filter_map(|l| l.split("@binding(").nth(1)?.split(')').next()?.parse().ok())
        .collect()
}
