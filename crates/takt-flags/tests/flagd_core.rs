//! Same inputs, same variant as flagd: every custom operator (`fractional` with an implicit and
//! an explicit bucketing key, `sem_ver` with each of its operators, `starts_with`, `ends_with`)
//! evaluated on 10,000 generated contexts here and by flagd's own evaluator
//! (`@openfeature/flagd-core` 4.0.1, pinned in crates/takt/tests/npm, installed by test.sh),
//! run by Node in the test.

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

use serde_json::{Map, Value, json};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const CONTEXTS: usize = 10_000;

/// A small deterministic generator (xorshift64*): the same contexts on every run.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, of: &[&'a str]) -> &'a str {
        of[self.below(of.len() as u64) as usize]
    }
    /// ASCII keys: flagd's Go evaluator hashes UTF-8 bytes and flagd-core in Node UTF-16 code
    /// units; they agree on ASCII (docs/flags.md).
    fn key(&mut self) -> String {
        const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@._-";
        let len = 1 + self.below(24) as usize;
        (0..len)
            .map(|_| CHARS[self.below(CHARS.len() as u64) as usize] as char)
            .collect()
    }
    fn version(&mut self) -> Value {
        let (a, b, c) = (self.below(4), self.below(13), self.below(21));
        match self.below(12) {
            0 => json!(format!("v{a}.{b}.{c}")),
            1 => json!(format!("{a}.{b}")),
            2 => json!(format!("{a}")),
            3 => json!(format!("{a}.{b}.{c}-beta.{}", self.below(3))),
            4 => json!(format!("{a}.{b}.{c}+build.{}", self.below(3))),
            5 => json!(self.pick(&["x.y", "1.2.3.4", "", "version-1", "1.2.x"])),
            6 => json!(a),
            _ => json!(format!("{a}.{b}.{c}")),
        }
    }
    fn context(&mut self) -> Map<String, Value> {
        let mut m = Map::new();
        if self.below(10) != 0 {
            m.insert("targetingKey".into(), json!(self.key()));
        }
        let who = self.pick(&["adm", "admin", "user", "a", "", "root", "Adm"]);
        let domain = self.pick(&[
            "example.com",
            "corp.example.com",
            "test.org",
            "example.com.evil",
            "adm.io",
        ]);
        m.insert("email".into(), json!(format!("{who}{}@{domain}", self.below(100))));
        m.insert("version".into(), self.version());
        m
    }
}

fn doc() -> Value {
    let on_off = json!({"on": "on", "off": "off"});
    let mut flags = Map::new();
    flags.insert(
        "fractional-implicit".into(),
        json!({"state": "ENABLED", "variants": {"a": "a", "b": "b", "c": "c", "d": "d"}, "defaultVariant": "d",
            "targeting": {"fractional": [["a", 25], ["b", 25], ["c", 40], ["d", 10]]}}),
    );
    flags.insert(
        "fractional-explicit".into(),
        json!({"state": "ENABLED", "variants": {"a": "a", "b": "b", "c": "c"}, "defaultVariant": "c",
            "targeting": {"fractional": [{"cat": [{"var": "$flagd.flagKey"}, {"var": "email"}]}, ["a", 1], ["b", 3], ["c"]]}}),
    );
    for (name, op) in [
        ("eq", "="),
        ("ne", "!="),
        ("lt", "<"),
        ("le", "<="),
        ("gt", ">"),
        ("ge", ">="),
        ("caret", "^"),
        ("tilde", "~"),
    ] {
        flags.insert(
            format!("sem-ver-{name}"),
            json!({"state": "ENABLED", "variants": on_off, "defaultVariant": "off",
                "targeting": {"if": [{"sem_ver": [{"var": "version"}, op, "1.5.3"]}, "on", "off"]}}),
        );
    }
    flags.insert(
        "starts-with".into(),
        json!({"state": "ENABLED", "variants": on_off, "defaultVariant": "off",
            "targeting": {"if": [{"starts_with": [{"var": "email"}, "adm"]}, "on", "off"]}}),
    );
    flags.insert(
        "ends-with".into(),
        json!({"state": "ENABLED", "variants": on_off, "defaultVariant": "off",
            "targeting": {"if": [{"ends_with": [{"var": "email"}, "example.com"]}, "on", "off"]}}),
    );
    json!({"flags": flags})
}

#[test]
fn every_operator_picks_the_variant_flagd_picks() {
    let doc = doc();
    let set = takt_flags::parse(&doc).unwrap();
    let mut g = Gen(0x5eed_f1a9_d00d_cafe);
    let keys: Vec<String> = doc["flags"].as_object().unwrap().keys().cloned().collect();
    let mut cases = Vec::new();
    for _ in 0..CONTEXTS {
        let ctx = g.context();
        for k in &keys {
            cases.push((k.clone(), ctx.clone()));
        }
    }
    let ours: Vec<Value> = cases
        .iter()
        .map(|(k, ctx)| {
            let r = set.evaluate(k, ctx, 1_700_000_000);
            let reason = serde_json::to_value(r.reason).unwrap();
            json!([r.variant, reason, r.error.map(|e| serde_json::to_value(e).unwrap())])
        })
        .collect();

    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let modules = here.join("../takt/tests/npm/node_modules");
    assert!(
        modules.join("@openfeature/flagd-core").is_dir(),
        "{} has no @openfeature/flagd-core: run ./test.sh (it runs `npm ci` there)",
        modules.display()
    );
    let mut child = Command::new("node")
        .arg(here.join("tests/fixtures/flagd-core.cjs"))
        .arg(&modules)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node runs (test.sh installs npm, which brings it)");
    let input = json!({"doc": doc, "cases": cases.iter().map(|(k, c)| json!([k, c])).collect::<Vec<_>>()});
    let mut stdin = child.stdin.take().unwrap();
    let body = serde_json::to_vec(&input).unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&body));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "flagd-core failed");
    let theirs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(theirs.len(), ours.len());

    let mut differ = Vec::new();
    let mut seen = std::collections::BTreeMap::<String, std::collections::BTreeSet<String>>::new();
    for (((k, ctx), a), b) in cases.iter().zip(&ours).zip(&theirs) {
        seen.entry(k.clone()).or_default().insert(format!("{}", a[0]));
        if a != b {
            differ.push(format!("{k} {}: takt {a}, flagd {b}", Value::Object(ctx.clone())));
        }
    }
    assert!(
        differ.is_empty(),
        "{} of {} evaluations differ from flagd's, e.g.:\n{}",
        differ.len(),
        cases.len(),
        differ.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
    // A comparison that cannot fail is no test: every flag reaches more than one variant.
    for (k, variants) in &seen {
        assert!(variants.len() > 1, "{k} always answered {variants:?}");
    }
}
