//! Errors found in stack files, with the location a user must change and what to write instead.
//!
//! Loading collects every error of a run instead of stopping at the first; [`StackErrors`] holds
//! them together with the source files so they render as miette reports (file, line, column, the
//! offending snippet, a hint) or as JSON for CI.

use std::fmt;
use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceCode};
use serde::Serialize;

use super::source::{Location, SourceMap};

/// One error in a stack file.
#[derive(Debug, Clone)]
pub struct StackError {
    /// Stable identifier, e.g. `stack::unknown_key`; documented in `stacks/README.md`.
    pub code: &'static str,
    /// What is wrong, in one sentence.
    pub message: String,
    /// Where; `None` for errors that concern no file content (a missing file, a bad flag).
    pub location: Option<Location>,
    /// Short text shown under the underlined snippet.
    pub label: Option<String>,
    /// What to write instead.
    pub help: Option<String>,
    /// Further places that explain the error, with their own label (same file or another).
    pub related: Vec<(Location, String)>,
}

impl StackError {
    /// An error at `location` (or at no location).
    pub fn new(code: &'static str, location: Option<Location>, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            location,
            label: None,
            help: None,
            related: Vec::new(),
        }
    }

    /// Sets the label under the snippet.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Sets the hint.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Sets the hint when there is one.
    pub fn maybe_help(mut self, help: Option<String>) -> Self {
        self.help = help;
        self
    }

    /// Adds a related place.
    pub fn related(mut self, location: Location, label: impl Into<String>) -> Self {
        self.related.push((location, label.into()));
        self
    }
}

/// Every error found while loading one stack, with the files they point into.
#[derive(Debug)]
pub struct StackErrors {
    sources: Arc<SourceMap>,
    errors: Vec<StackError>,
}

impl StackErrors {
    pub(crate) fn new(sources: Arc<SourceMap>, mut errors: Vec<StackError>) -> Self {
        // Report in reading order: by file, then by position.
        errors.sort_by_key(|e| e.location.map(|l| (l.file.index(), l.offset)));
        Self { sources, errors }
    }

    /// Errors that point into no file (a missing file, a bad flag).
    pub fn without_sources(errors: Vec<StackError>) -> Self {
        Self::new(Arc::new(SourceMap::default()), errors)
    }

    /// The errors, in reading order.
    pub fn errors(&self) -> &[StackError] {
        &self.errors
    }

    /// `file:line:column` of an error, as printed in reports.
    pub fn position(&self, error: &StackError) -> Option<Position> {
        let location = error.location?;
        let file = self.sources.file(location.file);
        let (line, column) = file.line_col(location.offset);
        Some(Position {
            file: file.display_name.clone(),
            line,
            column,
        })
    }

    /// Each error as a miette diagnostic, ready for a report handler.
    pub fn diagnostics(&self) -> impl Iterator<Item = RenderedError<'_>> {
        self.errors.iter().map(|error| RenderedError {
            error,
            sources: &self.sources,
        })
    }

    /// The errors as the machine-readable `validate --json` document (see `stacks/README.md`).
    pub fn to_json(&self) -> Vec<ErrorRecord> {
        self.errors
            .iter()
            .map(|error| {
                let position = self.position(error);
                ErrorRecord {
                    code: error.code,
                    message: error.message.clone(),
                    file: position.as_ref().map(|p| p.file.clone()),
                    line: position.as_ref().map(|p| p.line),
                    column: position.as_ref().map(|p| p.column),
                    label: error.label.clone(),
                    help: error.help.clone(),
                }
            })
            .collect()
    }
}

impl fmt::Display for StackErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for error in &self.errors {
            match self.position(error) {
                Some(p) => writeln!(f, "{p}: {}", error.message)?,
                None => writeln!(f, "{}", error.message)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for StackErrors {}

/// `file:line:column`, 1-based.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Position {
    /// The file as the user named it.
    pub file: String,
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub column: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// One error in `validate --json` output.
#[derive(Debug, Serialize)]
pub struct ErrorRecord {
    /// Stable identifier.
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
    /// File as the user named it.
    pub file: Option<String>,
    /// Line, from 1.
    pub line: Option<usize>,
    /// Column, from 1.
    pub column: Option<usize>,
    /// The label under the snippet.
    pub label: Option<String>,
    /// What to write instead.
    pub help: Option<String>,
}

/// A [`StackError`] bound to its source file, for miette.
#[derive(Debug)]
pub struct RenderedError<'a> {
    error: &'a StackError,
    sources: &'a SourceMap,
}

impl fmt::Display for RenderedError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.error.message)
    }
}

impl std::error::Error for RenderedError<'_> {}

impl RenderedError<'_> {
    fn named_source(&self, location: Location) -> NamedSource<Arc<str>> {
        let file = self.sources.file(location.file);
        NamedSource::new(&file.display_name, file.text.clone()).with_language("yaml")
    }
}

impl Diagnostic for RenderedError<'_> {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.error.code))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.error
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        let location = self.error.location?;
        Some(&self.sources.file(location.file).text as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let location = self.error.location?;
        let primary = LabeledSpan::new_primary_with_span(
            self.error.label.clone(),
            (location.offset, location.len),
        );
        let same_file = self
            .error
            .related
            .iter()
            .filter(move |(l, _)| l.file == location.file)
            .map(|(l, text)| LabeledSpan::new_with_span(Some(text.clone()), (l.offset, l.len)));
        Some(Box::new(std::iter::once(primary).chain(same_file)))
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        None
    }
}

/// Renders errors for a terminal or a log: one miette report each, then a count.
pub fn render(errors: &StackErrors, color: bool, width: usize) -> String {
    use miette::{GraphicalReportHandler, GraphicalTheme};
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_width(width)
        .with_links(false);
    let mut out = String::new();
    for rendered in errors.diagnostics() {
        let source_override;
        let diagnostic: &dyn Diagnostic = match rendered.error.location {
            Some(location) => {
                source_override = WithNamedSource {
                    inner: &rendered,
                    source: rendered.named_source(location),
                };
                &source_override
            }
            None => &rendered,
        };
        // Writing into a String cannot fail.
        let _ = handler.render_report(&mut out, diagnostic);
        for (location, text) in &rendered.error.related {
            if Some(location.file) != rendered.error.location.map(|l| l.file) {
                let file = errors.sources.file(location.file);
                let (line, column) = file.line_col(location.offset);
                out.push_str(&format!(
                    "  note: {}:{line}:{column}: {text}\n",
                    file.display_name
                ));
            }
        }
        out.push('\n');
    }
    let count = errors.errors.len();
    out.push_str(&format!(
        "{count} error{}\n",
        if count == 1 { "" } else { "s" }
    ));
    out
}

/// A diagnostic whose source carries the file name, so reports print `[file:line:col]`.
struct WithNamedSource<'a> {
    inner: &'a RenderedError<'a>,
    source: NamedSource<Arc<str>>,
}

impl fmt::Debug for WithNamedSource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl fmt::Display for WithNamedSource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl std::error::Error for WithNamedSource<'_> {}

impl Diagnostic for WithNamedSource<'_> {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.inner.code()
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.inner.help()
    }
    fn source_code(&self) -> Option<&dyn SourceCode> {
        Some(&self.source)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.inner.labels()
    }
}
