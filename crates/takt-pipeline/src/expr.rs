//! GitLab CI's `rules: if:` expressions: `$VAR`, `"string"`, `null`, `/regex/`, `==`, `!=`,
//! `=~`, `!~`, `&&`, `||` and parentheses. Parsed once (with errors), evaluated per run.
//!
//! Bounded by construction: an expression is at most [`MAX_EXPR_BYTES`] long and nested at most
//! [`MAX_EXPR_DEPTH`] parentheses deep, `&&` and `||` chains are flat lists, so neither the
//! parser nor [`Expr::eval`] recurses more than a few frames per parenthesis.

use crate::limits::{MAX_EXPR_BYTES, MAX_EXPR_DEPTH};
use regex::Regex;
use std::collections::HashMap;

#[derive(Debug, Clone)]
pub enum Expr {
    Var(String),
    Str(String),
    Null,
    Regex(Regex),
    Cmp(Box<Expr>, Op, Box<Expr>),
    /// Every operand is true (two or more).
    And(Vec<Expr>),
    /// One operand is true (two or more).
    Or(Vec<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Match,
    NoMatch,
}

/// Where [`Expr::eval`] reads variables.
pub trait Vars {
    fn var(&self, name: &str) -> Option<&str>;
}

impl Vars for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Var(String),
    Str(String),
    Null,
    Regex(String, String),
    Op(Op),
    And,
    Or,
    LParen,
    RParen,
}

/// Tokens with the 1-based character position each starts at.
fn lex(s: &str) -> Result<Vec<(Tok, usize)>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while let Some(&c) = chars.get(i) {
        let at = i + 1;
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '$' => {
                i += 1;
                let braced = chars.get(i) == Some(&'{');
                if braced {
                    i += 1;
                }
                let start = i;
                while chars.get(i).is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_') {
                    i += 1;
                }
                if start == i {
                    return Err(format!("`$` at character {at} must be followed by a variable name"));
                }
                let name: String = chars.get(start..i).unwrap_or_default().iter().collect();
                if braced {
                    if chars.get(i) != Some(&'}') {
                        return Err(format!("`${{{name}` is missing its closing `}}`"));
                    }
                    i += 1;
                }
                out.push((Tok::Var(name), at));
            }
            '"' | '\'' => {
                let q = c;
                i += 1;
                let start = i;
                while chars.get(i).is_some_and(|c| *c != q) {
                    i += 1;
                }
                if i >= chars.len() {
                    return Err(format!("unterminated string starting with {q} at character {at}"));
                }
                out.push((Tok::Str(chars.get(start..i).unwrap_or_default().iter().collect()), at));
                i += 1;
            }
            '/' => {
                i += 1;
                let mut pat = String::new();
                while let Some(&p) = chars.get(i) {
                    if p == '/' {
                        break;
                    }
                    if p == '\\' && chars.get(i + 1) == Some(&'/') {
                        pat.push('/');
                        i += 2;
                        continue;
                    }
                    pat.push(p);
                    i += 1;
                }
                if i >= chars.len() {
                    return Err("unterminated regular expression: add the closing `/`".into());
                }
                i += 1;
                let mut flags = String::new();
                while let Some(&f) = chars.get(i).filter(|c| c.is_ascii_alphabetic()) {
                    flags.push(f);
                    i += 1;
                }
                out.push((Tok::Regex(pat, flags), at));
            }
            '(' => {
                out.push((Tok::LParen, at));
                i += 1;
            }
            ')' => {
                out.push((Tok::RParen, at));
                i += 1;
            }
            _ => {
                let next = chars.get(i + 1).copied();
                let tok = match (c, next) {
                    ('=', Some('=')) => Tok::Op(Op::Eq),
                    ('!', Some('=')) => Tok::Op(Op::Ne),
                    ('=', Some('~')) => Tok::Op(Op::Match),
                    ('!', Some('~')) => Tok::Op(Op::NoMatch),
                    ('&', Some('&')) => Tok::And,
                    ('|', Some('|')) => Tok::Or,
                    _ => {
                        if chars.get(i..i + 4) == Some(&['n', 'u', 'l', 'l'][..]) {
                            i += 4;
                            out.push((Tok::Null, at));
                            continue;
                        }
                        return Err(format!("unexpected `{c}` at character {at} of the expression"));
                    }
                };
                out.push((tok, at));
                i += 2;
            }
        }
    }
    Ok(out)
}

struct P {
    toks: Vec<(Tok, usize)>,
    i: usize,
    /// Open parentheses around the current position.
    depth: usize,
}

impl P {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i).map(|(t, _)| t)
    }
    fn next(&mut self) -> Option<(Tok, usize)> {
        let t = self.toks.get(self.i).cloned();
        self.i += 1;
        t
    }
    fn or(&mut self) -> Result<Expr, String> {
        let mut items = vec![self.and()?];
        while self.peek() == Some(&Tok::Or) {
            self.i += 1;
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap_or(Expr::Null)
        } else {
            Expr::Or(items)
        })
    }
    fn and(&mut self) -> Result<Expr, String> {
        let mut items = vec![self.cmp()?];
        while self.peek() == Some(&Tok::And) {
            self.i += 1;
            items.push(self.cmp()?);
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap_or(Expr::Null)
        } else {
            Expr::And(items)
        })
    }
    fn cmp(&mut self) -> Result<Expr, String> {
        let l = self.atom()?;
        if let Some(Tok::Op(op)) = self.peek().cloned() {
            self.i += 1;
            let r = self.atom()?;
            if matches!(op, Op::Match | Op::NoMatch) && !matches!(r, Expr::Regex(_) | Expr::Var(_)) {
                return Err("`=~` and `!~` need a /regex/ on their right".into());
            }
            return Ok(Expr::Cmp(Box::new(l), op, Box::new(r)));
        }
        Ok(l)
    }
    fn atom(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some((Tok::Var(v), _)) => Ok(Expr::Var(v)),
            Some((Tok::Str(s), _)) => Ok(Expr::Str(s)),
            Some((Tok::Null, _)) => Ok(Expr::Null),
            Some((Tok::Regex(p, flags), _)) => {
                let mut prefix = String::new();
                for f in flags.chars() {
                    match f {
                        'i' => prefix.push_str("(?i)"),
                        'm' => prefix.push_str("(?m)"),
                        's' => prefix.push_str("(?s)"),
                        other => return Err(format!("unknown regex flag `{other}`")),
                    }
                }
                // A compiled pattern may take at most 256 KiB (the regex crate's default is
                // 10 MB), so a file's many patterns cannot take gigabytes.
                regex::RegexBuilder::new(&format!("{prefix}{p}"))
                    .size_limit(crate::limits::MAX_REGEX_BYTES)
                    .build()
                    .map(Expr::Regex)
                    .map_err(|e| format!("bad regular expression /{p}/: {e}"))
            }
            Some((Tok::LParen, at)) => {
                if self.depth >= MAX_EXPR_DEPTH {
                    return Err(format!(
                        "expression nested deeper than {MAX_EXPR_DEPTH} levels (the parenthesis at character {at}); \
                         the limit is {MAX_EXPR_DEPTH}"
                    ));
                }
                self.depth += 1;
                let e = self.or()?;
                self.depth -= 1;
                match self.next() {
                    Some((Tok::RParen, _)) => Ok(e),
                    _ => Err(format!("missing `)` for the `(` at character {at}")),
                }
            }
            Some((t, at)) => Err(format!("unexpected {t:?} at character {at} of the expression")),
            None => Err("the expression ends too early".into()),
        }
    }
}

impl Expr {
    pub fn parse(s: &str) -> Result<Expr, String> {
        if s.len() > MAX_EXPR_BYTES {
            return Err(format!(
                "the expression is {} bytes long; the limit is {MAX_EXPR_BYTES} bytes",
                s.len()
            ));
        }
        let toks = lex(s)?;
        if toks.is_empty() {
            return Err("empty expression".into());
        }
        let mut p = P { toks, i: 0, depth: 0 };
        let e = p.or()?;
        if let Some((t, at)) = p.toks.get(p.i) {
            return Err(format!(
                "unexpected {t:?} at character {at}, after a complete expression"
            ));
        }
        Ok(e)
    }

    /// Evaluates against the run's variables. An undefined variable is `null`.
    pub fn eval<V: Vars + ?Sized>(&self, vars: &V) -> bool {
        match self {
            Expr::Var(v) => vars.var(v).is_some_and(|x| !x.is_empty()),
            Expr::Str(s) => !s.is_empty(),
            Expr::Null => false,
            Expr::Regex(_) => true,
            Expr::And(items) => items.iter().all(|e| e.eval(vars)),
            Expr::Or(items) => items.iter().any(|e| e.eval(vars)),
            Expr::Cmp(l, op, r) => {
                let lv = value(l, vars);
                match op {
                    Op::Eq => lv == value(r, vars),
                    Op::Ne => lv != value(r, vars),
                    Op::Match | Op::NoMatch => {
                        let m = match (&**r, lv) {
                            (Expr::Regex(re), Some(s)) => re.is_match(s),
                            // The pattern is a variable's value: parsed here, with the same limits.
                            (Expr::Var(name), Some(s)) => vars
                                .var(name)
                                .and_then(|p| Expr::parse(p).ok())
                                .is_some_and(|e| matches!(&e, Expr::Regex(re) if re.is_match(s))),
                            _ => false,
                        };
                        if *op == Op::Match { m } else { !m }
                    }
                }
            }
        }
    }
}

fn value<'a, V: Vars + ?Sized>(e: &'a Expr, vars: &'a V) -> Option<&'a str> {
    match e {
        Expr::Var(v) => vars.var(v),
        Expr::Str(s) => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn evaluates_gitlab_style_conditions() {
        let v = vars(&[("CI_COMMIT_BRANCH", "main"), ("DEPLOY", "yes")]);
        assert!(Expr::parse("$CI_COMMIT_BRANCH == \"main\"").unwrap().eval(&v));
        assert!(!Expr::parse("$CI_COMMIT_BRANCH != 'main'").unwrap().eval(&v));
        assert!(Expr::parse("$CI_COMMIT_TAG == null").unwrap().eval(&v));
        assert!(Expr::parse("$CI_COMMIT_BRANCH =~ /^ma/ && $DEPLOY").unwrap().eval(&v));
        assert!(
            Expr::parse("$CI_COMMIT_TAG || ($DEPLOY && $CI_COMMIT_BRANCH !~ /^feat/i)")
                .unwrap()
                .eval(&v)
        );
        assert!(!Expr::parse("$MISSING").unwrap().eval(&v));
        assert!(Expr::parse("${CI_COMMIT_BRANCH} =~ /MAIN/i").unwrap().eval(&v));
    }

    #[test]
    fn reports_bad_syntax() {
        assert!(Expr::parse("$A == ").is_err());
        assert!(Expr::parse("($A").is_err());
        assert!(Expr::parse("$A =~ /[/").unwrap_err().contains("regular expression"));
        assert!(Expr::parse("$A = 'x'").is_err());
        assert!(Expr::parse("").is_err());
    }

    #[test]
    fn nesting_and_length_are_bounded() {
        let at_limit = format!("{}$A{}", "(".repeat(MAX_EXPR_DEPTH), ")".repeat(MAX_EXPR_DEPTH));
        assert!(Expr::parse(&at_limit).unwrap().eval(&vars(&[("A", "x")])));
        let over = format!("{}$A{}", "(".repeat(MAX_EXPR_DEPTH + 1), ")".repeat(MAX_EXPR_DEPTH + 1));
        let e = Expr::parse(&over).unwrap_err();
        assert!(e.contains("nested deeper than 64 levels"), "{e}");
        assert!(e.contains("character 65"), "{e}");
        let long = "$A && ".repeat(2000) + "$A";
        assert!(Expr::parse(&long).unwrap_err().contains("limit is 4096 bytes"));
        // A long flat chain is one list, not a deep tree.
        let chain = "$A && ".repeat(600) + "$A";
        match Expr::parse(&chain).unwrap() {
            Expr::And(items) => assert_eq!(items.len(), 601),
            other => panic!("{other:?}"),
        }
    }
}
