//! Turning a stack file into one tree: `extends` chains merged, `${env:...}` interpolated.
//!
//! Merge rules: mappings merge key by key (recursively), anything else (scalars, lists) is
//! replaced by the extending file. `abstract` and `extends` are not inherited. Interpolation runs
//! after merging, over every string: `${env:NAME}` fails when NAME is unset, `${env:NAME:-default}`
//! falls back to `default`, and `$${` writes a literal `${`. A plain (unquoted) scalar that is one
//! interpolation and nothing else is typed again after substitution, so `storage_gib:
//! ${env:DB_GIB:-100}` is a number while `"${env:X}"` stays a string.

use std::path::{Path, PathBuf};

use super::error::StackError;
use super::source::{FileId, Location, SourceMap};
use super::yaml::{self, Entry, Node, Style, Value};

/// Reads an environment variable; tests pass their own.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Loads `path` and everything it extends, merged into one tree.
pub fn compose(
    path: &Path,
    display_name: String,
    sources: &mut SourceMap,
) -> Result<Node, Vec<StackError>> {
    let mut chain = Vec::new();
    load_chain(path, display_name, None, sources, &mut chain)
}

fn load_chain(
    path: &Path,
    display_name: String,
    extended_from: Option<Location>,
    sources: &mut SourceMap,
    chain: &mut Vec<(PathBuf, FileId)>,
) -> Result<Node, Vec<StackError>> {
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    if let Some(position) = chain.iter().position(|(p, _)| *p == canonical) {
        let names: Vec<String> = chain[position..]
            .iter()
            .map(|(_, id)| sources.file(*id).display_name.clone())
            .chain(std::iter::once(
                sources.file(chain[position].1).display_name.clone(),
            ))
            .collect();
        return Err(vec![
            StackError::new(
                "stack::extends::cycle",
                extended_from,
                format!("`extends` makes a cycle: {}", names.join(" -> ")),
            )
            .label("this closes the cycle")
            .help("a stack may extend a file that extends another, but never one of its own descendants: remove one `extends`"),
        ]);
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![
            StackError::new(
                "stack::file::unreadable",
                extended_from,
                format!("cannot read {display_name}: {e}"),
            )
            .label("extended here"),
        ]
    })?;
    let id = sources.add(display_name, &canonical, text);
    let mut root = yaml::parse(id, sources.file(id)).map_err(|e| vec![*e])?;
    if !matches!(root.value, Value::Map(_)) {
        return Err(vec![
            StackError::new(
                "stack::yaml::not_a_mapping",
                Some(root.location),
                "a stack file is a mapping of keys such as `name:`, `region:` and `network:`",
            )
            .label("expected `key: value` lines"),
        ]);
    }
    let Some(extends) = root.get("extends").cloned() else {
        return Ok(root);
    };
    let Value::Str(relative) = &extends.value else {
        return Err(vec![
            StackError::new(
                "stack::extends::not_a_path",
                Some(extends.location),
                "`extends` takes the path of another stack file",
            )
            .label(format!("found {}", extends.describe()))
            .help("write e.g. `extends: base.yaml` (relative to this file)"),
        ]);
    };
    let parent_path = canonical.parent().unwrap_or(Path::new(".")).join(relative);
    let parent_display = normalize(
        &Path::new(&sources.file(id).display_name)
            .parent()
            .unwrap_or(Path::new(""))
            .join(relative),
    );
    if !parent_path.is_file() {
        return Err(vec![
            StackError::new(
                "stack::extends::missing",
                Some(extends.location),
                format!("`extends` names {parent_display}, which does not exist"),
            )
            .label("no such file")
            .help("the path is relative to the file that says `extends`"),
        ]);
    }
    chain.push((canonical, id));
    let mut parent = load_chain(
        &parent_path,
        parent_display,
        Some(extends.location),
        sources,
        chain,
    )?;
    chain.pop();
    remove_key(&mut parent, "abstract");
    remove_key(&mut parent, "extends");
    remove_key(&mut root, "extends");
    merge(&mut parent, root);
    Ok(parent)
}

/// `a/b/../c` as `a/c`, without touching the file system (display names only).
fn normalize(path: &Path) -> String {
    use std::path::Component;
    let mut parts: Vec<Component<'_>> = Vec::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir if matches!(parts.last(), Some(Component::Normal(_))) => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.iter().collect::<PathBuf>().display().to_string()
}

fn remove_key(node: &mut Node, key: &str) {
    if let Value::Map(entries) = &mut node.value {
        entries.retain(|e| e.key != key);
    }
}

/// Merges `overlay` into `base`: mappings key by key, anything else replaced. An empty mapping
/// (`addons: {}`) replaces too: it is how an extending file says "none of the base's".
pub fn merge(base: &mut Node, overlay: Node) {
    match (&mut base.value, overlay.value) {
        (Value::Map(base_entries), Value::Map(overlay_entries)) if !overlay_entries.is_empty() => {
            for entry in overlay_entries {
                match base_entries.iter_mut().find(|e| e.key == entry.key) {
                    Some(existing) => {
                        existing.key_location = entry.key_location;
                        merge(&mut existing.value, entry.value);
                    }
                    None => base_entries.push(entry),
                }
            }
            base.location = overlay.location;
        }
        (_, value) => {
            *base = Node {
                value,
                location: overlay.location,
                style: overlay.style,
            };
        }
    }
}

/// Replaces `${env:...}` in every string of the tree; returns every problem found.
pub fn interpolate(node: &mut Node, sources: &SourceMap, env: EnvLookup<'_>) -> Vec<StackError> {
    let mut errors = Vec::new();
    walk(node, sources, env, &mut errors);
    errors
}

fn walk(node: &mut Node, sources: &SourceMap, env: EnvLookup<'_>, errors: &mut Vec<StackError>) {
    match &mut node.value {
        Value::Seq(items) => items.iter_mut().for_each(|n| walk(n, sources, env, errors)),
        Value::Map(entries) => entries
            .iter_mut()
            .for_each(|Entry { value, .. }| walk(value, sources, env, errors)),
        Value::Str(text) if text.contains('$') => {
            let source_text = &sources.file(node.location.file).text;
            let written = source_text
                .get(node.location.offset..node.location.offset + node.location.len)
                .unwrap_or("");
            match substitute(text, env) {
                Ok(Substituted {
                    text: result,
                    whole,
                }) => {
                    node.value = if whole && node.style == Style::Plain {
                        yaml::resolve_plain(&result)
                    } else {
                        Value::Str(result)
                    };
                }
                Err(problems) => {
                    for problem in problems {
                        // Point at the expression itself when it is written literally in the file.
                        let location = written
                            .find(&problem.expression)
                            .map(|i| node.location.sub(i, problem.expression.len()))
                            .unwrap_or(node.location);
                        errors.push(problem.into_error(location));
                    }
                }
            }
        }
        _ => {}
    }
}

struct Substituted {
    text: String,
    /// The string was exactly one `${...}` expression.
    whole: bool,
}

struct InterpolationProblem {
    expression: String,
    kind: ProblemKind,
}

enum ProblemKind {
    Unset(String),
    Malformed,
    Unterminated,
}

impl InterpolationProblem {
    fn into_error(self, location: Location) -> StackError {
        match self.kind {
            ProblemKind::Unset(name) => StackError::new(
                "stack::env::unset",
                Some(location),
                format!("environment variable {name} is not set"),
            )
            .label(format!("needs {name}"))
            .help(format!("set {name}, or give a default: `${{env:{name}:-VALUE}}`")),
            ProblemKind::Malformed => StackError::new(
                "stack::env::malformed",
                Some(location),
                format!("`{}` is not an interpolation Stacksmith understands", self.expression),
            )
            .label("unsupported")
            .help("write `${env:NAME}` or `${env:NAME:-default}` (NAME: letters, digits, _), or `$${` for a literal `${`"),
            ProblemKind::Unterminated => StackError::new(
                "stack::env::unterminated",
                Some(location),
                "`${` is not closed by `}`",
            )
            .label("opened here")
            .help("close the expression with `}`, or write `$${` for a literal `${`"),
        }
    }
}

fn substitute(text: &str, env: EnvLookup<'_>) -> Result<Substituted, Vec<InterpolationProblem>> {
    let mut out = String::with_capacity(text.len());
    let mut problems = Vec::new();
    let mut rest = text;
    let mut expressions = 0;
    let mut literal_chars = false;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        literal_chars |= start > 0;
        let after = &rest[start..];
        if let Some(escaped) = after.strip_prefix("$${") {
            out.push_str("${");
            literal_chars = true;
            rest = escaped;
            continue;
        }
        let Some(body_and_rest) = after.strip_prefix("${") else {
            out.push('$');
            literal_chars = true;
            rest = &after[1..];
            continue;
        };
        let Some(end) = body_and_rest.find('}') else {
            problems.push(InterpolationProblem {
                expression: "${".into(),
                kind: ProblemKind::Unterminated,
            });
            rest = "";
            break;
        };
        let body = &body_and_rest[..end];
        let expression = format!("${{{body}}}");
        expressions += 1;
        match parse_expression(body) {
            Some((name, default)) => match (env(name), default) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => problems.push(InterpolationProblem {
                    expression,
                    kind: ProblemKind::Unset(name.to_owned()),
                }),
            },
            None => problems.push(InterpolationProblem {
                expression,
                kind: ProblemKind::Malformed,
            }),
        }
        rest = &body_and_rest[end + 1..];
    }
    out.push_str(rest);
    literal_chars |= !rest.is_empty();
    if problems.is_empty() {
        Ok(Substituted {
            text: out,
            whole: expressions == 1 && !literal_chars,
        })
    } else {
        Err(problems)
    }
}

/// `env:NAME` or `env:NAME:-default`.
fn parse_expression(body: &str) -> Option<(&str, Option<&str>)> {
    let spec = body.strip_prefix("env:")?;
    let (name, default) = match spec.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (spec, None),
    };
    let valid = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    valid.then_some((name, default))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "SET").then(|| "value".to_owned())
    }

    #[test]
    fn substitutes_and_defaults() {
        let s = substitute("a-${env:SET}-b", &env).ok().unwrap();
        assert_eq!(s.text, "a-value-b");
        assert!(!s.whole);
        let s = substitute("${env:UNSET:-10}", &env).ok().unwrap();
        assert_eq!(s.text, "10");
        assert!(s.whole);
        assert_eq!(
            substitute("cost $5 $${env:X}", &env).ok().unwrap().text,
            "cost $5 ${env:X}"
        );
        assert_eq!(substitute("${env:UNSET:-}", &env).ok().unwrap().text, "");
    }

    #[test]
    fn mappings_merge_key_by_key_and_an_empty_mapping_clears() {
        let mut sources = SourceMap::default();
        let mut parse = |name: &str, text: &str| {
            let id = sources.add(name.into(), Path::new(name), text.into());
            crate::stack::yaml::parse(id, sources.file(id)).unwrap()
        };
        let base = parse("base.yaml", "a: { x: 1, y: 2 }\nb: { z: 3 }\n");
        let overlay = parse("over.yaml", "a: { y: 5 }\nb: {}\n");
        let mut merged = base;
        merge(&mut merged, overlay);
        assert_eq!(
            merged.to_json(),
            serde_json::json!({ "a": { "x": 1, "y": 5 }, "b": {} })
        );
    }

    #[test]
    fn reports_every_problem() {
        let problems = substitute("${env:A}/${NAME}/${env:B", &env).err().unwrap();
        assert_eq!(problems.len(), 3);
        assert!(matches!(&problems[0].kind, ProblemKind::Unset(n) if n == "A"));
        assert!(matches!(problems[1].kind, ProblemKind::Malformed));
        assert!(matches!(problems[2].kind, ProblemKind::Unterminated));
    }
}
