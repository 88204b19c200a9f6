//! Feature flags served over OFREP, for real: the OpenFeature server SDK and its OFREP
//! provider (npm, run by Node) evaluate a project's `flags:` through takt: each type, targeting,
//! a percentage split, an environment's own state, a change on the default branch seen by the
//! client, an unknown flag, a bad token.

use crate::common;
use common::server::*;
use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

const YML: &str = "jobs:
  a: {script: [true]}
environments:
  staging: {driver: command, deploy: 'true'}
  production: {driver: command, deploy: 'true'}
flags:
  $evaluators:
    staff: {ends_with: [{var: email}, '@example.com']}
  new-checkout:
    state: ENABLED
    variants: {on: true, off: false}
    defaultVariant: off
    targeting:
      if: [{$ref: staff}, 'on', {fractional: [['on', 50], ['off', 50]]}]
    environments:
      production: {state: DISABLED}
  greeting:
    state: ENABLED
    variants: {hello: Hello, hi: Hi}
    defaultVariant: hello
  retries:
    state: ENABLED
    variants: {few: 2, many: 5}
    defaultVariant: few
    targeting: {if: [{==: [{var: plan}, pro]}, many, few]}
  theme:
    state: ENABLED
    variants: {dark: {bg: black}, light: {bg: white}}
    defaultVariant: light
";

/// Runs the OpenFeature client against `s` with `token` on `asks`.
fn client(s: &Server, token: &str, asks: &Value) -> Vec<Value> {
    use std::io::Write;
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let modules = here.join("tests/npm/node_modules");
    assert!(
        modules.join("@openfeature/ofrep-provider").is_dir(),
        "no @openfeature/ofrep-provider in {}: run ./test.sh (npm ci)",
        modules.display()
    );
    let mut child = std::process::Command::new("node")
        .arg(here.join("tests/it/fixtures/ofrep-client.cjs"))
        .arg(&modules)
        .arg(&s.base)
        .arg(token)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(asks.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the OpenFeature client failed");
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn flags_token(s: &Server, admin: &str, env: &str) -> String {
    let (st, b) = post_json(
        s,
        "/api/v1/tokens",
        admin,
        json!({"name": format!("app-{env}"), "scope": "flags", "projects": ["web"], "environments": [env]}),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    b["token"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openfeature_clients_evaluate_a_projects_flags_over_ofrep() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &[("TAKT_CORS_ORIGINS", "http://app.example")]);
    let admin = s.printed_token.clone().unwrap();
    let repo = Repo::new(&[("takt.yml", YML)]);
    add_project(&s, &admin, "web", repo.path()).await;
    let staging = flags_token(&s, &admin, "staging").await;
    let production = flags_token(&s, &admin, "production").await;

    let staff = json!({"targetingKey": "ada", "email": "ada@example.com", "plan": "pro"});
    let mut asks = vec![
        json!(["boolean", "new-checkout", false, staff]),
        json!(["string", "greeting", "code default", {"targetingKey": "x"}]),
        json!(["number", "retries", 0, staff]),
        json!(["number", "retries", 0, {"targetingKey": "y", "plan": "free"}]),
        json!(["object", "theme", {}, {"targetingKey": "x"}]),
        json!(["boolean", "no-such-flag", true, {"targetingKey": "x"}]),
    ];
    // A percentage split: 200 users who are not staff, about half in.
    for i in 0..200 {
        asks.push(json!(["boolean", "new-checkout", false, {"targetingKey": format!("user-{i}"), "email": "u@elsewhere.org"}]));
    }
    let got = client(&s, &staging, &json!(asks));
    assert_eq!(got[0]["value"], true, "{}", got[0]);
    assert_eq!(got[0]["reason"], "TARGETING_MATCH");
    assert_eq!(
        (&got[1]["value"], &got[1]["reason"]),
        (&json!("Hello"), &json!("STATIC")),
        "{}",
        got[1]
    );
    assert_eq!(got[2]["value"], 5, "{}", got[2]);
    assert_eq!(got[3]["value"], 2, "{}", got[3]);
    assert_eq!(got[4]["value"], json!({"bg": "white"}), "{}", got[4]);
    assert_eq!(
        (&got[5]["value"], &got[5]["errorCode"]),
        (&json!(true), &json!("FLAG_NOT_FOUND")),
        "{}",
        got[5]
    );
    let on = got[6..].iter().filter(|d| d["value"] == true).count();
    assert!((70..=130).contains(&on), "{on} of 200 in a 50% split");
    // The same user always lands in the same bucket, as flagd would put them.
    let again = client(&s, &staging, &json!(asks[6..16].to_vec()));
    assert_eq!(again, got[6..16].to_vec());

    // Production has its own state: disabled, so clients use their code default. (OFREP leaves
    // the value out; @openfeature/ofrep-provider 0.1.3 reads that as a type mismatch, so its
    // reason is ERROR; the value is the code default either way.)
    let got = client(&s, &production, &json!([["boolean", "new-checkout", true, staff]]));
    assert_eq!(got[0]["value"], true, "{}", got[0]);
    let r = common::server::client()
        .post(format!("{}/ofrep/v1/evaluate/flags/new-checkout", s.base))
        .bearer_auth(&production)
        .json(&json!({"context": staff}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"key": "new-checkout", "reason": "DISABLED", "metadata": {}})
    );

    // A change on the default branch is what the next evaluation sees.
    repo.commit(
        &[(
            "takt.yml",
            &YML.replace(
                "{hello: Hello, hi: Hi}\n    defaultVariant: hello",
                "{hello: Hello, hi: Hi}\n    defaultVariant: hi",
            ),
        )],
        "greet shorter",
    );
    let (st, b) = post_json(&s, "/api/v1/projects/web/trigger", &admin, json!({})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    let got = client(
        &s,
        &staging,
        &json!([["string", "greeting", "code default", {"targetingKey": "x"}]]),
    );
    assert_eq!(got[0]["value"], "Hi", "{}", got[0]);

    // A bad token: the client gets its code default and an error.
    let got = client(
        &s,
        "takt_0000",
        &json!([["string", "greeting", "code default", {"targetingKey": "x"}]]),
    );
    assert_eq!(got[0]["value"], "code default", "{}", got[0]);
    assert!(!got[0]["errorCode"].is_null(), "{}", got[0]);

    // The protocol itself: bulk with an ETag, 304 when nothing changed, no body on 401.
    let c = client_http();
    let url = format!("{}/ofrep/v1/evaluate/flags", s.base);
    let r = c
        .post(&url)
        .header("x-api-key", &staging)
        .json(&json!({"context": {"targetingKey": "x"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["flags"].as_array().map(Vec::len), Some(4), "{body}");
    let r = c
        .post(&url)
        .bearer_auth(&staging)
        .header("if-none-match", &etag)
        .json(&json!({"context": {"targetingKey": "x"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let r = c
        .post(&url)
        .bearer_auth("takt_0000")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.bytes().await.unwrap().is_empty());
    let r = c
        .post(format!("{url}/greeting"))
        .bearer_auth(&staging)
        .json(&json!({"context": {"targetingKey": 7}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errorCode"], "INVALID_CONTEXT", "{body}");
    // `takt flag ls|show` (read scope) say what the file and each environment set.
    let reader = new_token(&s, &admin, takt_server::auth::Scope::Read).await;
    let (code, out, err) = cli(&s, &reader, &["flag", "ls", "web"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.lines().any(|l| l.contains("new-checkout")
            && l.contains("boolean")
            && l.contains("ENABLED")
            && l.contains("production: DISABLED")),
        "{out}"
    );
    assert!(out.lines().any(|l| l.contains("greeting") && l.contains("hi")), "{out}");
    let (code, out, _) = cli(&s, &reader, &["flag", "show", "web", "new-checkout", "--json"]);
    assert_eq!(code, Some(0));
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["environments"]["production"]["state"], "DISABLED", "{shown}");
    assert!(shown["targeting"]["if"].is_array(), "the $ref is replaced: {shown}");
    let (code, _, err) = cli(&s, &reader, &["flag", "show", "web", "nope"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("has no flag `nope` (its flags: greeting, new-checkout, retries, theme)"),
        "{err}"
    );
    // Evaluations are counted in /metrics, by flag, variant and reason; an unknown key is not a
    // label of its own.
    let m = get_text(&s, "/metrics", &admin).await;
    assert!(
        m.lines().any(|l| l.starts_with("takt_flag_evaluations_total{")
            && l.contains("project=\"web\"")
            && l.contains("environment=\"staging\"")
            && l.contains("flag=\"greeting\"")
            && l.contains("variant=\"hi\"")
            && l.contains("reason=\"STATIC\"")),
        "{m}"
    );
    assert!(m.contains("flag=\"(unknown)\""), "{m}");
    assert!(!m.contains("no-such-flag"), "{m}");
    // Browsers: the configured origin may call OFREP (its preflight answered), another may not.
    let preflight = |origin: &'static str| {
        c.request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization,content-type")
            .send()
    };
    let r = preflight("http://app.example").await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(r.headers()["access-control-allow-origin"], "http://app.example");
    let r = preflight("http://evil.example").await.unwrap();
    assert!(
        r.headers().get("access-control-allow-origin").is_none(),
        "{:?}",
        r.headers()
    );
    let r = c
        .post(&url)
        .header("origin", "http://app.example")
        .bearer_auth(&staging)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "http://app.example");
    assert!(
        r.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .to_lowercase()
            .contains("etag"),
        "{:?}",
        r.headers()
    );
    // A ci token is no flags token.
    let ci = new_token(&s, &admin, takt_server::auth::Scope::Ci).await;
    let r = c.post(&url).bearer_auth(&ci).json(&json!({})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

fn client_http() -> reqwest::Client {
    common::server::client()
}
