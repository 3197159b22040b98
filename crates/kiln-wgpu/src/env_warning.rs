//! Warnings about settings kiln ignores (an unknown `KILN_*` value) or that make its
//! results unsafe: said once per process, not once per device opened.

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
