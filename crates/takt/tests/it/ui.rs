//! The web UI in a real browser: headless Chromium over WebDriver (Debian's `chromium` and
//! `chromium-driver`), against a live `takt serve` with real runs and a real environment. It
//! logs in with a token, opens every page and checks what it shows, follows a job's log
//! while the job prints, clicks re-run, halt, resume and rollback and sees their effect,
//! checks that a form without its CSRF token is refused, and saves a screenshot of each page
//! (light and dark, desktop and phone width) under `target/ui-screenshots/`.

use crate::common;
use common::server::*;
use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// chromedriver on a free port, stopped when dropped.
struct Driver {
    _child: crate::common::KillOnDrop,
    url: String,
}

fn driver() -> Driver {
    for (bin, package) in [("chromium", "chromium"), ("chromedriver", "chromium-driver")] {
        assert!(
            Command::new("which")
                .arg(bin)
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            "`{bin}` is missing: install Debian's {package} (./test.sh does)"
        );
    }
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let d = Driver {
        _child: crate::common::KillOnDrop(child),
        url: format!("http://127.0.0.1:{port}"),
    };
    eventually("chromedriver listens", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    d
}

/// A browser session; `dark` asks pages for their dark colour scheme.
async fn browser(d: &Driver, dark: bool) -> Client {
    let mut args = vec![
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
    ];
    if dark {
        args.push("--force-dark-mode");
        args.push("--blink-settings=preferredColorScheme=0");
    }
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({ "args": args, "binary": "/usr/bin/chromium" }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&d.url)
        .await
        .unwrap()
}

/// Waits (at most 30 s) until a JavaScript expression holds in the page.
async fn until_js(c: &Client, what: &str, expr: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let script = format!("return !!({expr});");
    loop {
        if c.execute(&script, vec![]).await.unwrap() == Value::Bool(true) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: `{expr}` never held; the page:\n{}",
            c.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the page's flash (what the last button did) says `what`.
async fn flash(c: &Client, what: &str) {
    let expr =
        format!("document.querySelector('.flash') && document.querySelector('.flash').textContent.includes({what:?})");
    until_js(c, &format!("the flash says `{what}`"), &expr).await;
}

/// Posts a form to `/ui/do` from the page (with the session's cookie) and answers the status.
async fn post_form(c: &Client, fields: Value) -> Value {
    let script =
        "return fetch('/ui/do', {method: 'POST', body: new URLSearchParams(arguments[0])}).then(r => r.status)";
    c.execute(script, vec![fields]).await.unwrap()
}

/// What the page's `main` says (read in one step: a live region may be redrawn meanwhile).
async fn text(c: &Client) -> String {
    let v = c
        .execute("return document.querySelector('main').innerText", vec![])
        .await
        .unwrap();
    v.as_str().unwrap_or_default().to_string()
}

/// Clicks the button of the form that posts `api_suffix`, filling `reason` if it asks one
/// (in one step in the page: a live region may be redrawn between two WebDriver calls).
async fn click(c: &Client, api_suffix: &str, reason: Option<&str>) {
    let script = "const [suffix, reason] = arguments; \
        const f = [...document.querySelectorAll('form.act')].find(f => f.querySelector(\"input[name='_api']\").value.endsWith(suffix)); \
        if (!f) return false; \
        if (reason !== null) f.querySelector(\"input[name='reason']\").value = reason; \
        f.querySelector('button').click(); return true;";
    let clicked = c.execute(script, vec![json!(api_suffix), json!(reason)]).await.unwrap();
    assert_eq!(
        clicked,
        Value::Bool(true),
        "no button for {api_suffix}: {}",
        text(c).await
    );
}

fn shots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target")));
    let dir = target.join("ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn login(c: &Client, s: &Server, token: &str) {
    c.goto(&format!("{}/projects/shop", s.base)).await.unwrap();
    // Without a session, a page sends the browser to the login form, and back after it.
    assert!(c.current_url().await.unwrap().path().starts_with("/login"));
    c.find(Locator::Css("input#token"))
        .await
        .unwrap()
        .send_keys(token)
        .await
        .unwrap();
    c.find(Locator::Css("form[action='/login'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until_js(
        c,
        "logged in, back on the project",
        "location.pathname === '/projects/shop'",
    )
    .await;
}

const APP: &str = include_str!("../../../../examples/deploy/app.py");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_in_a_real_browser() {
    let d = driver();
    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("release");
    let port = free_port();
    let yml = format!(
        "stages: [build, test]\n\
         jobs:\n\
         \x20 package:\n    stage: build\n    script:\n      - cp app.py app\n      - echo \"# run $TAKT_RUN_NUMBER\" >> app\n    artifacts: {{name: app, paths: [app]}}\n\
         \x20 slow:\n    stage: test\n    script:\n      - printf '\\033[31mred alert\\033[0m\\n'\n      - echo waiting for the release file\n\
         \x20     - for i in $(seq 600); do test -e {release:?} && break; sleep 0.1; done\n      - test -e {release:?}\n      - echo released\n\
         environments:\n  staging:\n    driver: process\n    port: {port}\n    start: exec python3 \"$TAKT_ARTIFACT_PATH\"\n    auto: true\n\
         \x20   smoke:\n      - http: {{path: /healthz, status: 200}}\n",
    );
    let repo = Repo::new(&[("takt.yml", &yml), ("app.py", APP)]);
    let s = start(&dir.path().join("data"), &[]);
    let admin = s.printed_token.clone().unwrap();
    add_project(&s, &admin, "shop", repo.path()).await;
    let flags = new_token(&s, &admin, takt_server::auth::Scope::Flags).await;
    post_json(&s, "/api/v1/projects/shop/trigger", &admin, json!({})).await;

    let c = browser(&d, false).await;
    // A flags token (for SDKs) cannot open a session.
    c.goto(&format!("{}/login", s.base)).await.unwrap();
    c.find(Locator::Css("input#token"))
        .await
        .unwrap()
        .send_keys(&flags)
        .await
        .unwrap();
    c.find(Locator::Css("form[action='/login'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until_js(
        &c,
        "a flags token is refused",
        "document.querySelector('.error') !== null",
    )
    .await;
    assert!(text(&c).await.contains("cannot open a session"), "{}", text(&c).await);
    login(&c, &s, &admin).await;
    assert!(
        text(&c).await.contains("#1"),
        "the runs page lists run #1: {}",
        text(&c).await
    );

    // The run page: the pipeline graph, and the running job's log followed live.
    c.goto(&format!("{}/projects/shop/runs/1", s.base)).await.unwrap();
    until_js(
        &c,
        "the graph shows both jobs",
        "document.querySelectorAll('svg.pipeline rect.node').length === 2",
    )
    .await;
    until_js(
        &c,
        "the log of `slow` shows its first lines",
        "document.querySelector('#job-slow pre').textContent.includes('waiting for the release file')",
    )
    .await;
    until_js(
        &c,
        "ANSI colours become spans",
        "document.querySelector('#job-slow pre span.ansi-r') !== null",
    )
    .await;
    assert!(
        c.execute(
            "return document.querySelector('#job-slow').dataset.complete === undefined",
            vec![]
        )
        .await
        .unwrap()
            == Value::Bool(true)
    );
    std::fs::write(&release, "").unwrap();
    until_js(
        &c,
        "the next line arrives without a reload",
        "document.querySelector('#job-slow pre').textContent.includes('released')",
    )
    .await;
    until_js(
        &c,
        "the log ends with the job",
        "document.querySelector('#job-slow').dataset.complete === 'true'",
    )
    .await;
    // Line numbers are links.
    let href = c
        .find(Locator::Css("#job-slow pre a.ln"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(href, "#Lslow-1");
    // The status region follows the run to its end (live, from the event log).
    until_js(
        &c,
        "the run's status turns success",
        "document.querySelector('#summary .status .st').textContent === 'success'",
    )
    .await;
    until_js(
        &c,
        "the critical path is drawn",
        "document.querySelectorAll('svg.pipeline rect.node.crit').length >= 1",
    )
    .await;

    // Re-run: a new run of the same commit.
    click(&c, "/runs/shop/1/retry", None).await;
    flash(&c, "queued run #2").await;
    let runs = finished_runs(&s, &admin, "shop", 2).await;
    assert_eq!(runs.len(), 2);

    // A form without its CSRF token is refused, even with the session's cookie.
    let retry = "/api/v1/runs/shop/1/retry";
    let status = post_form(&c, json!({"_api": retry, "_back": "/"})).await;
    assert_eq!(status, json!(403));
    let wrong = post_form(&c, json!({"_csrf": "x".repeat(64), "_api": retry, "_back": "/"})).await;
    assert_eq!(wrong, json!(403));
    assert_eq!(
        finished_runs(&s, &admin, "shop", 2).await.len(),
        2,
        "no run was queued by the refused forms"
    );

    // Environments: two deployments (one per run) make a rollback possible.
    settled(&s, &admin, "shop", "staging", 2).await;
    c.goto(&format!("{}/environments", s.base)).await.unwrap();
    let page = text(&c).await;
    assert!(page.contains("shop / staging") && page.contains("healthy"), "{page}");
    click(
        &c,
        "/environments/shop/staging/halt",
        Some("pulled the cord from the UI"),
    )
    .await;
    until_js(
        &c,
        "halted",
        "document.querySelector('#environments').textContent.includes('halted')",
    )
    .await;
    let env = get_json(&s, "/api/v1/environments/shop/staging", &admin).await;
    assert_eq!(env["halted"]["reason"], "pulled the cord from the UI");
    click(&c, "/environments/shop/staging/resume", None).await;
    until_js(
        &c,
        "resumed",
        "!document.querySelector('#environments').textContent.includes('halted')",
    )
    .await;
    click(&c, "/environments/shop/staging/rollback", None).await;
    flash(&c, "deployment #3").await;
    let env = settled(&s, &admin, "shop", "staging", 3).await;
    assert!(env["running"]["version"].as_str().unwrap().starts_with("1-"), "{env}");
    until_js(
        &c,
        "the page shows the rollback (live)",
        "document.querySelector('#environments').textContent.includes('Last deployment #3')",
    )
    .await;

    // Every page, with what it must show.
    let stored = get_json(&s, "/api/v1/artifacts?project=shop&run=1", &admin).await;
    let artifact = format!("/artifacts/app/{}", stored["artifacts"][0]["version"].as_str().unwrap());
    let pages: [(&str, &str, &str); 10] = [
        ("projects", "/", "shop"),
        ("runs", "/projects/shop", "#2"),
        ("run", "/projects/shop/runs/1", "Critical path"),
        ("artifacts", "/artifacts", "app@"),
        ("artifact", artifact.as_str(), "valid"),
        ("environments", "/environments", "shop / staging"),
        ("flow", "/flow", "Deployment frequency"),
        ("incidents", "/incidents", "No incidents"),
        ("flags", "/flags", "Flags"),
        ("status", "/status", "All systems operational"),
    ];
    let shots = shots_dir();
    for (name, path, want) in pages {
        c.goto(&format!("{}{path}", s.base)).await.unwrap();
        let t = text(&c).await;
        assert!(t.contains(want), "{path} shows `{want}`: {t}");
        for (size, w, h) in [("desktop", 1280, 900), ("phone", 390, 844)] {
            c.set_window_size(w, h).await.unwrap();
            std::fs::write(
                shots.join(format!("{name}-light-{size}.png")),
                c.screenshot().await.unwrap(),
            )
            .unwrap();
        }
        c.set_window_size(1280, 900).await.unwrap();
    }
    // A project that does not exist is not an empty page.
    c.goto(&format!("{}/projects/nope", s.base)).await.unwrap();
    let t = text(&c).await;
    assert!(t.contains("no project named `nope`"), "{t}");
    // Each DORA key's tile has its week-by-week chart (eight weeks of bars).
    c.goto(&format!("{}/flow", s.base)).await.unwrap();
    let charts = c
        .execute(
            "return [...document.querySelectorAll('svg.trendchart')].map(s => s.querySelectorAll('rect').length)",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(charts, json!([8, 8, 8, 8, 8]));
    // Logged out, a page needs a session again.
    c.goto(&format!("{}/", s.base)).await.unwrap();
    c.find(Locator::Css("form.who button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until_js(&c, "logged out", "location.pathname === '/login'").await;
    c.goto(&format!("{}/environments", s.base)).await.unwrap();
    assert!(c.current_url().await.unwrap().path().starts_with("/login"));
    c.close().await.unwrap();

    // The same pages in the dark colour scheme.
    let dark = browser(&d, true).await;
    dark.goto(&format!("{}/login?token={admin}", s.base)).await.unwrap();
    let is_dark = dark
        .execute("return matchMedia('(prefers-color-scheme: dark)').matches", vec![])
        .await
        .unwrap();
    assert_eq!(is_dark, Value::Bool(true), "the dark session asks for the dark scheme");
    for (name, path, _) in pages {
        dark.goto(&format!("{}{path}", s.base)).await.unwrap();
        for (size, w, h) in [("desktop", 1280, 900), ("phone", 390, 844)] {
            dark.set_window_size(w, h).await.unwrap();
            std::fs::write(
                shots.join(format!("{name}-dark-{size}.png")),
                dark.screenshot().await.unwrap(),
            )
            .unwrap();
        }
        dark.set_window_size(1280, 900).await.unwrap();
    }
    dark.close().await.unwrap();
}

/// The test page of the OpenFeature web SDK: its modules from npm (`crates/takt/tests/npm`; the
/// web provider keeps its own `ofrep-core` 2.x in its `node_modules`),
/// found through an import map; the query names takt's address, a flags token and the flag.
const OFREP_PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8">
<script type="importmap">{"imports": {
  "@openfeature/web-sdk": "/m/@openfeature/web-sdk/dist/esm/index.js",
  "@openfeature/core": "/m/@openfeature/core/dist/esm/index.js",
  "@openfeature/ofrep-web-provider": "/m/@openfeature/ofrep-web-provider/index.esm.js",
  "@openfeature/ofrep-core": "/m/@openfeature/ofrep-web-provider/node_modules/@openfeature/ofrep-core/index.esm.js"}}</script>
</head><body><p id="value">loading</p><p id="error"></p>
<script>
const report = (m) => { document.getElementById('error').textContent += m + ' '; };
addEventListener('error', (e) => report('error: ' + e.message));
addEventListener('unhandledrejection', (e) => report('rejected: ' + e.reason));
</script>
<script type="module">
import { OpenFeature, ProviderEvents } from '@openfeature/web-sdk';
import { OFREPWebProvider } from '@openfeature/ofrep-web-provider';
const q = new URLSearchParams(location.search);
window.changes = 0;
await OpenFeature.setContext({ targetingKey: 'browser-user' });
await OpenFeature.setProviderAndWait(new OFREPWebProvider({
  baseUrl: q.get('base'),
  headers: [['Authorization', 'Bearer ' + q.get('token')]],
  pollInterval: 0,
  changeDetection: 'sse',
  cacheMode: 'disabled',
}));
const client = OpenFeature.getClient();
const show = () => { document.getElementById('value').textContent = client.getStringValue(q.get('flag'), 'code default'); };
show();
client.addHandler(ProviderEvents.ConfigurationChanged, () => { window.changes += 1; show(); });
</script></body></html>"#;

/// Serves the test page and the npm modules it imports, on 127.0.0.1: its address.
async fn ofrep_page_server() -> String {
    use axum::extract::Path as AxPath;
    use axum::http::header;
    use axum::response::IntoResponse;
    let modules = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/npm/node_modules"));
    assert!(
        modules.join("@openfeature/web-sdk").is_dir(),
        "npm packages are missing: npm ci --prefix crates/takt/tests/npm (./test.sh does)"
    );
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { axum::response::Html(OFREP_PAGE) }))
        .route(
            "/m/{*path}",
            axum::routing::get(move |AxPath(path): AxPath<String>| {
                let modules = modules.clone();
                async move {
                    if path.split('/').any(|p| p == "..") || !path.ends_with(".js") {
                        return axum::http::StatusCode::NOT_FOUND.into_response();
                    }
                    match tokio::fs::read(modules.join(&path)).await {
                        Ok(b) => ([(header::CONTENT_TYPE, "text/javascript")], b).into_response(),
                        Err(_) => axum::http::StatusCode::NOT_FOUND.into_response(),
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openfeature_web_sdk_in_the_browser_hears_a_flag_change() {
    let d = driver();
    let page = ofrep_page_server().await;
    let dir = tempfile::tempdir().unwrap();
    let yml = "jobs:\n  a: {script: [true]}\nenvironments:\n  production: {driver: command, deploy: 'true'}\n\
               flags:\n  banner:\n    state: ENABLED\n    variants: {old: Old banner, new: New banner}\n    defaultVariant: old\n";
    let repo = Repo::new(&[("takt.yml", yml)]);
    // The test page is another origin: takt answers its OFREP requests (CORS).
    let s = start(&dir.path().join("data"), &[("TAKT_CORS_ORIGINS", page.as_str())]);
    let admin = s.printed_token.clone().unwrap();
    add_project(&s, &admin, "shop", repo.path()).await;
    until("the project's flags are read", || async {
        get_json(&s, "/api/v1/projects/shop/flags", &admin).await["flags"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
    })
    .await;
    let (st, b) = post_json(
        &s,
        "/api/v1/tokens",
        &admin,
        json!({"name": "web-app", "scope": "flags", "projects": ["shop"], "environments": ["production"]}),
    )
    .await;
    assert_eq!(st, reqwest::StatusCode::CREATED, "{b}");
    let flags = b["token"].as_str().unwrap().to_string();

    let c = browser(&d, false).await;
    // Tokens, addresses and the key need no escaping in a query.
    c.goto(&format!("{page}/?base={}&token={flags}&flag=banner", s.base))
        .await
        .unwrap();
    until_js(
        &c,
        "the SDK evaluated the flag",
        "document.getElementById('value').textContent === 'Old banner'",
    )
    .await;
    let (code, _, err) = cli(
        &s,
        &admin,
        &[
            "flag",
            "set",
            "shop",
            "banner",
            "--env",
            "production",
            "--variant",
            "new",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    // No polling (pollInterval 0): the change comes down the OFREP event stream.
    until_js(
        &c,
        "the change reached the page",
        "document.getElementById('value').textContent === 'New banner'",
    )
    .await;
    let changes = c.execute("return window.changes", vec![]).await.unwrap();
    assert_eq!(changes, json!(1));
    c.close().await.unwrap();
}
