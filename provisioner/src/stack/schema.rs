//! The stack file's JSON Schema, and the structural check of a stack against it.
//!
//! The schema is generated from [`super::model`]. The check runs it over the merged tree and turns
//! every violation (unknown key, wrong type, value out of range, malformed CIDR...) into a
//! [`StackError`] at the place in the file that must change, with a suggestion where one exists.

use std::sync::LazyLock;

use jsonschema::error::ValidationErrorKind;
use jsonschema::{ValidationError, Validator};
use serde_json::Value as Json;

use super::error::StackError;
use super::formats::{self, FORMATS};
use super::model::Stack;
use super::source::SourceMap;
use super::yaml::{Node, PathSegment, Value};

/// The JSON Schema of stack files, as committed in `stacks/stack.schema.json`.
pub fn json_schema() -> Json {
    let mut schema = serde_json::to_value(schemars::schema_for!(Stack)).expect("a schema is JSON");
    if let Json::Object(map) = &mut schema {
        map.insert(
            "$id".into(),
            Json::String("https://stacksmith.dev/schemas/stack.schema.json".into()),
        );
    }
    schema
}

/// The schema as pretty JSON with a final newline: the exact content of `stacks/stack.schema.json`.
pub fn json_schema_text() -> String {
    let mut text = serde_json::to_string_pretty(&json_schema()).expect("a schema serializes");
    text.push('\n');
    text
}

struct Checker {
    schema: Json,
    validator: Validator,
}

static CHECKER: LazyLock<Checker> = LazyLock::new(|| {
    let schema = json_schema();
    let options = FORMATS.iter().fold(
        jsonschema::options().should_validate_formats(true),
        |options, format| options.with_format(format.name, format.check),
    );
    let validator = options
        .build(&schema)
        .expect("the generated stack schema compiles");
    Checker { schema, validator }
});

/// Checks the merged tree against the schema. An abstract stack (shared defaults) may leave
/// required keys out.
pub fn check(root: &Node, sources: &SourceMap, is_abstract: bool) -> Vec<StackError> {
    let checker = &*CHECKER;
    let instance = root.to_json();
    let mut errors = Vec::new();
    for error in checker.validator.iter_errors(&instance) {
        explain(checker, root, sources, &error, is_abstract, &mut errors);
    }
    errors.dedup_by(|a, b| a.location == b.location && a.message == b.message);
    errors
}

fn explain(
    checker: &Checker,
    root: &Node,
    sources: &SourceMap,
    error: &ValidationError<'_>,
    is_abstract: bool,
    out: &mut Vec<StackError>,
) {
    let path = parse_pointer(error.instance_path().as_str());
    let Some(node) = root.at(&path) else { return };
    let schema_path = parse_pointer(error.schema_path().as_str());
    let field = display_path(&path);
    let written = || {
        let file = sources.file(node.location.file);
        file.text
            .get(node.location.offset..node.location.offset + node.location.len)
            .unwrap_or("")
            .to_owned()
    };
    match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let known = schema_at(
                &checker.schema,
                &schema_path[..schema_path.len().saturating_sub(1)],
            )
            .and_then(|s| s.get("properties"))
            .and_then(Json::as_object)
            .map(|p| p.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default();
            for key in unexpected {
                let Some(entry) = node.entry(key) else {
                    continue;
                };
                let place = if field.is_empty() {
                    "at the top level".to_owned()
                } else {
                    format!("in `{field}`")
                };
                let help = match nearest(key, &known) {
                    Some(best) => format!(
                        "did you mean `{best}`? Keys allowed here: {}",
                        known.join(", ")
                    ),
                    None => format!("keys allowed here: {}", known.join(", ")),
                };
                out.push(
                    StackError::new(
                        "stack::unknown_key",
                        Some(entry.key_location),
                        format!("unknown key `{key}` {place}"),
                    )
                    .label("unknown key")
                    .help(help),
                );
            }
        }
        ValidationErrorKind::Required { property } => {
            if is_abstract {
                return;
            }
            let property = property.as_str().unwrap_or_default();
            let location = root.key_location_at(&path).unwrap_or(node.location);
            let (message, label) = if field.is_empty() {
                (
                    format!("the stack has no `{property}`"),
                    "the stack starts here".to_owned(),
                )
            } else {
                (
                    format!("`{field}` has no `{property}`"),
                    format!("`{property}` is required here"),
                )
            };
            let start = if field.is_empty() {
                location.sub(0, 0)
            } else {
                location
            };
            out.push(
                StackError::new("stack::missing_key", Some(start), message)
                    .label(label)
                    .help(format!(
                        "add `{property}:` (see stacks/stack.schema.json for its form)"
                    )),
            );
        }
        ValidationErrorKind::Type { .. } => {
            let expected = schema_at(&checker.schema, &schema_path)
                .and_then(describe_type)
                .unwrap_or_else(|| "another type".to_owned());
            let help = match (&node.value, expected.as_str()) {
                (Value::Int(_) | Value::Float(_) | Value::Bool(_), "a string") => {
                    Some(format!("quote it: `\"{}\"`", written()))
                }
                (Value::Str(s), "a whole number" | "a number")
                    if s.trim().parse::<f64>().is_ok() =>
                {
                    Some(format!("remove the quotes: `{}`", s.trim()))
                }
                (Value::Str(_), "a whole number" | "a number") => Some(format!(
                    "write {expected}, e.g. `{field}: 3`",
                    field = last_key(&path)
                )),
                (Value::Str(s), "a list") => Some(format!("write a list: `[{s}]`")),
                _ => None,
            };
            out.push(
                StackError::new(
                    "stack::wrong_type",
                    Some(node.location),
                    format!(
                        "`{field}` must be {expected}, not {}",
                        found(node, &written())
                    ),
                )
                .label(format!("expected {expected}"))
                .maybe_help(help),
            );
        }
        ValidationErrorKind::Enum { options } => {
            let allowed: Vec<String> = options
                .as_array()
                .map(|a| a.iter().map(json_word).collect())
                .unwrap_or_default();
            out.push(one_of_error(node, &field, &allowed));
        }
        ValidationErrorKind::OneOfNotValid { context } | ValidationErrorKind::AnyOf { context } => {
            let branches = schema_at(&checker.schema, &schema_path)
                .and_then(Json::as_array)
                .cloned()
                .unwrap_or_default();
            let resolved: Vec<Json> = branches
                .iter()
                .map(|b| resolve_ref(&checker.schema, b).clone())
                .collect();
            // An enum of documented constants: say which values are allowed.
            let constants: Vec<String> = resolved
                .iter()
                .filter_map(|b| b.get("const").map(json_word))
                .collect();
            if !constants.is_empty() && constants.len() == resolved.len() {
                out.push(one_of_error(node, &field, &constants));
                return;
            }
            // `Option<T>`: the value is not null, so explain why it is not a valid T.
            let non_null: Vec<usize> = (0..resolved.len())
                .filter(|&i| !is_null_schema(&resolved[i]))
                .collect();
            if let [only] = non_null[..]
                && let Some(branch_errors) = context.get(only)
            {
                for inner in branch_errors {
                    explain(checker, root, sources, inner, is_abstract, out);
                }
                return;
            }
            let expected: Vec<String> = resolved.iter().filter_map(describe_type).collect();
            let expected = if expected.is_empty() {
                "another form".to_owned()
            } else {
                expected.join(" or ")
            };
            out.push(
                StackError::new(
                    "stack::wrong_type",
                    Some(node.location),
                    format!("`{field}` must be {expected}, not {}", node.describe()),
                )
                .label(format!("expected {expected}")),
            );
        }
        ValidationErrorKind::Format { format } => {
            let text = match &node.value {
                Value::Str(s) => s.clone(),
                _ => written(),
            };
            let known = formats::find(format);
            let (message, help) = match (format.as_str(), known) {
                ("ipv4-cidr", _) => (
                    format!(
                        "`{field}` is not a valid CIDR block: {}",
                        formats::cidr_problem(&text).unwrap_or_default()
                    ),
                    "write an IPv4 network as ADDRESS/LENGTH, e.g. `10.0.1.0/24`".to_owned(),
                ),
                (_, Some(f)) => (
                    format!("`{field}` is not {}: `{text}`", f.description),
                    format!("write e.g. `{}: {}`", last_key(&path), f.example),
                ),
                (_, None) => (format!("`{field}` is not a valid {format}"), String::new()),
            };
            out.push(
                StackError::new("stack::malformed_value", Some(node.location), message)
                    .label("malformed")
                    .help(help),
            );
        }
        ValidationErrorKind::Minimum { limit }
        | ValidationErrorKind::ExclusiveMinimum { limit } => out.push(
            StackError::new(
                "stack::out_of_range",
                Some(node.location),
                format!("`{field}` must be at least {limit}, not {}", written()),
            )
            .label("too small")
            .help(format!("use a value of {limit} or more")),
        ),
        ValidationErrorKind::Maximum { limit }
        | ValidationErrorKind::ExclusiveMaximum { limit } => out.push(
            StackError::new(
                "stack::out_of_range",
                Some(node.location),
                format!("`{field}` must be at most {limit}, not {}", written()),
            )
            .label("too large")
            .help(format!("use a value of {limit} or less")),
        ),
        ValidationErrorKind::MinItems { limit } => out.push(
            StackError::new(
                "stack::empty_list",
                Some(node.location),
                format!(
                    "`{field}` needs at least {limit} item{}",
                    if *limit == 1 { "" } else { "s" }
                ),
            )
            .label("empty")
            .help(format!(
                "list at least {limit}, e.g. `{}: [m5.large]`",
                last_key(&path)
            )),
        ),
        _ => out.push(
            StackError::new(
                "stack::invalid",
                Some(node.location),
                format!("`{field}`: {error}"),
            )
            .label("invalid"),
        ),
    }
}

/// The value as written: `the number 1.30`, not the parsed `1.3`.
fn found(node: &Node, written: &str) -> String {
    match node.value {
        Value::Int(_) | Value::Float(_) => format!("the number {written}"),
        _ => node.describe(),
    }
}

fn one_of_error(node: &Node, field: &str, allowed: &[String]) -> StackError {
    let found = match &node.value {
        Value::Str(s) => s.clone(),
        _ => node.describe(),
    };
    let help = match nearest(&found, allowed) {
        Some(best) => format!("did you mean `{best}`? Allowed: {}", allowed.join(", ")),
        None => format!("allowed: {}", allowed.join(", ")),
    };
    StackError::new(
        "stack::unknown_value",
        Some(node.location),
        format!(
            "`{field}` must be one of {}, not `{found}`",
            allowed.join(", ")
        ),
    )
    .label("not an allowed value")
    .help(help)
}

fn json_word(value: &Json) -> String {
    match value {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn is_null_schema(schema: &Json) -> bool {
    schema.get("type").and_then(Json::as_str) == Some("null")
}

fn describe_type(schema: &Json) -> Option<String> {
    let describe = |t: &str| match t {
        "string" => "a string",
        "integer" => "a whole number",
        "number" => "a number",
        "boolean" => "true or false",
        "array" => "a list",
        "object" => "a mapping",
        _ => "null",
    };
    match schema.get("type").or(Some(schema)) {
        Some(Json::String(t)) => Some(describe(t).to_owned()),
        Some(Json::Array(types)) => {
            let names: Vec<&str> = types
                .iter()
                .filter_map(Json::as_str)
                .filter(|t| *t != "null")
                .map(describe)
                .collect();
            (!names.is_empty()).then(|| names.join(" or "))
        }
        _ => None,
    }
}

/// The nearest candidate to a misspelt word, if one is close enough to be a likely typo.
pub fn nearest<'a>(word: &str, candidates: &'a [String]) -> Option<&'a str> {
    let lower = word.to_lowercase();
    candidates
        .iter()
        .map(|c| (c, strsim::damerau_levenshtein(&lower, &c.to_lowercase())))
        .filter(|(c, distance)| {
            *distance <= (c.len().max(3) / 3).max(1)
                || c.replace(['-', '_'], "") == lower.replace(['-', '_'], "")
        })
        .min_by_key(|(_, distance)| *distance)
        .map(|(c, _)| c.as_str())
}

fn parse_pointer(pointer: &str) -> Vec<PathSegment> {
    pointer
        .split('/')
        .skip(1)
        .map(|raw| {
            let key = raw.replace("~1", "/").replace("~0", "~");
            match key.parse::<usize>() {
                Ok(index) => PathSegment::Index(index),
                Err(_) => PathSegment::Key(key),
            }
        })
        .collect()
}

/// The schema node at a keyword path, following `$ref`s.
fn schema_at<'a>(schema: &'a Json, path: &[PathSegment]) -> Option<&'a Json> {
    let mut node = schema;
    for segment in path {
        node = match segment {
            PathSegment::Key(key) if key == "$ref" => resolve_ref(schema, node),
            PathSegment::Key(key) => resolve_ref(schema, node).get(key.as_str())?,
            PathSegment::Index(i) => match node {
                Json::Array(items) => items.get(*i)?,
                Json::Object(map) => map.get(&i.to_string())?,
                _ => return None,
            },
        };
    }
    Some(node)
}

fn resolve_ref<'a>(root: &'a Json, node: &'a Json) -> &'a Json {
    let mut node = node;
    for _ in 0..16 {
        let Some(reference) = node.get("$ref").and_then(Json::as_str) else {
            break;
        };
        let Some(target) = reference.strip_prefix('#').and_then(|p| root.pointer(p)) else {
            break;
        };
        node = target;
    }
    node
}

/// `cluster.node_groups.workers.scaling.min`, `network.private_subnets[1]`.
pub fn display_path(path: &[PathSegment]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            PathSegment::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            PathSegment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn last_key(path: &[PathSegment]) -> String {
    path.iter()
        .rev()
        .find_map(|s| match s {
            PathSegment::Key(k) => Some(k.clone()),
            PathSegment::Index(_) => None,
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_finds_typos_only() {
        let keys: Vec<String> = ["scaling", "instance_types", "labels", "taints"]
            .map(String::from)
            .to_vec();
        assert_eq!(nearest("scalling", &keys), Some("scaling"));
        assert_eq!(nearest("instance-types", &keys), Some("instance_types"));
        assert_eq!(nearest("lables", &keys), Some("labels"));
        assert_eq!(nearest("completely_else", &keys), None);
    }

    #[test]
    fn the_schema_compiles_and_forbids_unknown_keys() {
        let schema = json_schema();
        assert_eq!(schema["additionalProperties"], Json::Bool(false));
        let _ = &CHECKER.validator;
    }
}
