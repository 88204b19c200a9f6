//! The command line itself: every command's `--help` builds (clap's consistency checks run in
//! debug builds whenever a command is built), and sizes parse as the help says.
use crate::common::*;

/// The subcommands a `--help` lists under `Commands:`.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        // Descriptions that wrap go on lines indented further.
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect()
}

#[test]
fn every_command_has_consistent_help() {
    let mut todo: Vec<Vec<String>> = vec![vec![]];
    let mut seen = 0;
    while let Some(path) = todo.pop() {
        let out = takt().args(&path).arg("--help").output().unwrap();
        assert!(out.status.success(), "takt {} --help: {}", path.join(" "), stderr(&out));
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("Usage: takt"), "takt {} --help:\n{help}", path.join(" "));
        for sub in subcommands(&help) {
            let mut p = path.clone();
            p.push(sub);
            todo.push(p);
        }
        seen += 1;
    }
    // takt has dozens of commands; a help whose layout changed would list none.
    assert!(seen > 40, "only {seen} commands found");
}

#[test]
fn sizes_parse_as_the_help_says() {
    let repo = Repo::new(&[("takt.yml", "jobs:\n  a: {script: [echo hi]}\n")]);
    for (size, ok) in [
        ("64MiB", true),
        ("2g", true),
        ("500k", true),
        ("12 parsecs", false),
        ("1", false),
    ] {
        let (out, _) = repo.run(&["--log-limit", size]);
        if ok {
            assert!(out.status.success(), "--log-limit {size}: {}", stderr(&out));
        } else {
            assert_eq!(out.status.code(), Some(2), "--log-limit {size}: {out:?}");
            let says = format!("invalid value '{size}' for '--log-limit <SIZE>'");
            assert!(stderr(&out).contains(&says), "{}", stderr(&out));
        }
    }
}
