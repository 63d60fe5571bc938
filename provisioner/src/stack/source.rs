//! Source files of a stack and locations inside them.
//!
//! Every node of a loaded stack remembers the file and the byte range it came from, so that an
//! error found after `extends` merged several files still points at the line a user must change.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Index of a file in a [`SourceMap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId(usize);

impl FileId {
    /// Position of the file in load order.
    pub fn index(self) -> usize {
        self.0
    }
}

/// A loaded file: its name as the user should see it, and its text.
#[derive(Debug)]
pub struct SourceFile {
    /// Path as shown in diagnostics (relative as the user gave it, or relative to the stacks dir).
    pub display_name: String,
    /// Path used to read it and to resolve `extends` relative to it.
    pub path: PathBuf,
    /// The file's text, shared with rendered diagnostics.
    pub text: Arc<str>,
    line_starts: Vec<usize>,
}

impl SourceFile {
    fn new(display_name: String, path: PathBuf, text: String) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self {
            display_name,
            path,
            text: text.into(),
            line_starts,
        }
    }

    /// Byte offset of a 1-based line and a 0-based column counted in characters.
    pub fn offset(&self, line: usize, char_col: usize) -> usize {
        let Some(&start) = self.line_starts.get(line.saturating_sub(1)) else {
            return self.text.len();
        };
        let rest = &self.text[start..];
        rest.char_indices()
            .nth(char_col)
            .map_or(self.text.len(), |(i, _)| start + i)
    }

    /// 1-based line and column of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let start = self.line_starts[line - 1];
        let column = self.text[start..offset.min(self.text.len())]
            .chars()
            .count()
            + 1;
        (line, column)
    }
}

/// All files read while loading one stack (the stack file and the files it extends).
#[derive(Debug, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    /// Adds a file and returns its id.
    pub fn add(&mut self, display_name: String, path: &Path, text: String) -> FileId {
        self.files
            .push(SourceFile::new(display_name, path.to_path_buf(), text));
        FileId(self.files.len() - 1)
    }

    /// The file with this id.
    pub fn file(&self, id: FileId) -> &SourceFile {
        &self.files[id.0]
    }

    /// The id of an already loaded file, by canonical path.
    pub fn find(&self, path: &Path) -> Option<FileId> {
        self.files.iter().position(|f| f.path == path).map(FileId)
    }
}

/// A byte range in one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// The file.
    pub file: FileId,
    /// Byte offset where the range starts.
    pub offset: usize,
    /// Length of the range in bytes.
    pub len: usize,
}

impl Location {
    /// A range starting at `offset` of `len` bytes.
    pub fn new(file: FileId, offset: usize, len: usize) -> Self {
        Self { file, offset, len }
    }

    /// The narrower range `[start, start + len)` counted from this range's start.
    pub fn sub(self, start: usize, len: usize) -> Self {
        Self {
            file: self.file,
            offset: self.offset + start,
            len,
        }
    }
}
