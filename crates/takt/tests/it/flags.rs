//! Feature flags served over OFREP, for real: the OpenFeature server SDK and its OFREP
//! provider (npm, run by Node) evaluate a project's `flags:` through takt: each type, targeting,
//! a percentage split, an environment's own state, a change on the default branch seen by the
//! client, an unknown flag, a bad token; and changes at run time (`takt flag set|kill`), which
//! win over the file until the file changes that flag, kept across a restart.

use crate::common;
use common::server::*;
use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::io::BufRead;

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
    assert_eq!(
        shown["environments"]["production"]["setting"]["state"], "DISABLED",
        "{shown}"
    );
    assert_eq!(shown["environments"]["production"]["source"], "file", "{shown}");
    assert!(
        shown["file"]["targeting"]["if"].is_array(),
        "the $ref is replaced: {shown}"
    );
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

/// An OFREP evaluation over plain HTTP (one keep-alive client): its body.
async fn ofrep(http: &reqwest::Client, s: &Server, token: &str, key: &str, ctx: Value) -> Value {
    let r = http
        .post(format!("{}/ofrep/v1/evaluate/flags/{key}", s.base))
        .bearer_auth(token)
        .json(&json!({"context": ctx}))
        .send()
        .await
        .unwrap();
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flag_changes_at_run_time_win_until_the_file_changes_that_flag() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &[]);
    let admin = s.printed_token.clone().unwrap();
    let repo = Repo::new(&[("takt.yml", YML)]);
    add_project(&s, &admin, "web", repo.path()).await;
    let staging = flags_token(&s, &admin, "staging").await;
    let production = flags_token(&s, &admin, "production").await;
    let deployer = new_token(&s, &admin, takt_server::auth::Scope::Deploy).await;
    let reader = new_token(&s, &admin, takt_server::auth::Scope::Read).await;
    let x = json!({"targetingKey": "x", "email": "x@elsewhere.org"});
    let http = client_http();

    // The kill switch: disabled at once, clients use their code default (the real SDK).
    let (code, out, err) = cli(&s, &deployer, &["flag", "kill", "web", "greeting", "--env", "staging"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("ENABLED, default hello -> DISABLED, default hello"),
        "{out}"
    );
    let got = client(&s, &staging, &json!([["string", "greeting", "code default", x]]));
    assert_eq!(got[0]["value"], "code default", "{}", got[0]);
    assert_eq!(
        ofrep(&http, &s, &staging, "greeting", x.clone()).await["reason"],
        "DISABLED"
    );
    // Only there: production still answers from the file.
    assert_eq!(
        ofrep(&http, &s, &production, "greeting", x.clone()).await["value"],
        "Hello"
    );
    // Killing it again changes nothing and records nothing.
    let (code, out, _) = cli(&s, &deployer, &["flag", "kill", "web", "greeting", "--env", "staging"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("is already so"), "{out}");

    // One variant for everyone.
    let (code, _, err) = cli(
        &s,
        &deployer,
        &["flag", "set", "web", "greeting", "--env", "staging", "--variant", "hi"],
    );
    assert_eq!(code, Some(0), "{err}");
    let b = ofrep(&http, &s, &staging, "greeting", x.clone()).await;
    assert_eq!((&b["value"], &b["reason"]), (&json!("Hi"), &json!("STATIC")), "{b}");

    // A rollout replaces a rule of the flag's own only when told to.
    let rollout = "flag set web new-checkout --env staging --rollout 25";
    let (code, _, err) = cli(&s, &deployer, &rollout.split(' ').collect::<Vec<_>>());
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--replace-targeting"), "{err}");
    let replace = format!("{rollout} --replace-targeting");
    let (code, _, err) = cli(&s, &deployer, &replace.split(' ').collect::<Vec<_>>());
    assert_eq!(code, Some(0), "{err}");
    let mut on = 0;
    for i in 0..400 {
        let b = ofrep(
            &http,
            &s,
            &staging,
            "new-checkout",
            json!({"targetingKey": format!("user-{i}")}),
        )
        .await;
        on += usize::from(b["value"] == true);
    }
    assert!((60..=140).contains(&on), "{on} of 400 in a 25% rollout");
    // A string flag takes no rollout; an unknown variant, environment or flag is named.
    for (args, says) in [
        (vec!["greeting", "--env", "staging", "--rollout", "10"], "a string flag"),
        (
            vec!["greeting", "--env", "staging", "--variant", "yo"],
            "no variant `yo` (its variants: hello, hi)",
        ),
        (
            vec!["greeting", "--env", "qa", "--variant", "hi"],
            "no environment `qa` (its environments: staging, production)",
        ),
        (vec!["nope", "--env", "staging", "--variant", "hi"], "no flag `nope`"),
    ] {
        let mut a = vec!["flag", "set", "web"];
        a.extend(args);
        let (code, _, err) = cli(&s, &deployer, &a);
        assert_eq!(code, Some(2), "{a:?}: {err}");
        assert!(err.contains(says), "{a:?}: {err}");
    }
    // Changing flags needs the deploy scope.
    let (code, _, err) = cli(&s, &reader, &["flag", "kill", "web", "greeting", "--env", "production"]);
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("403") || err.contains("does not allow"), "{err}");

    // Bad asks over the API: 400 saying why, nothing recorded.
    let path = "/api/v1/environments/web/staging/flags/greeting";
    for (body, says) in [
        (json!({"variant": "hi", "state": "ENABLED"}), "exactly one of"),
        (json!({}), "exactly one of"),
        (json!({"rollout": 300}), "rollout"),
        (json!({"state": "OFF"}), "state"),
        (json!({"variant": "hi", "colour": "red"}), "colour"),
    ] {
        let (st, b) = post_json(&s, path, &deployer, body.clone()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {b}");
        assert!(b["error"].as_str().is_some_and(|e| e.contains(says)), "{body}: {b}");
    }
    let r = http
        .get(format!("{}/api/v1/projects/web/flags/history?colour=red", s.base))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let b: Value = r.json().await.unwrap();
    assert!(b["error"].as_str().is_some_and(|e| e.contains("colour")), "{b}");

    // `takt flag show` says which is in force, and who set it.
    let (code, out, err) = cli(&s, &reader, &["flag", "show", "web", "greeting"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.lines()
            .any(|l| l.contains("in staging: ENABLED, default hi") && l.contains("set by deploy-bot")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("in production: ENABLED, default hello") && l.contains("(file,")),
        "{out}"
    );

    // The file changes `greeting` (not `new-checkout`): the file wins back for greeting only.
    repo.commit(
        &[(
            "takt.yml",
            &YML.replace("{hello: Hello, hi: Hi}", "{hello: Hello, hi: Hi, hey: Hey}"),
        )],
        "one more greeting",
    );
    let (st, b) = post_json(&s, "/api/v1/projects/web/trigger", &admin, json!({})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    assert_eq!(
        ofrep(&http, &s, &staging, "greeting", x.clone()).await["value"],
        "Hello"
    );
    let b = ofrep(&http, &s, &staging, "new-checkout", json!({"targetingKey": "user-1"})).await;
    assert_eq!(b["reason"], "TARGETING_MATCH", "the rollout stays: {b}");

    // The history: each change, from the file (with its commit) and at run time (by whom).
    let (code, out, err) = cli(
        &s,
        &reader,
        &["flag", "history", "web", "greeting", "--env", "staging", "--json"],
    );
    assert_eq!(code, Some(0), "{err}");
    let h: Value = serde_json::from_str(&out).unwrap();
    let seen: Vec<(String, String)> = h["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let after = &c["after"];
            (
                c["source"].as_str().unwrap().to_string(),
                format!(
                    "{} {}",
                    after["state"].as_str().unwrap(),
                    after["defaultVariant"].as_str().unwrap()
                ),
            )
        })
        .collect();
    let want = [
        ("file", "ENABLED hello"),
        ("api", "DISABLED hello"),
        ("api", "ENABLED hi"),
        ("file", "ENABLED hello"),
    ];
    assert_eq!(seen, want.map(|(a, b)| (a.to_string(), b.to_string())).to_vec(), "{h}");
    let changes = h["changes"].as_array().unwrap();
    assert_eq!(changes[1]["by"], "deploy-bot");
    assert_eq!(changes[1]["before"]["state"], "ENABLED");
    assert_eq!(changes[3]["commit"].as_str().map(str::len), Some(40), "{h}");
    assert!(changes[3]["after"]["variants"]["hey"].is_string(), "{h}");
    // Nothing is stale yet (everything changed today).
    let (code, out, _) = cli(&s, &reader, &["flag", "ls", "web", "--stale"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("no stale flags"), "{out}");
    let (_, out, _) = cli(&s, &reader, &["flag", "ls", "web", "--stale", "--days", "0", "--json"]);
    let stale: Value = serde_json::from_str(&out).unwrap();
    let keys: Vec<&str> = stale["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].as_str().unwrap())
        .collect();
    // With 0 days: flags at one variant for everyone in every environment (no targeting).
    assert_eq!(keys, ["greeting", "theme"], "{stale}");

    // A web page's client (the OpenFeature web SDK): it evaluates once, then hears of a change
    // on the event stream the bulk answer offers, without polling, and re-fetches.
    let mut web = web_client(&s, &staging, "greeting");
    let mut line = String::new();
    web.1.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready Hello");
    let (code, _, err) = cli(
        &s,
        &deployer,
        &["flag", "set", "web", "greeting", "--env", "staging", "--variant", "hey"],
    );
    assert_eq!(code, Some(0), "{err}");
    line.clear();
    web.1.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "changed Hey");
    assert!(web.0.wait().unwrap().success());
    // The stream's URL carries a key the server made, not the token: no file of the data
    // directory (logs included) holds a token.
    let bulk: Value = http
        .post(format!("{}/ofrep/v1/evaluate/flags", s.base))
        .bearer_auth(&staging)
        .json(&json!({"context": x}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let uri = bulk["eventStreams"][0]["endpoint"]["requestUri"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        uri.starts_with("/ofrep/v1/events?key=") && !uri.contains(&staging),
        "{bulk}"
    );
    let forged = format!("{}0", uri.trim_end_matches(|c: char| c.is_ascii_hexdigit()));
    let r = http.get(format!("{}{forged}", s.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    for f in walk(dir.path()) {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap_or_default()).into_owned();
        assert!(!text.contains(&staging), "{} holds the token", f.display());
    }

    // A flag flipped before an incident is among its suspects, and in its postmortem.
    let (code, _, err) = cli(
        &s,
        &deployer,
        &["flag", "kill", "web", "greeting", "--env", "production"],
    );
    assert_eq!(code, Some(0), "{err}");
    let (code, out, err) = cli(
        &s,
        &deployer,
        &["incident", "open", "web", "production", "greetings gone"],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, out, err) = cli(&s, &reader, &["incident", "show", "web#1"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.lines().any(|l| l.contains(
            "flag `greeting` in web/production: ENABLED default hello → DISABLED default hello (set by deploy-bot)"
        )),
        "{out}"
    );
    let (code, out, err) = cli(&s, &reader, &["postmortem", "web#1"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("Flag changes before the impact"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains(" — flag `greeting` in web/production: ENABLED")),
        "{out}"
    );

    // A restart keeps the run-time change in force (it is in the event log).
    drop(s);
    let s = start(dir.path(), &[]);
    let b = ofrep(&http, &s, &staging, "new-checkout", json!({"targetingKey": "user-1"})).await;
    assert_eq!(b["reason"], "TARGETING_MATCH", "{b}");
    let (code, out, _) = cli(&s, &reader, &["flag", "show", "web", "new-checkout"]);
    assert_eq!(code, Some(0));
    assert!(
        out.lines()
            .any(|l| l.contains("in staging") && l.contains("set by deploy-bot")),
        "{out}"
    );
    assert!(out.contains("fractional"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flags_token_over_its_rate_gets_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &[("TAKT_OFREP_RATE_LIMIT", "1")]);
    let admin = s.printed_token.clone().unwrap();
    let repo = Repo::new(&[("takt.yml", YML)]);
    add_project(&s, &admin, "web", repo.path()).await;
    let staging = flags_token(&s, &admin, "staging").await;
    let production = flags_token(&s, &admin, "production").await;
    let http = client_http();
    let url = format!("{}/ofrep/v1/evaluate/flags/greeting", s.base);
    let started = std::time::Instant::now();
    let (mut ok, mut limited) = (0u64, 0u64);
    for _ in 0..20 {
        let r = http
            .post(&url)
            .bearer_auth(&staging)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        match r.status() {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                limited += 1;
                let wait: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
                assert!((1..=1).contains(&wait), "Retry-After {wait}");
                assert!(r.bytes().await.unwrap().is_empty());
            }
            other => panic!("{other}"),
        }
    }
    // One a second, in bursts of one: however slow the machine, at most one more per second.
    let allowed = 1 + started.elapsed().as_secs() + 1;
    assert!(
        ok >= 1 && ok <= allowed && limited == 20 - ok,
        "{ok} answered, {limited} limited"
    );
    // Per token: another is not held back.
    let r = http
        .post(&url)
        .bearer_auth(&production)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flagd_files_named_by_takt_yml_are_served_and_linted() {
    let flagd = r#"{
  "flags": {
    "dark-mode": {
      "state": "ENABLED",
      "variants": {"on": true, "off": false},
      "defaultVariant": "off",
      "targeting": {"fractional": [["on", 50], ["off", 50]]}
    }
  }
}
"#;
    let yml = "jobs:\n  a: {script: [true]}\nenvironments:\n  production: {driver: command, deploy: 'true', protected: [release]}\nflags:\n  $include: [flags/app.flagd.json]\n";
    let repo = Repo::new(&[("takt.yml", yml), ("flags/app.flagd.json", flagd)]);
    let lint = common::takt().arg("lint").arg(repo.path()).output().unwrap();
    assert!(lint.status.success(), "{}", String::from_utf8_lossy(&lint.stderr));
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &[]);
    let admin = s.printed_token.clone().unwrap();
    add_project(&s, &admin, "web", repo.path()).await;
    let token = flags_token(&s, &admin, "production").await;
    let http = client_http();
    let b = ofrep(&http, &s, &token, "dark-mode", json!({"targetingKey": "u-1"})).await;
    assert_eq!(b["reason"], "TARGETING_MATCH", "{b}");
    assert!(b["value"].is_boolean(), "{b}");
    // A protected environment's flags change only by the tokens it names, from the first
    // request after a restart on (the default branch is read before the check).
    drop(s);
    let s = start(dir.path(), &[]);
    let deployer = new_token(&s, &admin, takt_server::auth::Scope::Deploy).await;
    let (code, _, err) = cli(
        &s,
        &deployer,
        &["flag", "kill", "web", "dark-mode", "--env", "production"],
    );
    assert_ne!(code, Some(0));
    assert!(err.contains("is protected: only tokens named release"), "{err}");
    let (st, b) = post_json(
        &s,
        "/api/v1/tokens",
        &admin,
        json!({"name": "release", "scope": "deploy", "projects": ["web"], "environments": ["production"]}),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let release = b["token"].as_str().unwrap().to_string();
    let (code, _, err) = cli(
        &s,
        &release,
        &["flag", "kill", "web", "dark-mode", "--env", "production"],
    );
    assert_eq!(code, Some(0), "{err}");
    // A read token limited to another environment sees nothing of production's.
    let (st, b) = post_json(
        &s,
        "/api/v1/tokens",
        &admin,
        json!({"name": "qa-reader", "scope": "read", "projects": ["web"], "environments": ["qa"]}),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let qa = b["token"].as_str().unwrap().to_string();
    let listed = get_json(&s, "/api/v1/projects/web/flags", &qa).await;
    assert_eq!(listed["flags"][0]["environments"], json!({}), "{listed}");
    let history = get_json(&s, "/api/v1/projects/web/flags/history", &qa).await;
    assert_eq!(history["changes"], json!([]), "{history}");
    // A broken file: `takt lint` says where in it, and the server keeps the flags it had.
    repo.commit(
        &[("flags/app.flagd.json", &flagd.replace("50]]", "5.5]]"))],
        "a weight that is no whole number",
    );
    let lint = common::takt().arg("lint").arg(repo.path()).output().unwrap();
    assert_eq!(lint.status.code(), Some(2));
    let err = String::from_utf8_lossy(&lint.stderr).into_owned() + &String::from_utf8_lossy(&lint.stdout);
    assert!(
        err.contains("flags/app.flagd.json:7:56: error: weight `5.5` is not a whole number"),
        "{err}"
    );
    let (st, b) = post_json(&s, "/api/v1/projects/web/trigger", &admin, json!({})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    // The broken file changed nothing: the kill switch is still in force.
    let b = ofrep(&http, &s, &token, "dark-mode", json!({"targetingKey": "u-1"})).await;
    assert_eq!(b["reason"], "DISABLED", "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_evaluates_a_synced_copy_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &[]);
    let admin = s.printed_token.clone().unwrap();
    let repo = Repo::new(&[("takt.yml", YML)]);
    add_project(&s, &admin, "web", repo.path()).await;
    let staging = flags_token(&s, &admin, "staging").await;
    let deployer = new_token(&s, &admin, takt_server::auth::Scope::Deploy).await;
    let flags = takt_flags_client::FlagsClient::connect(&s.base, &staging)
        .await
        .unwrap();
    // The same answers as OFREP gives, for many users.
    let http = client_http();
    for i in 0..100 {
        let ctx = json!({"targetingKey": format!("user-{i}"), "email": format!("u{i}@example.com"), "plan": "free"});
        for key in ["new-checkout", "greeting", "retries", "theme"] {
            let here = flags.evaluate(key, ctx.as_object().unwrap());
            let there = ofrep(&http, &s, &staging, key, ctx.clone()).await;
            assert_eq!(here.value.as_ref(), there.get("value"), "{key} for user-{i}: {there}");
            assert_eq!(json!(here.reason), there["reason"], "{key} for user-{i}");
        }
    }
    let staff = json!({"targetingKey": "ada", "email": "ada@example.com"});
    let staff = staff.as_object().unwrap();
    assert!(flags.boolean("new-checkout", staff, false));
    assert_eq!(flags.string("greeting", staff, "?"), "Hello");
    assert_eq!(flags.integer("retries", staff, 0), 2);
    assert_eq!(flags.object("theme", staff, json!({}))["bg"], "white");
    // A change reaches the copy by the event stream, with no request per evaluation.
    let mut changes = flags.changes();
    let seen = *changes.borrow_and_update();
    let (code, _, err) = cli(
        &s,
        &deployer,
        &["flag", "kill", "web", "new-checkout", "--env", "staging"],
    );
    assert_eq!(code, Some(0), "{err}");
    tokio::time::timeout(std::time::Duration::from_secs(10), changes.changed())
        .await
        .expect("the change reached the client within 10 s")
        .unwrap();
    assert!(*changes.borrow() > seen);
    assert!(!flags.boolean("new-checkout", staff, false), "killed: the code default");
    assert_eq!(
        flags.evaluate("new-checkout", staff).reason,
        takt_flags_client::Reason::Disabled
    );
    // An open event stream ends when its token is revoked.
    let (st, b) = post_json(
        &s,
        "/api/v1/tokens",
        &admin,
        json!({"name": "short-lived", "scope": "flags", "projects": ["web"], "environments": ["staging"]}),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let (id, secret) = (
        b["id"].as_str().unwrap().to_string(),
        b["token"].as_str().unwrap().to_string(),
    );
    let stream = http
        .get(format!("{}/ofrep/v1/events", s.base))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let r = http
        .delete(format!("{}/api/v1/tokens/{id}", s.base))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    tokio::time::timeout(std::time::Duration::from_secs(10), stream.bytes())
        .await
        .expect("the stream ended within 10 s of the revocation")
        .unwrap();

    // A bad token is refused at once, with the server's status.
    match takt_flags_client::FlagsClient::connect(&s.base, "takt_0000").await {
        Err(takt_flags_client::ClientError::Refused { status, .. }) => assert_eq!(status, 401),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a bad token connected"),
    }
}

/// Starts the web client on `key`: the process and its stdout, line by line.
fn web_client(
    s: &Server,
    token: &str,
    key: &str,
) -> (std::process::Child, std::io::BufReader<std::process::ChildStdout>) {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut child = std::process::Command::new("node")
        .arg(here.join("tests/it/fixtures/ofrep-web-client.cjs"))
        .arg(here.join("tests/npm/node_modules"))
        .arg(&s.base)
        .arg(token)
        .arg(key)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    (child, out)
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn client_http() -> reqwest::Client {
    common::server::client()
}
