//! Warnings about settings kiln ignores (an unknown `KILN_*` value) or that make its
//! results unsafe: said once per process, not once per device opened. And the on-off
//! settings, which warn so.

use std::collections::HashSet;
use std::sync::Mutex;

/// Prints `kiln: ignoring {what}` to stderr the first time `what` is passed.
pub(crate) fn warn_once(what: &str) {
    say_once(&format!("ignoring {what}"));
}

/// Prints `kiln: {line}` to stderr the first time `line` is passed.
pub(crate) fn say_once(line: &str) {
    static SAID: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
    if said
        .get_or_insert_with(HashSet::new)
        .insert(line.to_string())
    {
        eprintln!("kiln: {line}");
    }
}

/// The on-off setting `name`: `1` on, `0` off, unset `default`; any other value is
/// ignored with a warning, as `default`.
pub(crate) fn switch(name: &str, default: bool) -> bool {
    match std::env::var(name).as_deref() {
        Ok("0") => false,
        Ok("1") => true,
        Ok(other) => {
            warn_once(&format!("{name}={other}: not 0 or 1"));
            default
        }
        Err(_) => default,
    }
}
