//! How the command line writes: colour only on a terminal (and never with `NO_COLOR`), plain
//! lines otherwise, reports through miette.

use std::io::IsTerminal;

/// Where and how to print.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// Whether stderr gets colour.
    pub color: bool,
    /// Width for wrapped reports.
    pub width: usize,
}

impl Output {
    /// Colour when stderr is a terminal and `NO_COLOR` is unset.
    pub fn from_environment() -> Self {
        let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        let width = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(100);
        Self { color, width }
    }

    /// Prints an unexpected error with its causes.
    pub fn report(&self, error: &miette::Report) {
        use miette::{GraphicalReportHandler, GraphicalTheme};
        let theme = if self.color {
            GraphicalTheme::unicode()
        } else {
            GraphicalTheme::unicode_nocolor()
        };
        let mut text = String::new();
        let handler = GraphicalReportHandler::new_themed(theme).with_width(self.width);
        if handler.render_report(&mut text, error.as_ref()).is_err() {
            text = format!("{error:?}");
        }
        eprint!("{text}");
    }
}
