//! The modules of `controlplane/src` are layers: a module refers only to modules of lower layers
//! (never to a higher one, nor to another module of its own layer), and no source files refer to
//! each other in a cycle. This test reads every `crate::` and `super::` path of the sources
//! (comments and string literals left out) and fails on a violation, naming the file and path.
//! ARCHITECTURE.md draws the same table.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Lowest first. A module may refer to the modules of the rows above its own.
const LAYERS: &[&[&str]] = &[
    &["config", "metrics", "shutdown"],
    &["model"],
    &["store"],
    &["queue"],
    &["http"],
    &["worker", "autoscaler", "client"],
    &["serve"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|row| row.contains(&module))
}

/// A source file as a module path (`src/http/tasks.rs` -> `http::tasks`, `src/http/mod.rs` ->
/// `http`); `None` for the crate roots.
fn module_path(src: &Path, file: &Path) -> Option<Vec<String>> {
    let relative = file.strip_prefix(src).ok()?;
    let mut segments: Vec<String> = relative
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if segments.last().is_some_and(|last| last == "mod") {
        segments.pop();
    }
    if segments == ["lib"] || segments == ["main"] || segments.is_empty() {
        return None;
    }
    Some(segments)
}

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("readable source directory")
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
}

/// The code of a Rust file without comments, and with string and character literals emptied.
fn code_only(source: &str) -> String {
    let bytes = source.as_bytes();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    // Bounded: every branch advances `i`.
    while i < bytes.len() {
        let rest = &source[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            let mut depth = 0;
            while i < bytes.len() {
                if source[i..].starts_with("/*") {
                    depth += 1;
                    i += 2;
                } else if source[i..].starts_with("*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if let Some(hashes) = raw_string_start(rest) {
            let open = rest.find('"').expect("raw string quote") + 1;
            let close = format!("\"{}", "#".repeat(hashes));
            let end = rest[open..]
                .find(&close)
                .map_or(rest.len(), |at| open + at + close.len());
            out.push_str("\"\"");
            i += end;
        } else if bytes[i] == b'"' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if bytes[i] == b'\'' {
            // A character literal ('a', '\n', '\u{..}') or a lifetime ('a).
            let literal_end = if rest[1..].starts_with('\\') {
                rest[2..].find('\'').map(|at| at + 3)
            } else {
                rest[1..]
                    .char_indices()
                    .nth(1)
                    .filter(|(_, c)| *c == '\'')
                    .map(|(at, _)| at + 2)
            };
            match literal_end {
                Some(end) => {
                    out.push_str("' '");
                    i += end;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            let c = rest.chars().next().expect("a character");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// `r"`, `r#"`, `br"`...: the number of `#`.
fn raw_string_start(rest: &str) -> Option<usize> {
    let after_b = rest.strip_prefix('b').unwrap_or(rest);
    let after_r = after_b.strip_prefix('r')?;
    let hashes = after_r.bytes().take_while(|b| *b == b'#').count();
    after_r[hashes..].starts_with('"').then_some(hashes)
}

fn is_ident_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

/// Parses `a::b::{c, d::{e}, f}` at `at` (just after `crate::` or `super::`), appending every
/// full path to `paths`.
fn parse_tree(code: &[u8], mut at: usize, prefix: Vec<String>, paths: &mut Vec<Vec<String>>) {
    let mut path = prefix;
    loop {
        while at < code.len() && code[at].is_ascii_whitespace() {
            at += 1;
        }
        if at < code.len() && code[at] == b'{' {
            at += 1;
            // Each item of the group, until the matching `}`.
            loop {
                while at < code.len() && (code[at].is_ascii_whitespace() || code[at] == b',') {
                    at += 1;
                }
                if at >= code.len() || code[at] == b'}' {
                    return;
                }
                let start = at;
                let mut depth = 0usize;
                while at < code.len() {
                    match code[at] {
                        b'{' => depth += 1,
                        b'}' if depth == 0 => break,
                        b'}' => depth -= 1,
                        b',' if depth == 0 => break,
                        _ => {}
                    }
                    at += 1;
                }
                let item = &code[start..at];
                parse_tree(item, 0, path.clone(), paths);
            }
        }
        let start = at;
        while at < code.len() && is_ident_byte(code[at]) {
            at += 1;
        }
        if start == at {
            paths.push(path);
            return;
        }
        let segment = String::from_utf8_lossy(&code[start..at]).into_owned();
        if segment != "self" {
            path.push(segment);
        }
        if code[at..].starts_with(b"::") {
            at += 2;
        } else {
            paths.push(path);
            return;
        }
    }
}

/// Every path from the crate root that `code` (of the module at `module`) refers to through
/// `crate::` or `super::`.
fn referenced_paths(code: &str, module: &[String]) -> Vec<Vec<String>> {
    let bytes = code.as_bytes();
    let mut paths = Vec::new();
    for keyword in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(found) = code[from..].find(keyword) {
            let at = from + found;
            from = at + keyword.len();
            if at > 0 && (is_ident_byte(bytes[at - 1]) || bytes[at - 1] == b'$') {
                continue;
            }
            if keyword == "super::" && at >= 2 && &bytes[at - 2..at] == b"::" {
                // The second `super` of `super::super::`: counted with the first.
                continue;
            }
            let mut base: Vec<String> = Vec::new();
            let mut after = at + keyword.len();
            if keyword == "super::" {
                base = module.to_vec();
                base.pop();
                while code[after..].starts_with("super::") {
                    base.pop();
                    after += "super::".len();
                }
            }
            parse_tree(bytes, after, base, &mut paths);
        }
    }
    paths
}

struct Source {
    file: String,
    module: Vec<String>,
    references: Vec<Vec<String>>,
}

fn sources() -> Vec<Source> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files
        .iter()
        .filter_map(|file| {
            let module = module_path(&src, file)?;
            let text = std::fs::read_to_string(file).expect("readable source file");
            let references = referenced_paths(&code_only(&text), &module);
            Some(Source {
                file: file
                    .strip_prefix(src.parent().expect("crate directory"))
                    .expect("inside the crate")
                    .display()
                    .to_string(),
                module,
                references,
            })
        })
        .collect()
}

/// The module file a path lands in: its longest prefix that is a module.
fn resolve<'a>(path: &[String], modules: &'a BTreeSet<Vec<String>>) -> Option<&'a Vec<String>> {
    (1..=path.len())
        .rev()
        .find_map(|length| modules.get(&path[..length]))
}

#[test]
fn every_module_imports_only_from_lower_layers() {
    let sources = sources();
    let mut violations = Vec::new();
    for source in &sources {
        let own = &source.module[0];
        let Some(own_layer) = layer_of(own) else {
            violations.push(format!(
                "{}: module `{own}` is in no layer of tests/layers.rs (add it there and to ARCHITECTURE.md)",
                source.file
            ));
            continue;
        };
        for path in &source.references {
            let Some(target) = path.first() else { continue };
            if target == own {
                continue;
            }
            match layer_of(target) {
                Some(layer) if layer < own_layer => {}
                Some(layer) => violations.push(format!(
                    "{}: `crate::{}` points from layer {own_layer} (`{own}`) to layer {layer} (`{target}`); a module may only use lower layers",
                    source.file,
                    path.join("::")
                )),
                None => violations.push(format!(
                    "{}: `crate::{}` is in no layer of tests/layers.rs",
                    source.file,
                    path.join("::")
                )),
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn no_source_files_refer_to_each_other_in_a_cycle() {
    let sources = sources();
    let modules: BTreeSet<Vec<String>> = sources.iter().map(|s| s.module.clone()).collect();
    let mut edges: BTreeMap<&Vec<String>, BTreeSet<&Vec<String>>> = BTreeMap::new();
    for source in &sources {
        let from = modules.get(&source.module).expect("known module");
        let targets = edges.entry(from).or_default();
        for path in &source.references {
            let Some(to) = resolve(path, &modules) else {
                continue;
            };
            // A module declaring or re-exporting its own submodules is not a dependency.
            if to == from || to.starts_with(from) {
                continue;
            }
            targets.insert(to);
        }
    }
    // Depth-first search with colours; a grey node reached again closes a cycle.
    #[derive(Clone, Copy, PartialEq)]
    enum Colour {
        White,
        Grey,
        Black,
    }
    fn visit<'a>(
        node: &'a Vec<String>,
        edges: &BTreeMap<&'a Vec<String>, BTreeSet<&'a Vec<String>>>,
        colour: &mut BTreeMap<&'a Vec<String>, Colour>,
        stack: &mut Vec<&'a Vec<String>>,
        cycles: &mut Vec<String>,
    ) {
        colour.insert(node, Colour::Grey);
        stack.push(node);
        for next in edges.get(node).into_iter().flatten() {
            match colour.get(next).copied().unwrap_or(Colour::White) {
                Colour::White => visit(next, edges, colour, stack, cycles),
                Colour::Grey => {
                    let start = stack.iter().position(|n| n == next).expect("on the stack");
                    let mut names: Vec<String> =
                        stack[start..].iter().map(|n| n.join("::")).collect();
                    names.push(next.join("::"));
                    cycles.push(names.join(" -> "));
                }
                Colour::Black => {}
            }
        }
        stack.pop();
        colour.insert(node, Colour::Black);
    }
    let mut colour = BTreeMap::new();
    let mut cycles = Vec::new();
    for module in &modules {
        if colour.get(module).copied().unwrap_or(Colour::White) == Colour::White {
            visit(module, &edges, &mut colour, &mut Vec::new(), &mut cycles);
        }
    }
    assert!(
        cycles.is_empty(),
        "modules that refer to each other in a cycle:\n{}",
        cycles.join("\n")
    );
}

#[test]
fn the_checker_sees_through_groups_super_comments_and_strings() {
    let code = code_only(
        r#"
        use crate::{config::Config, model::{task::Task, Invalid}};
        use super::super::queue::Queue; // crate::http::ignored
        let url = "crate::http::not_a_path";
        /* crate::http::neither */
        let c = '"'; let l: &'static str = "";
        crate::metrics::record_retry("x");
        "#,
    );
    let module = vec!["store".to_owned(), "leases".to_owned(), "inner".to_owned()];
    let mut paths: Vec<String> = referenced_paths(&code, &module)
        .iter()
        .map(|path| path.join("::"))
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "config::Config",
            "metrics::record_retry",
            "model::Invalid",
            "model::task::Task",
            "store::queue::Queue",
        ]
    );
}
