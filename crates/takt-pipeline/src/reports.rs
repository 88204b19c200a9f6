//! What GitLab's job keywords read out of a finished job: the `coverage:` figure from its log,
//! the variables of a `reports: dotenv` file. Pure: the caller reads the files.

/// The most variables one dotenv report may pass on (GitLab's default limit).
pub const MAX_DOTENV_VARIABLES: usize = 20;
/// The largest dotenv report read (GitLab's limit: 5 KiB).
pub const MAX_DOTENV_BYTES: usize = 5 * 1024;

/// GitLab's `coverage`: the last line of the log its regex matches gives the figure — the
/// regex's first group if it has one, else the whole match — as the first number in it (`85%`,
/// `85.3`, `(85.30%)`). Lines are matched without takt's timestamp prefix. `None`: no match,
/// or the regex is not valid (lint refuses those).
pub fn coverage_in(regex: &str, log: &str) -> Option<f64> {
    let re = regex::Regex::new(regex).ok()?;
    let number = regex::Regex::new(r"\d+(?:\.\d+)?").ok()?;
    log.lines().rev().find_map(|line| {
        let line = strip_timestamp(line);
        let caps = re.captures(line)?;
        let text = caps.get(1).or_else(|| caps.get(0))?.as_str();
        number.find(text)?.as_str().parse().ok()
    })
}

/// A log line without its `2026-12-02T16:11:10.931Z ` prefix, when it has one.
fn strip_timestamp(line: &str) -> &str {
    match line.split_once(' ') {
        Some((ts, rest)) if ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes().get(10) == Some(&b'T') => rest,
        _ => line,
    }
}

/// A dotenv report: `NAME=value` lines (GitLab's rules: blank lines and `#` comments skipped,
/// the value taken as written; no multi-line values). Returns the variables and a description
/// of each line refused.
pub fn parse_dotenv(text: &str) -> (Vec<(String, String)>, Vec<String>) {
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut problems = Vec::new();
    if text.len() > MAX_DOTENV_BYTES {
        problems.push(format!(
            "the report is {} bytes; the limit is {MAX_DOTENV_BYTES} (GitLab's)",
            text.len()
        ));
        return (vars, problems);
    }
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            problems.push(format!("line {}: not NAME=value", n + 1));
            continue;
        };
        let name = name.trim();
        let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            problems.push(format!("line {}: `{name}` is not a variable name", n + 1));
            continue;
        }
        if vars.len() >= MAX_DOTENV_VARIABLES && !vars.iter().any(|(k, _)| k == name) {
            problems.push(format!(
                "line {}: more than {MAX_DOTENV_VARIABLES} variables (GitLab's limit); the rest are ignored",
                n + 1
            ));
            break;
        }
        vars.retain(|(k, _)| k != name);
        vars.push((name.to_string(), value.to_string()));
    }
    (vars, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_takes_the_last_matching_line_and_its_group() {
        let log = "2026-12-02T16:11:10.931Z TOTAL  10  2  80%\n\
                   2026-12-02T16:11:10.932Z other\n\
                   2026-12-02T16:11:10.933Z TOTAL  10  1  90%\n";
        assert_eq!(coverage_in(r"^TOTAL.*\s+(\d+%)$", log), Some(90.0));
        assert_eq!(
            coverage_in(
                r"total:\s+\(statements\)\s+(\d+.\d+)%",
                "total:\t(statements)\t85.30%\n"
            ),
            Some(85.3)
        );
        assert_eq!(
            coverage_in(r"Coverage: \d+\.\d+", "Coverage: 71.5 of lines\n"),
            Some(71.5)
        );
        assert_eq!(coverage_in(r"^nothing$", log), None);
        assert_eq!(coverage_in(r"(", log), None);
    }

    #[test]
    fn dotenv_reads_gitlabs_format_and_says_what_it_refused() {
        let (vars, problems) =
            parse_dotenv("# built\nVERSION=1.2.3\n\nURL=https://x?a=b\n9BAD=x\nno equals\nVERSION=1.2.4\r\n");
        assert_eq!(
            vars,
            vec![
                ("URL".to_string(), "https://x?a=b".to_string()),
                ("VERSION".to_string(), "1.2.4".to_string())
            ]
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("line 5"), "{problems:?}");
        let many: String = (0..25).map(|i| format!("V{i}=x\n")).collect();
        let (vars, problems) = parse_dotenv(&many);
        assert_eq!(vars.len(), MAX_DOTENV_VARIABLES);
        assert_eq!(problems.len(), 1);
    }
}
