//! Diagnostics rendered as `file:line:col: message` with the offending line.

use crate::Location;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: String,
    pub location: Location,
    pub message: String,
    /// The text of the offending line, when known.
    pub source_line: Option<String>,
}

/// One or more diagnostics (the error type of [`crate::parse`]); errors first.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}:{}:{}: {sev}: {}",
            self.file, self.location.line, self.location.column, self.message
        )?;
        if let Some(line) = &self.source_line {
            let n = self.location.line.to_string();
            let pad = " ".repeat(n.len());
            write!(f, "\n{pad} |\n{n} | {line}\n{pad} | ")?;
            let col = self.location.column.max(1);
            write!(f, "{}^", " ".repeat(col - 1))?;
        }
        Ok(())
    }
}

impl std::fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}
