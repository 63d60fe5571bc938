//! A YAML document as a tree whose every node knows where it came from.
//!
//! Built from `saphyr-parser` events. Plain scalars are typed by the YAML 1.2 core schema
//! (`true`, `42`, `1.5`, `null`); quoted and block scalars are strings. Keys must be scalars and
//! unique within their mapping.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span};

use super::error::StackError;
use super::source::{FileId, Location, SourceFile};

/// A value of the tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`, `~` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string (any quoted or block scalar, and plain scalars of no other type).
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in file order.
    Map(Vec<Entry>),
}

/// A node and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Where the node is written (for scalars: the scalar, quotes included).
    pub location: Location,
    /// For scalars: how it was written.
    pub style: Style,
}

/// How a scalar was written; interpolation re-types only plain scalars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Unquoted.
    Plain,
    /// Single or double quoted.
    Quoted,
    /// `|` or `>` block.
    Block,
    /// A mapping or sequence.
    Collection,
}

/// A key and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The key's text.
    pub key: String,
    /// Where the key is written.
    pub key_location: Location,
    /// The value.
    pub value: Node,
}

/// One step of a path into the tree.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathSegment {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

impl Node {
    /// The entries of a mapping.
    pub fn entries(&self) -> Option<&[Entry]> {
        match &self.value {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The value under `key` of a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|e| &e.value)
    }

    /// The entry under `key` of a mapping.
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        self.entries()?.iter().find(|e| e.key == key)
    }

    /// The node at `path`.
    pub fn at(&self, path: &[PathSegment]) -> Option<&Node> {
        path.iter()
            .try_fold(self, |node, segment| match (segment, &node.value) {
                (PathSegment::Key(key), Value::Map(_)) => node.get(key),
                (PathSegment::Index(i), Value::Seq(items)) => items.get(*i),
                _ => None,
            })
    }

    /// Where the key that leads to `path` is written (the node itself for sequence items and
    /// the root).
    pub fn key_location_at(&self, path: &[PathSegment]) -> Option<Location> {
        match path.split_last() {
            Some((PathSegment::Key(key), parent)) => {
                self.at(parent)?.entry(key).map(|e| e.key_location)
            }
            _ => self.at(path).map(|n| n.location),
        }
    }

    /// The tree as JSON, for schema validation and typed deserialization.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.to_json()))
                    .collect(),
            ),
        }
    }

    /// How the value is described in an error: "a string", "the number 1.31", ...
    pub fn describe(&self) -> String {
        match &self.value {
            Value::Null => "null".to_owned(),
            Value::Bool(b) => format!("the boolean {b}"),
            Value::Int(i) => format!("the number {i}"),
            Value::Float(f) => format!("the number {f}"),
            Value::Str(s) => format!("the string {s:?}"),
            Value::Seq(_) => "a list".to_owned(),
            Value::Map(_) => "a mapping".to_owned(),
        }
    }
}

/// Parses one YAML document. An empty document is an empty mapping.
pub fn parse(file_id: FileId, file: &SourceFile) -> Result<Node, Box<StackError>> {
    let mut builder = Builder {
        file_id,
        file,
        stack: Vec::new(),
        anchors: HashMap::new(),
        root: None,
    };
    let mut parser = Parser::new_from_str(&file.text);
    let mut documents = 0;
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|e| scan_error(file_id, file, &e))?;
        match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    let location = builder.location(span);
                    return Err(Box::new(
                        StackError::new(
                            "stack::yaml::multiple_documents",
                            Some(location),
                            "a stack file holds exactly one YAML document",
                        )
                        .label("a second document starts here")
                        .help(
                            "move the second document into a file of its own, or remove this `---`",
                        ),
                    ));
                }
            }
            other => builder.event(other, span)?,
        }
    }
    Ok(builder.root.unwrap_or(Node {
        value: Value::Map(Vec::new()),
        location: Location::new(file_id, 0, 0),
        style: Style::Collection,
    }))
}

fn scan_error(file_id: FileId, file: &SourceFile, error: &ScanError) -> StackError {
    let marker = error.marker();
    let offset = file.offset(marker.line(), marker.col());
    StackError::new(
        "stack::yaml::syntax",
        Some(Location::new(file_id, offset, 0)),
        format!("invalid YAML: {}", error.info()),
    )
    .label("here")
    .help(
        "check the indentation and quoting here, and for a `[` or `{` left open on the lines above",
    )
}

enum Frame {
    Seq {
        items: Vec<Node>,
        start: Location,
        anchor: usize,
    },
    Map {
        entries: Vec<Entry>,
        pending_key: Option<(String, Location)>,
        start: Location,
        anchor: usize,
    },
}

struct Builder<'a> {
    file_id: FileId,
    file: &'a SourceFile,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
}

impl Builder<'_> {
    fn location(&self, span: Span) -> Location {
        let start = self.file.offset(span.start.line(), span.start.col());
        let end = self.file.offset(span.end.line(), span.end.col()).max(start);
        Location::new(self.file_id, start, end - start)
    }

    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), Box<StackError>> {
        let location = self.location(span);
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let is_str_tag = tag.as_ref().is_some_and(|t| t.suffix == "str");
                let (value, style) = match style {
                    ScalarStyle::Plain if !is_str_tag => (resolve_plain(&text), Style::Plain),
                    ScalarStyle::Plain => (Value::Str(text.into_owned()), Style::Plain),
                    ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => {
                        (Value::Str(text.into_owned()), Style::Quoted)
                    }
                    _ => (Value::Str(text.into_owned()), Style::Block),
                };
                self.push(
                    Node {
                        value,
                        location,
                        style,
                    },
                    anchor,
                )
            }
            Event::SequenceStart(anchor, _) => {
                self.stack.push(Frame::Seq {
                    items: Vec::new(),
                    start: location,
                    anchor,
                });
                Ok(())
            }
            Event::MappingStart(anchor, _) => {
                self.stack.push(Frame::Map {
                    entries: Vec::new(),
                    pending_key: None,
                    start: location,
                    anchor,
                });
                Ok(())
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let end = location.offset;
                let (value, start, anchor) = match self.stack.pop() {
                    Some(Frame::Seq {
                        items,
                        start,
                        anchor,
                    }) => (Value::Seq(items), start, anchor),
                    Some(Frame::Map {
                        entries,
                        start,
                        anchor,
                        ..
                    }) => (Value::Map(entries), start, anchor),
                    None => return Ok(()),
                };
                let len = end.saturating_sub(start.offset).max(start.len);
                let node = Node {
                    value,
                    location: Location::new(self.file_id, start.offset, len),
                    style: Style::Collection,
                };
                self.push(node, anchor)
            }
            Event::Alias(id) => {
                let node = self.anchors.get(&id).cloned().ok_or_else(|| {
                    StackError::new(
                        "stack::yaml::unknown_alias",
                        Some(location),
                        "this alias names no anchor defined before it",
                    )
                    .label("unknown alias")
                    .help("define the anchor (`&name`) before using `*name`")
                })?;
                self.push(Node { location, ..node }, 0)
            }
            _ => Ok(()),
        }
    }

    fn push(&mut self, node: Node, anchor: usize) -> Result<(), Box<StackError>> {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                pending_key,
                ..
            }) => match pending_key.take() {
                None => {
                    let key = match &node.value {
                        Value::Str(s) => s.clone(),
                        Value::Int(i) => i.to_string(),
                        Value::Bool(b) => b.to_string(),
                        Value::Float(_) | Value::Null | Value::Seq(_) | Value::Map(_) => {
                            return Err(Box::new(
                                StackError::new(
                                    "stack::yaml::complex_key",
                                    Some(node.location),
                                    "mapping keys must be plain names",
                                )
                                .label("not a name")
                                .help("write the key as a plain word, e.g. `workers:`"),
                            ));
                        }
                    };
                    if let Some(first) = entries.iter().find(|e| e.key == key) {
                        let (line, _) = self.file.line_col(first.key_location.offset);
                        return Err(Box::new(StackError::new(
                            "stack::yaml::duplicate_key",
                            Some(node.location),
                            format!("duplicate key `{key}`: it is already defined on line {line}"),
                        )
                        .label("defined again here")
                        .related(first.key_location, "first defined here")
                        .help(format!("keys must be unique within a mapping: rename one `{key}` or merge the two"))));
                    }
                    *pending_key = Some((key, node.location));
                }
                Some((key, key_location)) => entries.push(Entry {
                    key,
                    key_location,
                    value: node,
                }),
            },
        }
        Ok(())
    }
}

/// Types a plain scalar by the YAML 1.2 core schema.
pub(crate) fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && let Ok(i) = text.parse::<i64>()
    {
        return Value::Int(i);
    }
    if let Some(hex) = text.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return Value::Int(i);
    }
    if let Some(oct) = text.strip_prefix("0o")
        && let Ok(i) = i64::from_str_radix(oct, 8)
    {
        return Value::Int(i);
    }
    if looks_like_float(digits)
        && let Ok(f) = text.parse::<f64>()
    {
        return Value::Float(f);
    }
    Value::Str(text.to_owned())
}

/// `[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?` or `\.[0-9]+...`: the core schema's float form.
fn looks_like_float(text: &str) -> bool {
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(i) => (&text[..i], Some(&text[i + 1..])),
        None => (text, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((whole, fraction)) => {
            (!whole.is_empty() || !fraction.is_empty())
                && whole.bytes().all(|b| b.is_ascii_digit())
                && fraction.bytes().all(|b| b.is_ascii_digit())
        }
        None => !mantissa.is_empty() && mantissa.bytes().all(|b| b.is_ascii_digit()),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
    });
    mantissa_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::source::SourceMap;

    fn parse_str(text: &str) -> Result<Node, Box<StackError>> {
        let mut map = SourceMap::default();
        let id = map.add("t.yaml".into(), std::path::Path::new("t.yaml"), text.into());
        parse(id, map.file(id))
    }

    #[test]
    fn plain_scalars_follow_the_core_schema() {
        assert_eq!(resolve_plain("42"), Value::Int(42));
        assert_eq!(resolve_plain("-7"), Value::Int(-7));
        assert_eq!(resolve_plain("1.31"), Value::Float(1.31));
        assert_eq!(resolve_plain("1e3"), Value::Float(1000.0));
        assert_eq!(resolve_plain("true"), Value::Bool(true));
        assert_eq!(resolve_plain("~"), Value::Null);
        assert_eq!(
            resolve_plain("10.0.0.0/16"),
            Value::Str("10.0.0.0/16".into())
        );
        assert_eq!(resolve_plain("1.2.3"), Value::Str("1.2.3".into()));
        assert_eq!(resolve_plain("m5.large"), Value::Str("m5.large".into()));
        assert_eq!(
            resolve_plain("yes"),
            Value::Str("yes".into()),
            "YAML 1.2: yes is a string"
        );
    }

    #[test]
    fn locations_point_at_the_written_text() {
        let text = "a:\n  b: \"x y\"\n  c: [1, 2]\n";
        let root = parse_str(text).unwrap();
        let b = root
            .at(&[PathSegment::Key("a".into()), PathSegment::Key("b".into())])
            .unwrap();
        assert_eq!(
            &text[b.location.offset..b.location.offset + b.location.len],
            "\"x y\""
        );
        assert_eq!(b.style, Style::Quoted);
        let key = root
            .key_location_at(&[PathSegment::Key("a".into()), PathSegment::Key("c".into())])
            .unwrap();
        assert_eq!(&text[key.offset..key.offset + key.len], "c");
        let second = root
            .at(&[
                PathSegment::Key("a".into()),
                PathSegment::Key("c".into()),
                PathSegment::Index(1),
            ])
            .unwrap();
        assert_eq!(second.value, Value::Int(2));
        assert_eq!(
            &text[second.location.offset..second.location.offset + 1],
            "2"
        );
    }

    #[test]
    fn duplicate_keys_are_rejected_with_both_places() {
        let error = parse_str("groups:\n  workers: 1\n  workers: 2\n").unwrap_err();
        assert_eq!(error.code, "stack::yaml::duplicate_key");
        assert!(error.message.contains("line 2"), "{}", error.message);
        assert_eq!(error.related.len(), 1);
    }

    #[test]
    fn anchors_and_aliases_copy_nodes() {
        let root = parse_str("a: &x {k: 1}\nb: *x\n").unwrap();
        assert_eq!(
            root.get("b").unwrap().to_json(),
            serde_json::json!({"k": 1})
        );
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let error = parse_str("a: [1, 2\nb: 3\n").unwrap_err();
        assert_eq!(error.code, "stack::yaml::syntax");
        assert!(error.location.is_some());
    }
}
