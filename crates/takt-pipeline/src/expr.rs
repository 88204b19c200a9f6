//! GitLab CI's `rules: if:` expressions: `$VAR`, `"string"`, `null`, `/regex/`, `==`, `!=`,
//! `=~`, `!~`, `&&`, `||` and parentheses. Parsed once (with errors), evaluated per run.

use regex::Regex;
use std::collections::HashMap;

#[derive(Debug, Clone)]
pub enum Expr {
    Var(String),
    Str(String),
    Null,
    Regex(Regex),
    Cmp(Box<Expr>, Op, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Match,
    NoMatch,
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

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '$' => {
                i += 1;
                let braced = chars.get(i) == Some(&'{');
                if braced {
                    i += 1;
                }
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                if start == i {
                    return Err("`$` must be followed by a variable name".into());
                }
                let name: String = chars[start..i].iter().collect();
                if braced {
                    if chars.get(i) != Some(&'}') {
                        return Err(format!("`${{{name}` is missing its closing `}}`"));
                    }
                    i += 1;
                }
                out.push(Tok::Var(name));
            }
            '"' | '\'' => {
                let q = c;
                i += 1;
                let start = i;
                while i < chars.len() && chars[i] != q {
                    i += 1;
                }
                if i >= chars.len() {
                    return Err(format!("unterminated string starting with {q}"));
                }
                out.push(Tok::Str(chars[start..i].iter().collect()));
                i += 1;
            }
            '/' => {
                i += 1;
                let mut pat = String::new();
                while i < chars.len() && chars[i] != '/' {
                    if chars[i] == '\\' && chars.get(i + 1) == Some(&'/') {
                        pat.push('/');
                        i += 2;
                        continue;
                    }
                    pat.push(chars[i]);
                    i += 1;
                }
                if i >= chars.len() {
                    return Err("unterminated regular expression: add the closing `/`".into());
                }
                i += 1;
                let mut flags = String::new();
                while i < chars.len() && chars[i].is_ascii_alphabetic() {
                    flags.push(chars[i]);
                    i += 1;
                }
                out.push(Tok::Regex(pat, flags));
            }
            '(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1;
            }
            _ => {
                let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
                let tok = match two.as_str() {
                    "==" => Tok::Op(Op::Eq),
                    "!=" => Tok::Op(Op::Ne),
                    "=~" => Tok::Op(Op::Match),
                    "!~" => Tok::Op(Op::NoMatch),
                    "&&" => Tok::And,
                    "||" => Tok::Or,
                    _ => {
                        let rest: String = chars[i..].iter().collect();
                        if rest.starts_with("null") {
                            i += 4;
                            out.push(Tok::Null);
                            continue;
                        }
                        return Err(format!("unexpected `{c}` in expression"));
                    }
                };
                out.push(tok);
                i += 2;
            }
        }
    }
    Ok(out)
}

struct P {
    toks: Vec<Tok>,
    i: usize,
}

impl P {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.i).cloned();
        self.i += 1;
        t
    }
    fn or(&mut self) -> Result<Expr, String> {
        let mut l = self.and()?;
        while self.peek() == Some(&Tok::Or) {
            self.i += 1;
            let r = self.and()?;
            l = Expr::Or(Box::new(l), Box::new(r));
        }
        Ok(l)
    }
    fn and(&mut self) -> Result<Expr, String> {
        let mut l = self.cmp()?;
        while self.peek() == Some(&Tok::And) {
            self.i += 1;
            let r = self.cmp()?;
            l = Expr::And(Box::new(l), Box::new(r));
        }
        Ok(l)
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
            Some(Tok::Var(v)) => Ok(Expr::Var(v)),
            Some(Tok::Str(s)) => Ok(Expr::Str(s)),
            Some(Tok::Null) => Ok(Expr::Null),
            Some(Tok::Regex(p, flags)) => {
                let mut prefix = String::new();
                for f in flags.chars() {
                    match f {
                        'i' => prefix.push_str("(?i)"),
                        'm' => prefix.push_str("(?m)"),
                        's' => prefix.push_str("(?s)"),
                        other => return Err(format!("unknown regex flag `{other}`")),
                    }
                }
                Regex::new(&format!("{prefix}{p}"))
                    .map(Expr::Regex)
                    .map_err(|e| format!("bad regular expression /{p}/: {e}"))
            }
            Some(Tok::LParen) => {
                let e = self.or()?;
                match self.next() {
                    Some(Tok::RParen) => Ok(e),
                    _ => Err("missing `)`".into()),
                }
            }
            Some(t) => Err(format!("unexpected {t:?} in expression")),
            None => Err("the expression ends too early".into()),
        }
    }
}

impl Expr {
    pub fn parse(s: &str) -> Result<Expr, String> {
        let toks = lex(s)?;
        if toks.is_empty() {
            return Err("empty expression".into());
        }
        let mut p = P { toks, i: 0 };
        let e = p.or()?;
        if p.i < p.toks.len() {
            return Err(format!("unexpected {:?} after a complete expression", p.toks[p.i]));
        }
        Ok(e)
    }

    /// Evaluates against the run's variables. An undefined variable is `null`.
    pub fn eval(&self, vars: &HashMap<String, String>) -> bool {
        match self {
            Expr::Var(v) => vars.get(v).is_some_and(|x| !x.is_empty()),
            Expr::Str(s) => !s.is_empty(),
            Expr::Null => false,
            Expr::Regex(_) => true,
            Expr::And(a, b) => a.eval(vars) && b.eval(vars),
            Expr::Or(a, b) => a.eval(vars) || b.eval(vars),
            Expr::Cmp(l, op, r) => {
                let lv = value(l, vars);
                match op {
                    Op::Eq => lv == value(r, vars),
                    Op::Ne => lv != value(r, vars),
                    Op::Match | Op::NoMatch => {
                        let m = match (&**r, lv) {
                            (Expr::Regex(re), Some(s)) => re.is_match(&s),
                            (Expr::Var(name), Some(s)) => vars
                                .get(name)
                                .and_then(|p| Expr::parse(p).ok())
                                .is_some_and(|e| matches!(&e, Expr::Regex(re) if re.is_match(&s))),
                            _ => false,
                        };
                        if *op == Op::Match { m } else { !m }
                    }
                }
            }
        }
    }
}

fn value(e: &Expr, vars: &HashMap<String, String>) -> Option<String> {
    match e {
        Expr::Var(v) => vars.get(v).cloned(),
        Expr::Str(s) => Some(s.clone()),
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
}
