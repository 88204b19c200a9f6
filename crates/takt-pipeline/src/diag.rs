//! Diagnostics: what is wrong, where (file:line:column), and how to fix it.

use std::fmt;

/// A position in the pipeline file: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// Whether a problem stops the file from being used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
pub enum Severity {
    #[default]
    Error,
    /// The file works, but not quite as written (e.g. GitLab's `tags` before takt has agents).
    Warning,
}

/// One problem found in a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub pos: Pos,
    pub message: String,
    /// How to fix it, when takt can tell.
    pub help: Option<String>,
    pub severity: Severity,
}

impl Diagnostic {
    pub fn new(pos: Pos, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            pos,
            message: message.into(),
            help: None,
            severity: Severity::Error,
        }
    }

    pub fn warning(pos: Pos, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::new(pos, message)
        }
    }

    /// `file:line:col: error: message` and the help on a second line.
    pub fn render(&self, file: &str) -> String {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut s = format!("{file}:{}:{}: {level}: {}", self.pos.line, self.pos.col, self.message);
        if let Some(h) = &self.help {
            s.push_str("\n  help: ");
            s.push_str(h);
        }
        s
    }

    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }
}

/// All the problems of one file (and the files it includes), reported together.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Diagnostics {
    pub file: String,
    pub items: Vec<Diagnostic>,
    /// The files `include:` read, in the order their line numbers are offset by
    /// [`crate::gitlab::INCLUDE_LINE_BASE`].
    pub includes: Vec<String>,
}

impl Diagnostics {
    /// The file a position is in, and the position within it.
    pub fn locate(&self, pos: Pos) -> (&str, Pos) {
        let base = crate::gitlab::INCLUDE_LINE_BASE;
        match (pos.line / base).checked_sub(1).and_then(|i| self.includes.get(i)) {
            Some(f) => (
                f,
                Pos {
                    line: pos.line % base,
                    col: pos.col,
                },
            ),
            None => (&self.file, pos),
        }
    }

    /// One diagnostic as `file:line:col: level: message`, in the file it is in.
    pub fn render(&self, d: &Diagnostic) -> String {
        let (file, pos) = self.locate(d.pos);
        Diagnostic { pos, ..d.clone() }.render(file)
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.items.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            f.write_str(&self.render(d))?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// The closest candidate to `word` (edit distance at most 2), for "did you mean" hints.
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::levenshtein(word, c), *c))
        .filter(|(d, c)| *d <= 2.min(c.len().saturating_sub(1)).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_keys_only() {
        assert_eq!(did_you_mean("scirpt", &["script", "stage"]), Some("script"));
        assert_eq!(did_you_mean("needz", &["needs", "rules"]), Some("needs"));
        assert_eq!(did_you_mean("banana", &["script", "stage"]), None);
    }
}
