//! Warnings about settings kiln ignores (an unknown `KILN_*` value): said once per
//! process, not once per device opened.

use std::collections::HashSet;
use std::sync::Mutex;

/// Prints `kiln: ignoring {what}` to stderr the first time `what` is passed.
pub(crate) fn warn_once(what: &str) {
    static SAID: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
    if said
        .get_or_insert_with(HashSet::new)
        .insert(what.to_string())
    {
        eprintln!("kiln: ignoring {what}");
    }
}
