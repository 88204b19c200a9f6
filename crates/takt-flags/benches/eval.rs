//! In-process evaluation speed: a flag with a `fractional` rule, one thread, the context built
//! once outside the timing; beside flagd's own evaluator (`@openfeature/flagd-core` in Node,
//! installed by test.sh) evaluating the same flag in the same run. Target: ≥ 5 M evaluations/s.
//!
//!     cargo bench -p takt-flags --bench eval [-- N]

use serde_json::json;
use std::process::Command;
use std::time::Instant;

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let doc = json!({"flags": {"checkout": {
        "state": "ENABLED",
        "variants": {"new": true, "old": false},
        "defaultVariant": "old",
        "targeting": {"fractional": [["new", 25], ["old", 75]]}
    }}});
    let set = takt_flags::parse(&doc).expect("the flag is valid");
    let ctx = json!({"targetingKey": "user-4711", "email": "ada@example.com"});
    let ctx = ctx.as_object().expect("an object");
    let mut on = 0usize;
    let t = Instant::now();
    for _ in 0..n {
        if set.evaluate("checkout", ctx, 1_700_000_000).variant.as_deref() == Some("new") {
            on += 1;
        }
    }
    let ours = n as f64 / t.elapsed().as_secs_f64();
    println!(
        "takt-flags: {:.2} M evaluations/s ({n} evaluations, {on} `new`; target >= 5 M/s)",
        ours / 1e6
    );

    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let modules = here.join("../takt/tests/npm/node_modules");
    let script = format!(
        r#"const {{ FlagdCore }} = require({modules:?} + '/@openfeature/flagd-core');
const quiet = {{ error() {{}}, warn() {{}}, info() {{}}, debug() {{}} }};
const core = new FlagdCore(undefined, quiet);
core.setConfigurations({doc:?});
const ctx = {{ targetingKey: 'user-4711', email: 'ada@example.com' }};
const n = {n};
for (let i = 0; i < 100000; i++) core.resolveBooleanEvaluation('checkout', false, ctx, quiet);
const t = process.hrtime.bigint();
let on = 0;
for (let i = 0; i < n; i++) if (core.resolveBooleanEvaluation('checkout', false, ctx, quiet).value) on++;
const s = Number(process.hrtime.bigint() - t) / 1e9;
console.log(n / s);"#,
        modules = modules.display().to_string(),
        doc = doc.to_string(),
    );
    match Command::new("node").arg("-e").arg(&script).output() {
        Ok(o) if o.status.success() => {
            let theirs: f64 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap_or(0.0);
            println!("flagd-core (Node): {:.2} M evaluations/s", theirs / 1e6);
            println!("ratio takt / flagd-core: {:.2}x", ours / theirs);
        }
        Ok(o) => println!("flagd-core did not run: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => println!("node did not start: {e}"),
    }
}
