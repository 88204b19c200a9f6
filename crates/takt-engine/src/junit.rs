//! JUnit XML reports → test cases (outcome, duration), as every test runner writes them.

use quick_xml::events::{BytesStart, Event};
use takt_model::{TestCase, TestCounts, TestOutcome};

fn attr(e: &BytesStart, name: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == name.as_bytes())
        .and_then(|a| {
            a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .ok()
                .map(|v| v.into_owned())
        })
}

/// Parses one report. Malformed XML is an error naming the byte offset.
pub fn parse(xml: &[u8]) -> Result<Vec<TestCase>, String> {
    let mut reader = quick_xml::Reader::from_reader(xml);
    reader.config_mut().trim_text(true);
    let mut suites: Vec<String> = Vec::new();
    let mut current: Option<TestCase> = None;
    let mut out = Vec::new();
    let mut buf = Vec::new();
    loop {
        let ev = reader
            .read_event_into(&mut buf)
            .map_err(|e| format!("at byte {}: {e}", reader.buffer_position()))?;
        match ev {
            Event::Start(e) if e.name().0 == b"testsuite" => suites.push(attr(&e, "name").unwrap_or_default()),
            Event::Empty(e) if e.name().0 == b"testsuite" => {}
            Event::Start(e) if e.name().0 == b"testcase" => current = Some(case(&e, &suites)),
            Event::Empty(e) if e.name().0 == b"testcase" => out.push(case(&e, &suites)),
            Event::Start(e) | Event::Empty(e) => {
                if let Some(c) = current.as_mut() {
                    match e.name().0 {
                        b"failure" => c.outcome = TestOutcome::Failed,
                        b"error" => c.outcome = TestOutcome::Error,
                        b"skipped" => c.outcome = TestOutcome::Skipped,
                        _ => {}
                    }
                }
            }
            Event::End(e) if e.name().0 == b"testcase" => out.extend(current.take()),
            Event::End(e) if e.name().0 == b"testsuite" => {
                suites.pop();
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(out)
}

fn case(e: &BytesStart, suites: &[String]) -> TestCase {
    let class = attr(e, "classname");
    let secs: f64 = attr(e, "time").and_then(|t| t.parse().ok()).unwrap_or(0.0);
    TestCase {
        suite: class.or_else(|| suites.last().cloned()).unwrap_or_default(),
        name: attr(e, "name").unwrap_or_default(),
        outcome: TestOutcome::Passed,
        duration_ms: (secs.max(0.0) * 1000.0).min(1e15) as u64,
    }
}

pub fn counts(cases: &[TestCase]) -> TestCounts {
    let mut c = TestCounts {
        tests: cases.len() as u64,
        ..Default::default()
    };
    for t in cases {
        match t.outcome {
            TestOutcome::Failed => c.failures += 1,
            TestOutcome::Error => c.errors += 1,
            TestOutcome::Skipped => c.skipped += 1,
            TestOutcome::Passed => {}
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_typical_report() {
        let xml = br#"<?xml version="1.0"?>
<testsuites><testsuite name="calc" tests="4">
  <testcase classname="calc.add" name="adds" time="0.25"/>
  <testcase name="subtracts"><failure message="1 != 2">trace</failure></testcase>
  <testcase name="divides"><error/></testcase>
  <testcase name="later"><skipped/></testcase>
</testsuite></testsuites>"#;
        let cases = parse(xml).unwrap();
        assert_eq!(cases.len(), 4);
        assert_eq!(cases[0].suite, "calc.add");
        assert_eq!(cases[0].duration_ms, 250);
        assert_eq!(cases[1].suite, "calc");
        let c = counts(&cases);
        assert_eq!((c.tests, c.failures, c.errors, c.skipped), (4, 1, 1, 1));
        assert!(parse(b"<testsuite><testcase></testsuite>").is_err());
    }
}
