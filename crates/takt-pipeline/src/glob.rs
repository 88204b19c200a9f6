//! Path globs as GitLab CI reads them: `*` stays within a directory, `**` crosses directories,
//! and a pattern naming a directory matches everything under it.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

#[derive(Debug, Clone)]
pub struct GlobList {
    set: GlobSet,
}

impl GlobList {
    /// Builds a matcher; patterns that fail to compile are skipped (validation reports them).
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> GlobList {
        let mut b = GlobSetBuilder::new();
        for p in patterns {
            let p = p.as_ref().trim_start_matches("./").trim_end_matches('/');
            for pat in [p.to_string(), format!("{p}/**")] {
                if let Ok(g) = GlobBuilder::new(&pat).literal_separator(true).build() {
                    b.add(g);
                }
            }
        }
        GlobList {
            set: b.build().unwrap_or_else(|_| GlobSet::empty()),
        }
    }

    pub fn is_match(&self, path: &str) -> bool {
        self.set.is_match(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_like_gitlab() {
        let g = GlobList::new(&["src/*.rs", "docs", "**/*.md"]);
        assert!(g.is_match("src/main.rs"));
        assert!(!g.is_match("src/a/main.rs"));
        assert!(g.is_match("docs/x/y.txt"));
        assert!(g.is_match("a/b/README.md"));
        assert!(g.is_match("README.md"));
    }
}
