//! A WGSL text's top-level functions, found by their `fn` lines and braces: how a
//! build generated per device copies a kernel's code for each of several launches
//! (`ops::matmul_group`). Only kiln's own kernels are read this way, whose top-level
//! functions open with `fn ` at the start of a line.

use std::ops::Range;

/// A top-level function: its name, and its text's byte range (from `fn` through its
/// closing brace).
pub(crate) struct Function {
    pub name: String,
    pub range: Range<usize>,
}

/// The top-level functions of `text`, in order. A function whose braces do not close
/// ends the list.
pub(crate) fn functions(text: &str) -> Vec<Function> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(start) = next_function(text, at) {
        let Some(name) = text[start + 3..].split('(').next() else {
            break;
        };
        let Some(end) = body_end(text, start) else {
            break;
        };
        out.push(Function {
            name: name.trim().to_string(),
            range: start..end,
        });
        at = end;
    }
    out
}

/// Where the next line opening with `fn ` at or after `at` starts.
fn next_function(text: &str, at: usize) -> Option<usize> {
    let mut from = at;
    loop {
        let found = from + text[from..].find("fn ")?;
        if found == 0 || text.as_bytes()[found - 1] == b'\n' {
            return Some(found);
        }
        from = found + 3;
    }
}

/// The end of the function opening at `start`: past the brace that closes its first,
/// braces in line comments not counted.
fn body_end(text: &str, start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut opened = false;
    let mut offset = start;
    for line in text[start..].split_inclusive('\n') {
        let code = line.split("//").next().unwrap_or("");
        for (i, c) in code.char_indices() {
            match c {
                '{' => {
                    depth += 1;
                    opened = true;
                }
                '}' => {
                    depth = depth.checked_sub(1)?;
                    if opened && depth == 0 {
                        return Some(offset + i + 1);
                    }
                }
                _ => {}
            }
        }
        offset += line.len();
    }
    None
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The byte offsets in `text` where `word` stands as a whole identifier (then `then`
/// follows it directly: `(` for a call, `.` for a member's access).
fn occurrences<'a>(text: &'a str, word: &'a str, then: char) -> impl Iterator<Item = usize> + 'a {
    text.match_indices(word).filter_map(move |(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        (!before.is_some_and(is_ident) && after == Some(then)).then_some(at)
    })
}

/// Whether `text` calls (or defines) function `name`.
pub(crate) fn calls(text: &str, name: &str) -> bool {
    occurrences(text, name, '(').next().is_some()
}

/// Whether `text` reads a member of `name`.
pub(crate) fn reads_member(text: &str, name: &str) -> bool {
    occurrences(text, name, '.').next().is_some()
}

/// `text` with each whole-identifier `word` that `then` follows replaced by `with`.
pub(crate) fn replace_word(text: &str, word: &str, then: char, with: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for at in occurrences(text, word, then) {
        out.push_str(&text[last..at]);
        out.push_str(with);
        last = at + word.len();
    }
    out.push_str(&text[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn functions_are_found_by_their_braces_and_words_by_their_bounds() {
        let text = "const A: u32 = 1u;\nfn a(x: u32) -> u32 { return x; }\n// fn not(\n\
                    fn b() {\n    if (true) { a(1u); } // }\n    let v = params.m;\n}\n";
        let fns = functions(text);
        let names: Vec<&str> = fns.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        let b = &text[fns[1].range.clone()];
        assert!(
            b.starts_with("fn b()") && b.ends_with("params.m;\n}"),
            "{b}"
        );
        assert!(calls(b, "a") && !calls(b, "b_") && calls(b, "b"));
        assert!(reads_member(b, "params") && !reads_member("xparams.m", "params"));
        assert_eq!(replace_word("a(a_a(ba(a(", "a", '(', "c"), "c(a_a(ba(c(");
    }
}
