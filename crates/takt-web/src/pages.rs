//! The pages: each handler reads the API's typed answers and renders them. Markup only; the
//! route, the session and the API call are all a handler does besides.

mod graph;
mod render;

use crate::api::{Failure, seg};
use crate::{Authed, Web};
use axum::extract::{Path, Query};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use render::{bar, button, duration, short, state_class, time, word};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use takt_views::{CommitView, EnvView, RunView};

/// The cookie that carries what the last button did to the next page.
pub const FLASH: &str = "takt_flash";

/// The main sections, in the header's order.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Projects,
    Environments,
    Artifacts,
    Flow,
    Incidents,
    Flags,
}

const SECTIONS: [(Section, &str, &str); 6] = [
    (Section::Projects, "/", "Projects"),
    (Section::Environments, "/environments", "Environments"),
    (Section::Artifacts, "/artifacts", "Artifacts"),
    (Section::Flow, "/flow", "Flow"),
    (Section::Incidents, "/incidents", "Incidents"),
    (Section::Flags, "/flags", "Flags"),
];

/// One page being answered, as its handler takes it: its session (without one, the login
/// page), what the last button said, and where the log stood when it was drawn (its live
/// parts follow from there).
pub struct Page {
    web: Arc<Web>,
    s: Arc<crate::session::Session>,
    flash: Option<String>,
    head: i64,
}

impl axum::extract::FromRequestParts<Arc<Web>> for Page {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, web: &Arc<Web>) -> Result<Page, Response> {
        let Authed(s) = Authed::from_request_parts(parts, web).await?;
        let flash = crate::session::cookie(&parts.headers, FLASH)
            .filter(|f| !f.is_empty())
            .map(|f| {
                percent_encoding::percent_decode_str(&f)
                    .decode_utf8_lossy()
                    .into_owned()
            });
        let head = web.api.head(&s.secret).await.map_err(IntoResponse::into_response)?;
        Ok(Page {
            web: web.clone(),
            s,
            flash,
            head,
        })
    }
}

impl Page {
    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, Failure> {
        self.web.api.get(&self.s.secret, path).await
    }

    /// The whole document: header, navigation, the flash, `body`.
    fn render(&self, title: &str, section: Option<Section>, body: Markup) -> Response {
        let doc = html! {
            (DOCTYPE)
            html lang="en" {
                (head(title, true))
                body data-head=(self.head) {
                    a.skip href="#main" { "Skip to content" }
                    header.top {
                        a.brand href="/" { "takt" }
                        nav aria-label="Sections" {
                            ul {
                                @for (sec, href, name) in SECTIONS {
                                    li { a href=(href) aria-current=[(Some(sec) == section).then_some("page")] { (name) } }
                                }
                            }
                        }
                        form.who method="post" action="/logout" {
                            input type="hidden" name="_csrf" value=(self.s.csrf);
                            span { (self.s.name) " · " (self.s.scope) }
                            button type="submit" { "Log out" }
                        }
                    }
                    main #main {
                        @if let Some(f) = &self.flash {
                            p.flash role="status" { (f) }
                        }
                        (body)
                    }
                }
            }
        };
        let mut r = Html(doc.into_string()).into_response();
        if self.flash.is_some()
            && let Ok(v) = HeaderValue::from_str(&crate::session::set_cookie(FLASH, "", Some(0), self.web.secure))
        {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
        r
    }

    /// A button that posts to an API route (`api`), with the session's CSRF token.
    fn button(&self, label: &str, api: &str, body: Option<&Value>, back: &str, danger: bool) -> Markup {
        button(&self.s.csrf, label, api, body, back, danger, None)
    }
}

/// What a button did, in a sentence for the next page.
pub fn done_message(path: &str, answer: &Value) -> String {
    let action = path.rsplit('/').next().unwrap_or("done");
    let run = answer.get("run").and_then(Value::as_u64);
    let deploy = answer.get("deploy").and_then(Value::as_u64);
    match (action, run, deploy) {
        ("retry", Some(n), _) => format!("queued run #{n}"),
        ("cancel", Some(n), _) => format!("cancelled run #{n}"),
        (_, _, Some(d)) => format!("{action}: deployment #{d}"),
        _ => format!("{action}: done"),
    }
}

/// Every document's `head`; pages with live parts take the script too.
fn head(title: &str, script: bool) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · takt" }
            link rel="stylesheet" href="/ui/app.css";
            @if script { script src="/ui/app.js" defer {} }
        }
    }
}

/// A page without a session's header (errors, the login form): `body` in a narrow column.
fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, false))
            body { main #main.narrow { (body) } }
        }
    }
}

pub fn error_page(status: StatusCode, message: &str) -> Markup {
    bare(
        &status.as_u16().to_string(),
        html! {
            h1 { (status.canonical_reason().unwrap_or("Error")) }
            p.error role="alert" { (message) }
            p { a href="/" { "Projects" } " · " a href="/login" { "Log in" } }
        },
    )
}

pub fn login_page(csrf: &str, next: &str, error: Option<&str>) -> Markup {
    bare(
        "Log in",
        html! {
                    h1 { "takt" }
                    @if let Some(e) = error { p.error role="alert" { (e) } }
                    form method="post" action="/login" {
                        input type="hidden" name="_csrf" value=(csrf);
                        input type="hidden" name="next" value=(next);
                        label for="token" { "API token (scope read, ci, deploy or admin)" }
                        input #token type="password" name="token" autocomplete="current-password" required autofocus;
                        button type="submit" { "Log in" }
                    }
                    p.hint { "Make one with " code { "takt token create NAME --scope read" } "." }
        },
    )
}

type Answer = Result<Response, Failure>;

// ---- projects ----

#[derive(Deserialize)]
struct EnvList {
    environments: Vec<EnvStatus>,
}

#[derive(Deserialize)]
struct EnvStatus {
    #[serde(flatten)]
    view: EnvView,
    strategy: String,
    #[serde(default)]
    requires: Vec<String>,
    approval: Value,
    frozen_until: Option<String>,
    url: Option<String>,
    /// Recent deployments, newest first (one environment's answer only).
    #[serde(default)]
    history: Vec<takt_views::Deployment>,
}

pub async fn projects(p: Page) -> Answer {
    let projects: takt_api::ProjectList = p.get("/api/v1/projects").await?;
    let envs: EnvList = p.get("/api/v1/environments").await?;
    // Each project's last run.
    let paths: Vec<String> = projects
        .projects
        .iter()
        .map(|pr| format!("/api/v1/runs?project={}&limit=1", seg(&pr.name)))
        .collect();
    let runs: Vec<takt_api::RunList> = futures_util::future::try_join_all(paths.iter().map(|x| p.get(x))).await?;
    let last: BTreeMap<&str, &RunView> = runs
        .iter()
        .filter_map(|l| l.runs.first())
        .map(|r| (r.project.as_str(), r))
        .collect();
    let body = html! {
        h1 { "Projects" }
        @if projects.projects.is_empty() {
            p { "No projects yet: " code { "takt project add NAME REPO" } "." }
        }
        ul.cards #projects data-live {
            @for pr in &projects.projects {
                li.card {
                    h2 { a href={ "/projects/" (seg(&pr.name)) } { (pr.name) } }
                    p.muted { (pr.repo) " · " (pr.branch) }
                    @if let Some(r) = last.get(pr.name.as_str()) {
                        p {
                            span class=(state_class(r.status.name())) { (r.status.name()) }
                            " " a href={ "/projects/" (seg(&pr.name)) "/runs/" (r.run) } { "#" (r.run) }
                            " on " (r.branch.as_deref().or(r.tag.as_deref()).unwrap_or("(no branch)"))
                            @if let Some(d) = r.duration_ms { " in " (duration(d)) }
                        }
                        @if let (Some(d), Some(b)) = (r.duration_ms, r.budget_ms) { (bar(d, b, "of its budget")) }
                    } @else {
                        p.muted { "no runs yet" }
                    }
                    @let mine: Vec<&EnvStatus> = envs.environments.iter().filter(|e| e.view.project == pr.name).collect();
                    @if !mine.is_empty() {
                        dl.envs {
                            @for e in mine {
                                dt { (e.view.environment) }
                                dd { (running(&e.view)) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(p.render("Projects", Some(Section::Projects), body))
}

fn running(v: &EnvView) -> Markup {
    html! {
        @match &v.running {
            Some(a) => { code { (a.name) "@" (a.version) } }
            None => { span.muted { "nothing" } }
        }
    }
}

// ---- runs ----

#[derive(Deserialize)]
pub struct RunsFilter {
    status: Option<String>,
    before: Option<u64>,
}

const PAGE: usize = 50;

pub async fn runs(p: Page, Path(project): Path<String>, Query(f): Query<RunsFilter>) -> Answer {
    // A project that does not exist is a 404 (its list of runs would be empty).
    let _: serde_json::Value = p.get(&format!("/api/v1/projects/{}", seg(&project))).await?;
    let mut q = format!("/api/v1/runs?project={}&limit={PAGE}", seg(&project));
    if let Some(st) = f.status.as_deref().filter(|x| !x.is_empty()) {
        q.push_str(&format!("&status={}", seg(st)));
    }
    if let Some(b) = f.before {
        q.push_str(&format!("&before={b}"));
    }
    let list: takt_api::RunList = p.get(&q).await?;
    let base = format!("/projects/{}", seg(&project));
    let older = (list.runs.len() == PAGE)
        .then(|| list.runs.last().map(|r| r.run))
        .flatten();
    let body = html! {
        h1 { (project) }
        p { a href="/environments" { "Environments" } " · " a href={ "/flow?project=" (seg(&project)) } { "Flow" } " · " a href={ "/flags?project=" (seg(&project)) } { "Flags" } }
        form.filters method="get" action=(base) {
            label for="status" { "Status" }
            select #status name="status" {
                @for st in ["", "queued", "running", "success", "failed", "cancelled"] {
                    option value=(st) selected[f.status.as_deref().unwrap_or("") == st] { @if st.is_empty() { "any" } @else { (st) } }
                }
            }
            button type="submit" { "Filter" }
        }
        table.runs #runs data-live {
            caption { "Runs, newest first" }
            thead { tr { th scope="col" { "Run" } th scope="col" { "Status" } th scope="col" { "Commit" } th scope="col" { "Trigger" } th scope="col" { "Duration" } } }
            tbody {
                @for r in &list.runs {
                    tr {
                        td { a href={ (base) "/runs/" (r.run) } { "#" (r.run) } }
                        td { span class=(state_class(r.status.name())) { (r.status.name()) } }
                        td { (commit_cell(r, list.commits.get(&r.commit))) }
                        td { (word(&r.trigger)) br; (time(&r.queued_at)) }
                        td {
                            @if let Some(d) = r.duration_ms { (duration(d)) }
                            @if let (Some(d), Some(b)) = (r.duration_ms, r.budget_ms) { (bar(d, b, "of budget")) }
                        }
                    }
                }
            }
        }
        nav.pages aria-label="Pages" {
            @if f.before.is_some() { a href=(base) { "Newest" } }
            @if let Some(o) = older { " " a rel="next" href={ (base) "?before=" (o) @if let Some(st) = &f.status { "&status=" (seg(st)) } } { "Older" } }
        }
    };
    Ok(p.render(&project, Some(Section::Projects), body))
}

fn commit_cell(r: &RunView, c: Option<&CommitView>) -> Markup {
    html! {
        code { (short(&r.commit)) }
        " " (r.branch.as_deref().or(r.tag.as_deref()).unwrap_or(""))
        @if let Some(c) = c {
            br; span.subject { (c.subject) } br; span.muted { (c.author) }
        }
    }
}

// ---- one run ----

#[derive(Deserialize)]
struct RunPage {
    #[serde(flatten)]
    view: RunView,
    commit_info: Option<CommitView>,
    #[serde(default)]
    wait_ms: BTreeMap<String, u64>,
    critical_path: Option<CriticalPath>,
}

#[derive(Deserialize)]
struct CriticalPath {
    steps: Vec<PathStep>,
    shorten: String,
    efficiency: f64,
}

#[derive(Deserialize)]
struct PathStep {
    job: String,
}

pub async fn run(p: Page, Path((project, run)): Path<(String, String)>) -> Answer {
    let api = format!("/api/v1/runs/{}/{}", seg(&project), seg(&run));
    let rp: RunPage = p.get(&api).await?;
    let r = &rp.view;
    let here = format!("/projects/{}/runs/{}", seg(&project), r.run);
    let critical: Vec<&str> = rp
        .critical_path
        .iter()
        .flat_map(|c| c.steps.iter().map(|s| s.job.as_str()))
        .collect();
    let finished = r.status.is_finished();
    let failed_any = r
        .jobs
        .iter()
        .any(|j| matches!(j.status.map(|s| s.name()), Some("failed" | "cancelled")));
    let artifacts: Vec<&takt_views::run::StoredArtifact> = r.jobs.iter().flat_map(|j| &j.artifacts).collect();
    let body = html! {
        h1 { a href={ "/projects/" (seg(&project)) } { (project) } " #" (r.run) }
        section #summary data-live {
            p.status {
                span class=(state_class(r.status.name())) { (r.status.name()) }
                " " code { (short(&r.commit)) } " " (r.branch.as_deref().or(r.tag.as_deref()).unwrap_or(""))
                " · " (word(&r.trigger)) " · queued " (time(&r.queued_at))
                @if let Some(d) = r.duration_ms { " · " (duration(d)) }
            }
            @if let Some(c) = &rp.commit_info { p { span.subject { (c.subject) } " — " (c.author) } }
            @if let Some(why) = &r.reason { p.error { (why) } }
            @if let (Some(d), Some(b)) = (r.duration_ms, r.budget_ms) { (bar(d, b, "of its budget")) }
            @if let Some(c) = &rp.critical_path {
                p { "Critical path: " (critical.join(" → ")) "; shortening " strong { (c.shorten) } " shortens the run most; flow efficiency " (format!("{:.0}%", c.efficiency * 100.0)) "." }
            }
            div.buttons {
                @if !finished { (p.button("Cancel", &format!("{api}/cancel"), None, &here, true)) }
                @if finished { (p.button("Re-run", &format!("{api}/retry"), None, &here, false)) }
                @if finished && failed_any { (p.button("Re-run failed jobs", &format!("{api}/retry"), Some(&serde_json::json!({"failed": true})), &here, false)) }
            }
            figure.graph {
                (graph::pipeline(r, &critical, &here))
                figcaption { "The pipeline: stages left to right, " code { "needs" } " as lines; the critical path is drawn thick." }
            }
            table.jobs {
                caption { "Jobs" }
                thead { tr { th scope="col" { "Job" } th scope="col" { "Stage" } th scope="col" { "Status" } th scope="col" { "Work" } th scope="col" { "Wait" } th scope="col" { "Tests" } } }
                tbody {
                    @for j in &r.jobs {
                        @let st = j.status.map(|s| s.name()).unwrap_or("created");
                        tr class=[critical.contains(&j.name.as_str()).then_some("critical")] {
                            td { a href={ "#job-" (j.name) } { (j.name) } @if j.flaky == Some(true) { " " span.flaky title="passed on a retry" { "flaky" } } }
                            td { (j.stage.as_deref().unwrap_or("")) }
                            td { span class=(state_class(st)) { (st) } @if let Some(a) = j.attempt.filter(|a| *a > 1) { " (attempt " (a) ")" } }
                            td { @if let Some(d) = j.duration_ms { (duration(d)) } }
                            td { @if let Some(w) = rp.wait_ms.get(&j.name) { (duration(*w)) } }
                            td {
                                @if let Some(t) = &j.tests {
                                    (t.tests - t.failures - t.errors - t.skipped) "/" (t.tests) " passed"
                                    @for f in &j.failed_tests { br; span.error { "✗ " (f) } }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if !artifacts.is_empty() {
            section {
                h2 { "Artifacts" }
                ul { @for a in &artifacts { li { a href={ "/artifacts/" (seg(&a.name)) "/" (seg(&a.version)) } { code { (a.name) "@" (a.version) } } " " (render::bytes(a.size)) " " code.digest { (short(&a.digest)) } } } }
            }
        }
        section.logs {
            h2 { "Logs" }
            @for j in &r.jobs {
                @let st = j.status.map(|s| s.name()).unwrap_or("created");
                details.log #{ "job-" (j.name) } open[st == "failed" || st == "running"] data-log={ "/ui/log/" (seg(&project)) "/" (r.run) "/" (seg(&j.name)) } data-job=(j.name) {
                    summary { (j.name) " " span class=(state_class(st)) { (st) } }
                    div.logbar {
                        label { "Search " input type="search" class="logsearch" aria-label={ "Search the log of " (j.name) }; }
                        a href={ "/ui/log/" (seg(&project)) "/" (r.run) "/" (seg(&j.name)) } { "raw" }
                    }
                    pre.logtext aria-live="polite" {}
                }
            }
        }
    };
    Ok(p.render(&format!("{project} #{}", r.run), Some(Section::Projects), body))
}

// ---- artifacts ----

#[derive(Deserialize)]
pub struct ArtifactFilter {
    project: Option<String>,
    name: Option<String>,
}

pub async fn artifacts(p: Page, Query(f): Query<ArtifactFilter>) -> Answer {
    let mut q = "/api/v1/artifacts?limit=1000".to_string();
    if let Some(x) = f.project.as_deref().filter(|x| !x.is_empty()) {
        q.push_str(&format!("&project={}", seg(x)));
    }
    if let Some(x) = f.name.as_deref().filter(|x| !x.is_empty()) {
        q.push_str(&format!("&name={}", seg(x)));
    }
    let list: takt_api::ArtifactList = p.get(&q).await?;
    let keys: takt_api::Keys = p.get("/api/v1/keys").await?;
    let envs: EnvList = p.get("/api/v1/environments").await?;
    let body = html! {
        h1 { "Artifacts" }
        p.muted { "Every artifact is stored once by digest and signed (ed25519, keys at " a href="/api/v1/keys" { "/api/v1/keys" } ", " (keys.keys.len()) " published); "
            code { "takt artifact verify NAME@VERSION" } " checks a copy. Provenance: SLSA v1 in-toto statements, shown by " code { "takt artifact show" } "." }
        table #artifacts data-live {
            caption { "Newest first" }
            thead { tr { th scope="col" { "Artifact" } th scope="col" { "Digest" } th scope="col" { "Size" } th scope="col" { "From" } th scope="col" { "Stored" } th scope="col" { "Deployed" } } }
            tbody {
                @for a in &list.artifacts {
                    tr {
                        td { a href={ "/artifacts/" (seg(&a.name)) "/" (seg(&a.version)) } { code { (a.name) "@" (a.version) } } }
                        td { code.digest title=(a.digest) { (short(&a.digest)) } }
                        td { (render::bytes(a.size)) }
                        td {
                            @match a.run {
                                Some(n) => { a href={ "/projects/" (seg(&a.project)) "/runs/" (n) } { (a.project) " #" (n) } " " (a.job) }
                                None => { "pushed" }
                            }
                        }
                        td { (render::time_str(&a.stored_at)) }
                        td {
                            @for e in envs.environments.iter().filter(|e| e.view.running.as_ref().is_some_and(|r| r.digest == a.digest)) {
                                span.deployed { (e.view.project) "/" (e.view.environment) } " "
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(p.render("Artifacts", Some(Section::Artifacts), body))
}

/// `GET /api/v1/artifacts/{name}/{version}`, as the page reads it.
#[derive(Deserialize)]
struct ArtifactPage {
    manifest: ManifestView,
    key: String,
    signature_valid: bool,
    in_toto: Value,
}

#[derive(Deserialize)]
struct ManifestView {
    name: String,
    version: String,
    digest: String,
    size: u64,
    media_type: String,
    provenance: ProvenanceView,
}

#[derive(Deserialize)]
struct ProvenanceView {
    builder: String,
    project: String,
    repository: String,
    commit: String,
    branch: Option<String>,
    run: u64,
    job: String,
    started_at: String,
    finished_at: String,
}

pub async fn artifact(p: Page, Path((name, version)): Path<(String, String)>) -> Answer {
    let a: ArtifactPage = p
        .get(&format!("/api/v1/artifacts/{}/{}", seg(&name), seg(&version)))
        .await?;
    let envs: EnvList = p.get("/api/v1/environments").await?;
    let m = &a.manifest;
    let pv = &m.provenance;
    let statement = serde_json::to_string_pretty(&a.in_toto).unwrap_or_default();
    let body = html! {
        h1 { code { (m.name) "@" (m.version) } }
        dl.facts {
            dt { "Digest" } dd { code { (m.digest) } }
            dt { "Size" } dd { (render::bytes(m.size)) " · " (m.media_type) }
            dt { "Signature" } dd {
                @if a.signature_valid { span.st-success { "valid" } " (ed25519, this server's key " code { (short(&a.key)) } ")" }
                @else { span.st-failed { "does not verify with this server's key" } }
            }
            dt { "Built by" } dd {
                @if pv.run == 0 { "pushed, without a run" } @else {
                    a href={ "/projects/" (seg(&pv.project)) "/runs/" (pv.run) } { (pv.project) " #" (pv.run) } " job " (pv.job)
                }
                " · " code { (pv.builder) }
            }
            dt { "Source" } dd { (pv.repository) " " code { (short(&pv.commit)) } @if let Some(b) = &pv.branch { " on " (b) } }
            dt { "Built" } dd { (render::time_str(&pv.started_at)) " to " (render::time_str(&pv.finished_at)) }
            dt { "Deployed" } dd {
                @for e in envs.environments.iter().filter(|e| e.view.running.as_ref().is_some_and(|r| r.digest == m.digest)) {
                    span.deployed { (e.view.project) "/" (e.view.environment) } " "
                }
            }
        }
        details { summary { "Provenance: the in-toto statement (SLSA v1)" } pre.markdown { (statement) } }
    };
    Ok(p.render(&format!("{}@{}", m.name, m.version), Some(Section::Artifacts), body))
}

// ---- environments ----

pub async fn environments(p: Page) -> Answer {
    let list: EnvList = p.get("/api/v1/environments").await?;
    // Each one's own answer, with its recent deployments and their steps.
    let paths: Vec<String> = list
        .environments
        .iter()
        .map(|e| {
            format!(
                "/api/v1/environments/{}/{}",
                seg(&e.view.project),
                seg(&e.view.environment)
            )
        })
        .collect();
    let envs = EnvList {
        environments: futures_util::future::try_join_all(paths.iter().map(|x| p.get::<EnvStatus>(x))).await?,
    };
    let here = "/environments";
    let body = html! {
        h1 { "Environments" }
        @if envs.environments.is_empty() { p { "No environments: declare them under " code { "environments:" } " in takt.yml." } }
        div.cards #environments data-live {
            @for e in &envs.environments {
                @let v = &e.view;
                @let api = format!("/api/v1/environments/{}/{}", seg(&v.project), seg(&v.environment));
                section.card.env aria-labelledby={ "env-" (v.project) "-" (v.environment) } {
                    h2 #{ "env-" (v.project) "-" (v.environment) } { (v.project) " / " (v.environment) }
                    p {
                        (env_state(e))
                        " " (running(v))
                        @if let Some(since) = &v.since { " since " (render::time_str(since)) }
                        @if let Some(u) = &e.url { " · " a href=(u) { (u) } }
                    }
                    p.muted { (e.strategy) @if !e.requires.is_empty() { " · after " (e.requires.join(", ")) } }
                    @if let Some(d) = &v.deploying {
                        div.deploying {
                            p { "Deploying " code { (d.artifact.name) "@" (d.artifact.version) } " (#" (d.deploy) ", " (word(&d.strategy)) @if d.rollback { ", a rollback" } "): step " (d.step) ", " (word(&d.action)) }
                            meter.weight min="0" max="100" value=(d.weight) aria-label="traffic to the new version" { (d.weight) "%" }
                            span { (d.weight) "% of traffic to the new version" }
                            @if let Some(verdict) = &d.verdict { p { "Analysis: " (word(verdict)) } }
                        }
                    }
                    @if let Some(last) = e.history.first() {
                        details {
                            summary { "Last deployment #" (last.deploy) ": " code { (last.artifact.name) "@" (last.artifact.version) } " " (last.outcome.as_ref().map(word).unwrap_or_else(|| "in progress".into())) }
                            @if let Some(why) = &last.reason { p { (why) } }
                            ol.steps {
                                @for st in &last.steps {
                                    li { (word(&st.action)) " " (st.weight) "% " @if let Some(vd) = &st.verdict { strong { (word(vd)) } } @if let Some(dt) = &st.detail { " — " (dt) } }
                                }
                            }
                        }
                    }
                    div.buttons {
                        @if !e.requires.is_empty() { (p.button("Promote", &format!("{api}/promote"), None, here, false)) }
                        @if !v.previous.is_empty() || v.deploying.is_some() { (p.button("Roll back", &format!("{api}/rollback"), None, here, true)) }
                        @if v.halted.is_some() {
                            (p.button("Resume", &format!("{api}/resume"), None, here, false))
                        } @else {
                            (button(&p.s.csrf, "Halt", &format!("{api}/halt"), None, here, true, Some("reason")))
                        }
                        @if v.deploying.as_ref().is_some_and(|d| d.waiting_for_approval) { (p.button("Approve", &format!("{api}/approve"), None, here, false)) }
                    }
                }
            }
        }
    };
    Ok(p.render("Environments", Some(Section::Environments), body))
}

fn env_state(e: &EnvStatus) -> Markup {
    let v = &e.view;
    let waiting = v.deploying.as_ref().is_some_and(|d| d.waiting_for_approval);
    html! {
        @if let Some(h) = &v.halted {
            span.st-failed title={ "by " (h.by) ": " (h.reason) } { "halted" }
        } @else if waiting {
            span.st-manual { "awaiting approval" }
        } @else if v.deploying.is_some() {
            span.st-running { "deploying" }
        } @else if let Some(f) = &e.frozen_until {
            span.st-manual { "frozen until " (render::time_str(f)) }
        } @else if v.running.is_none() {
            span.st-created { "empty" }
        } @else if v.healthy {
            span.st-success { "healthy" }
        } @else {
            span.st-failed { "unhealthy" }
        }
        @if e.approval.as_str().is_some_and(|a| a != "none") { " " span.muted { "(approval " (word(&e.approval)) ")" } }
    }
}

// ---- flags ----

#[derive(Deserialize)]
pub struct ProjectFilter {
    project: Option<String>,
}

pub async fn flags(p: Page, Query(f): Query<ProjectFilter>) -> Answer {
    let projects: takt_api::ProjectList = p.get("/api/v1/projects").await?;
    let names: Vec<String> = match f.project.filter(|x| !x.is_empty()) {
        Some(x) => vec![x],
        None => projects.projects.iter().map(|p| p.name.clone()).collect(),
    };
    let here = "/flags";
    let mut sections = Vec::new();
    for name in &names {
        let list: takt_api::FlagList = match p.get(&format!("/api/v1/projects/{}/flags", seg(name))).await {
            Ok(l) => l,
            Err(f) if f.status == StatusCode::NOT_FOUND || f.status == StatusCode::CONFLICT => continue,
            Err(f) => return Err(f),
        };
        let history: takt_api::FlagHistory = p.get(&format!("/api/v1/projects/{}/flags/history", seg(name))).await?;
        sections.push(html! {
            section {
                h2 { (name) " " span.muted { "at " code { (short(&list.commit)) } } }
                @if list.flags.is_empty() { p.muted { "No flags: " code { "flags:" } " in takt.yml." } }
                @for fl in &list.flags {
                    article.card.flag {
                        h3 { code { (fl.key) } " " span.muted { (fl.kind) } @if fl.stale { " " span.flaky { "stale" } } }
                        p.muted { "variants: " (fl.variants.join(", ")) }
                        table {
                            thead { tr { th scope="col" { "Environment" } th scope="col" { "State" } th scope="col" { "Default" } th scope="col" { "Rollout" } th scope="col" { "Source" } th scope="col" {} } }
                            tbody {
                                @for (env, inf) in &fl.environments {
                                    tr {
                                        td { (env) }
                                        td { (word(&inf.setting.state)) }
                                        td { (inf.setting.default_variant.as_deref().unwrap_or("—")) }
                                        td { (render::rollout(&inf.setting.targeting)) }
                                        td { (word(&inf.source)) @if let Some(b) = &inf.by { " by " (b) } " " (render::time_str(&inf.changed_at)) }
                                        td { (p.button("Kill", &format!("/api/v1/environments/{}/{}/flags/{}", seg(name), seg(env), seg(&fl.key)), Some(&serde_json::json!({"state": "DISABLED"})), here, true)) }
                                    }
                                }
                            }
                        }
                    }
                }
                @if !history.changes.is_empty() {
                    details {
                        summary { "History (" (history.changes.len()) " changes)" }
                        ol.history {
                            @for c in history.changes.iter().rev().take(50) {
                                li { (render::time_str(&c.at)) " " code { (c.flag) } " in " (c.environment) ": " (word(&c.source)) @if let Some(b) = &c.by { " by " (b) } }
                            }
                        }
                    }
                }
            }
        });
    }
    let body = html! {
        h1 { "Flags" }
        div #flags data-live { @for sct in &sections { (sct) } }
    };
    Ok(p.render("Flags", Some(Section::Flags), body))
}

// ---- incidents ----

pub async fn incidents(p: Page) -> Answer {
    let list: takt_api::IncidentList = p.get("/api/v1/incidents?all=true").await?;
    let body = html! {
        h1 { "Incidents" }
        @if list.incidents.is_empty() { p { "No incidents." } }
        table #incidents data-live {
            thead { tr { th scope="col" { "Incident" } th scope="col" { "Status" } th scope="col" { "Where" } th scope="col" { "Why" } th scope="col" { "Opened" } th scope="col" { "Cause" } } }
            tbody {
                @for i in &list.incidents {
                    @let (proj, n) = i.id.rsplit_once('#').unwrap_or((&i.project, ""));
                    tr {
                        td { a href={ "/incidents/" (seg(proj)) "/" (seg(n)) } { (i.id) } }
                        td { span class=(state_class(&word(&i.status))) { (word(&i.status)) } }
                        td { (i.environment) }
                        td { (i.reason) }
                        td { (time(&i.opened_at)) }
                        td { (i.cause.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
    };
    Ok(p.render("Incidents", Some(Section::Incidents), body))
}

pub async fn incident(p: Page, Path((project, number)): Path<(String, String)>) -> Answer {
    let api = format!("/api/v1/projects/{}/incidents/{}", seg(&project), seg(&number));
    let d: takt_api::IncidentDetail = p.get(&api).await?;
    let pm: takt_api::PostmortemDraft = p.get(&format!("{api}/postmortem")).await?;
    let i = &d.incident;
    let here = format!("/incidents/{}/{}", seg(&project), seg(&number));
    let open = word(&i.status) != "resolved";
    let body = html! {
        h1 { "Incident " (i.id) }
        section #incident data-live {
            p { span class=(state_class(&word(&i.status))) { (word(&i.status)) } " in " (i.environment) " · " (i.reason) " · opened " (time(&i.opened_at)) }
            @if let Some(c) = &i.cause { p { "Marked cause: " strong { (c) } } }
            div.buttons {
                @if open && i.acknowledged.is_none() { (p.button("Acknowledge", &format!("{api}/ack"), None, &here, false)) }
                @if open { (p.button("Resolve", &format!("{api}/resolve"), None, &here, false)) }
            }
            figure.timeline {
                (graph::incident_axis(&d))
                figcaption { "Deployments (suspects in colour), flag changes and the incident on one time axis." }
            }
            h2 { "Suspects" }
            ol {
                @for sp in &d.suspects {
                    li { strong { (sp.deployment) } " " code { (sp.artifact.name) "@" (sp.artifact.version) } " started " (time(&sp.started_at)) ", " (sp.before_impact_s) " s before the impact" @if sp.rollback { " (a rollback)" } }
                }
                @for fc in &d.flag_changes { li { "flag " (word(fc)) } }
            }
            h2 { "Timeline" }
            ol.history {
                @for e in &i.timeline { li { (time(&e.at)) " " (e.kind) @if let Some(n) = &e.note { ": " (n) } @if let Some(b) = &e.by { " — " (b) } } }
            }
        }
        section {
            h2 { "Postmortem draft" }
            details { summary { "Markdown (" code { "takt postmortem " (i.id) } ")" } pre.markdown { (pm.markdown) } }
        }
    };
    Ok(p.render(&format!("Incident {}", i.id), Some(Section::Incidents), body))
}

// ---- flow ----

pub async fn flow(p: Page, Query(f): Query<ProjectFilter>) -> Answer {
    let mut q = "/api/v1/metrics".to_string();
    if let Some(x) = f.project.as_deref().filter(|x| !x.is_empty()) {
        q.push_str(&format!("?project={}", seg(x)));
    }
    let report: takt_api::FlowReport = p.get(&q).await?;
    let flaky: takt_api::FlakyList = p.get("/api/v1/flaky").await?;
    let body = render::flow(&report, &flaky);
    Ok(p.render("Flow", Some(Section::Flow), body))
}
