//! The route table: every route once, with the permission it needs and the types it reads and
//! answers. The server builds its router from this table (so a route cannot exist without a
//! permission), and the OpenAPI document is derived from it.

use crate::auth::Permission;
use crate::types::*;
use utoipa::openapi::path::Parameter;
use utoipa::openapi::{RefOr, Schema};
use utoipa::{IntoParams, ToSchema};

/// The HTTP methods the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "UPPERCASE")]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Each operation; the server maps every one to its handler (an exhaustive match), and its
/// snake_case name is the OpenAPI `operationId`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Op {
    Healthz,
    Readyz,
    Metrics,
    Openapi,
    Events,
    Whoami,
    ListTokens,
    CreateToken,
    RevokeToken,
    ListProjects,
    AddProject,
    ShowProject,
    ProjectSettings,
    Trigger,
    ListSecrets,
    SetSecret,
    RemoveSecret,
    ListRuns,
    ShowRun,
    CancelRun,
    RetryRun,
    PlayJob,
    OfrepEvaluate,
    OfrepBulk,
    OfrepEvents,
    FlagDocument,
    ListFlags,
    ChangeFlag,
    FlagHistory,
    JobLog,
    Webhook,
    Keys,
    ListArtifacts,
    ShowArtifact,
    PushArtifact,
    PushBlob,
    Fsck,
    Gc,
    DownloadArtifact,
    ListEnvironments,
    ShowEnvironment,
    Deploy,
    Promote,
    Rollback,
    Halt,
    StartDrill,
    ListDrills,
    ShowDrill,
    Resume,
    Approve,
    StopEnvironment,
    ListIncidents,
    OpenIncident,
    ShowIncident,
    Postmortem,
    UpdateIncident,
    AckIncident,
    ResolveIncident,
    MarkCause,
    ListChecks,
    FlowMetrics,
    FlakyTests,
    ImportHistory,
    HeartbeatToken,
    Heartbeat,
    StatusPage,
    Badge,
    StatusJson,
    StatusFeed,
}

impl Op {
    pub fn name(self) -> &'static str {
        self.into()
    }
}

/// Collects a type's schema (and those it refers to) and returns a reference to it.
pub type SchemaFn = fn(&mut Vec<(String, RefOr<Schema>)>) -> RefOr<Schema>;

/// A request or response body: its media type and, for JSON, its schema.
#[derive(Clone, Copy)]
pub struct Body {
    pub media: &'static str,
    pub schema: Option<SchemaFn>,
}

fn reference<T: ToSchema>(out: &mut Vec<(String, RefOr<Schema>)>) -> RefOr<Schema> {
    let name = T::name().into_owned();
    T::schemas(out);
    out.push((name.clone(), T::schema()));
    RefOr::Ref(utoipa::openapi::Ref::from_schema_name(name))
}

impl Body {
    /// A JSON body of type `T`.
    pub const fn json<T: ToSchema>() -> Body {
        Body {
            media: "application/json",
            schema: Some(reference::<T>),
        }
    }
    /// Raw bytes of a media type (artifacts, logs, metrics, secret values).
    pub const fn raw(media: &'static str) -> Body {
        Body { media, schema: None }
    }
}

/// One route.
#[derive(Clone, Copy)]
pub struct Route {
    pub op: Op,
    pub method: Method,
    /// axum's syntax: `{name}` for a path parameter.
    pub path: &'static str,
    /// `None`: public (health, the public key, webhooks that carry their own signature).
    pub permission: Option<Permission>,
    pub summary: &'static str,
    /// The query parameters it takes.
    pub query: Option<fn() -> Vec<Parameter>>,
    pub request: Option<Body>,
    /// The success answer (errors are always [`ErrorBody`]).
    pub response: Option<Body>,
}

fn params<T: IntoParams>() -> Vec<Parameter> {
    T::into_params(|| None)
}

const fn route(
    op: Op,
    method: Method,
    path: &'static str,
    permission: Option<Permission>,
    summary: &'static str,
) -> Route {
    Route {
        op,
        method,
        path,
        permission,
        summary,
        query: None,
        request: None,
        response: None,
    }
}

impl Route {
    const fn takes(mut self, b: Body) -> Route {
        self.request = Some(b);
        self
    }
    const fn answers(mut self, b: Body) -> Route {
        self.response = Some(b);
        self
    }
    const fn query(mut self, q: fn() -> Vec<Parameter>) -> Route {
        self.query = Some(q);
        self
    }
}

use Method::{Delete, Get, Post, Put};
use Permission::{Admin, Ci, Deploy, Flags, Play, Read};

const JSON_OBJECT: Body = Body::raw("application/json");
const BYTES: Body = Body::raw("application/octet-stream");

/// Every route of the API.
pub const ROUTES: &[Route] = &[
    route(Op::Healthz, Get, "/healthz", None, "Liveness").answers(Body::json::<Health>()),
    route(
        Op::Readyz,
        Get,
        "/readyz",
        None,
        "Readiness: the event log answers; how jobs are isolated",
    )
    .answers(JSON_OBJECT),
    route(Op::Metrics, Get, "/metrics", Some(Read), "Prometheus metrics")
        .answers(Body::raw("text/plain; version=0.0.4")),
    route(Op::Openapi, Get, "/api/v1/openapi.json", Some(Read), "This document").answers(JSON_OBJECT),
    route(
        Op::OfrepEvaluate,
        Post,
        "/ofrep/v1/evaluate/flags/{key}",
        Some(Flags),
        "OFREP: evaluate one flag for a context (a flags token made for one project and environment)",
    )
    .takes(Body::json::<OfrepRequest>())
    .answers(JSON_OBJECT),
    route(
        Op::ListFlags,
        Get,
        "/api/v1/projects/{name}/flags",
        Some(Read),
        "The default branch's feature flags, and what each environment changes",
    )
    .answers(Body::json::<FlagList>()),
    route(
        Op::ChangeFlag,
        Post,
        "/api/v1/environments/{project}/{env}/flags/{key}",
        Some(Deploy),
        "Change a feature flag in one environment at run time (variant, rollout or state); it wins over the file until the file changes that flag",
    )
    .takes(Body::json::<FlagChangeRequest>())
    .answers(Body::json::<FlagChangeAnswer>()),
    route(
        Op::FlagHistory,
        Get,
        "/api/v1/projects/{name}/flags/history",
        Some(Read),
        "Every change of a project's flags (?env=, ?flag=), from the file and at run time",
    )
    .answers(Body::json::<FlagHistory>()),
    route(
        Op::OfrepBulk,
        Post,
        "/ofrep/v1/evaluate/flags",
        Some(Flags),
        "OFREP: evaluate every flag for a context; ETag and If-None-Match",
    )
    .takes(Body::json::<OfrepRequest>())
    .answers(JSON_OBJECT),
    route(
        Op::OfrepEvents,
        Get,
        "/ofrep/v1/events",
        Some(Flags),
        "OFREP event stream (SSE): `refetchEvaluation` when a flag changes; the bulk answer's `eventStreams` gives its URL with a stream key (`?key=`), since EventSource sends no headers",
    )
    .answers(Body::raw("text/event-stream")),
    route(
        Op::FlagDocument,
        Get,
        "/api/v1/flags/document",
        Some(Flags),
        "The flagd document of a flags token's project and environment, run-time changes written in, for clients that evaluate in-process (takt-flags-client); ETag and If-None-Match; /ofrep/v1/events says when it changes",
    )
    .answers(JSON_OBJECT),
    route(Op::Events, Get, "/api/v1/events", Some(Read), "A page of the event log")
        .query(params::<EventsQuery>)
        .answers(Body::json::<EventsPage>()),
    route(
        Op::Whoami,
        Get,
        "/api/v1/whoami",
        Some(Read),
        "The token this request carries: its name, scope and limits (the web UI's sessions start here)",
    )
    .answers(Body::json::<Whoami>()),
    route(Op::ListTokens, Get, "/api/v1/tokens", Some(Admin), "List live tokens").answers(Body::json::<TokenList>()),
    route(
        Op::CreateToken,
        Post,
        "/api/v1/tokens",
        Some(Admin),
        "Create a token (its secret is shown once)",
    )
    .takes(Body::json::<NewToken>())
    .answers(Body::json::<TokenCreated>()),
    route(
        Op::RevokeToken,
        Delete,
        "/api/v1/tokens/{id}",
        Some(Admin),
        "Revoke a token (not the last admin one)",
    ),
    route(Op::ListProjects, Get, "/api/v1/projects", Some(Read), "List projects").answers(Body::json::<ProjectList>()),
    route(
        Op::AddProject,
        Post,
        "/api/v1/projects",
        Some(Admin),
        "Add a project (mirrors its repository)",
    )
    .takes(Body::json::<NewProject>())
    .answers(Body::json::<ProjectCreated>()),
    route(
        Op::ShowProject,
        Get,
        "/api/v1/projects/{name}",
        Some(Read),
        "One project, its settings and job isolation",
    )
    .answers(JSON_OBJECT),
    route(
        Op::ProjectSettings,
        Post,
        "/api/v1/projects/{name}/settings",
        Some(Admin),
        "Change a project's settings",
    )
    .answers(JSON_OBJECT),
    route(
        Op::Trigger,
        Post,
        "/api/v1/projects/{name}/trigger",
        Some(Ci),
        "Run the pipeline on a commit, branch or tag",
    )
    .takes(Body::json::<TriggerBody>())
    .answers(Body::json::<Triggered>()),
    route(
        Op::ListSecrets,
        Get,
        "/api/v1/projects/{name}/secrets",
        Some(Admin),
        "List a project's secrets (names only)",
    )
    .answers(Body::json::<SecretList>()),
    route(
        Op::SetSecret,
        Put,
        "/api/v1/projects/{name}/secrets/{secret}",
        Some(Admin),
        "Set a secret (the raw body is its value)",
    )
    .takes(Body::raw("text/plain")),
    route(
        Op::RemoveSecret,
        Delete,
        "/api/v1/projects/{name}/secrets/{secret}",
        Some(Admin),
        "Remove a secret",
    ),
    route(Op::ListRuns, Get, "/api/v1/runs", Some(Read), "List runs, newest first")
        .query(params::<RunsQuery>)
        .answers(Body::json::<RunList>()),
    route(
        Op::ShowRun,
        Get,
        "/api/v1/runs/{project}/{run}",
        Some(Read),
        "One run and its jobs",
    )
    .answers(JSON_OBJECT),
    route(
        Op::CancelRun,
        Post,
        "/api/v1/runs/{project}/{run}/cancel",
        Some(Ci),
        "Cancel a waiting or running run",
    )
    .answers(Body::json::<Cancelled>()),
    route(
        Op::RetryRun,
        Post,
        "/api/v1/runs/{project}/{run}/retry",
        Some(Ci),
        "Run a finished run again on its commit",
    )
    .takes(Body::json::<RetryBody>())
    .answers(Body::json::<Triggered>()),
    route(
        Op::PlayJob,
        Post,
        "/api/v1/runs/{project}/{run}/jobs/{job}/play",
        Some(Play),
        "Start a manual job of a finished run, in a new run that takes over the jobs that passed",
    )
    .answers(Body::json::<Triggered>()),
    route(
        Op::JobLog,
        Get,
        "/api/v1/runs/{project}/{run}/logs/{job}",
        Some(Read),
        "A job's log (follows a running job)",
    )
    .answers(Body::raw("text/plain")),
    route(
        Op::Webhook,
        Post,
        "/api/v1/hooks/{provider}/{name}",
        None,
        "A forge's push event (signed by the forge)",
    )
    .answers(JSON_OBJECT),
    route(
        Op::Keys,
        Get,
        "/api/v1/keys",
        None,
        "The public keys that verify manifests",
    )
    .answers(Body::json::<Keys>()),
    route(
        Op::ListArtifacts,
        Get,
        "/api/v1/artifacts",
        Some(Read),
        "List artifacts, newest first",
    )
    .query(params::<ArtifactsQuery>)
    .answers(Body::json::<ArtifactList>()),
    route(
        Op::ShowArtifact,
        Get,
        "/api/v1/artifacts/{name}/{version}",
        Some(Read),
        "An artifact's signed manifest",
    )
    .answers(JSON_OBJECT),
    route(
        Op::PushArtifact,
        Put,
        "/api/v1/artifacts/{name}/{version}",
        Some(Ci),
        "Push an artifact (immutable once pushed)",
    )
    .query(params::<PushQuery>)
    .takes(BYTES)
    .answers(Body::json::<Pushed>()),
    route(
        Op::PushBlob,
        Post,
        "/api/v1/blobs",
        Some(Ci),
        "Store a blob by its content",
    )
    .takes(BYTES)
    .answers(Body::json::<BlobStored>()),
    route(
        Op::Fsck,
        Post,
        "/api/v1/artifacts/fsck",
        Some(Admin),
        "Re-hash every blob; quarantine corrupt ones",
    )
    .answers(Body::json::<FsckReport>()),
    route(
        Op::Gc,
        Post,
        "/api/v1/artifacts/gc",
        Some(Admin),
        "Delete artifacts past their retention",
    )
    .takes(Body::json::<GcBody>())
    .answers(Body::json::<GcReport>()),
    route(
        Op::DownloadArtifact,
        Get,
        "/api/v1/artifacts/{name}/{version}/blob",
        Some(Read),
        "An artifact's bytes",
    )
    .answers(BYTES),
    route(
        Op::ListEnvironments,
        Get,
        "/api/v1/environments",
        Some(Read),
        "Every environment of every project",
    )
    .answers(Body::json::<EnvironmentList>()),
    route(
        Op::ShowEnvironment,
        Get,
        "/api/v1/environments/{project}/{env}",
        Some(Read),
        "One environment, its deploy in flight and its history",
    )
    .answers(Body::json::<EnvironmentStatus>()),
    route(
        Op::Deploy,
        Post,
        "/api/v1/environments/{project}/{env}/deploy",
        Some(Deploy),
        "Deploy an artifact",
    )
    .takes(Body::json::<DeployBody>())
    .answers(Body::json::<DeployAnswer>()),
    route(
        Op::Promote,
        Post,
        "/api/v1/environments/{project}/{env}/promote",
        Some(Deploy),
        "Deploy what runs healthy in the required environment (`fixes`: the incident it fixes)",
    )
    .takes(Body::json::<DeployBody>())
    .answers(Body::json::<DeployAnswer>()),
    route(
        Op::Rollback,
        Post,
        "/api/v1/environments/{project}/{env}/rollback",
        Some(Deploy),
        "Roll back the deploy in flight, or to an earlier artifact",
    )
    .takes(Body::json::<DeployBody>())
    .answers(Body::json::<DeployAnswer>()),
    route(
        Op::StartDrill,
        Post,
        "/api/v1/environments/{project}/{env}/drill",
        Some(Deploy),
        "Start a disaster-recovery drill: turn down instances or the supervisor under load, and measure",
    )
    .takes(Body::json::<DrillBody>())
    .answers(Body::json::<DrillAnswer>()),
    route(
        Op::ListDrills,
        Get,
        "/api/v1/projects/{name}/drills",
        Some(Read),
        "A project's drills and what each measured",
    )
    .answers(Body::json::<DrillList>()),
    route(
        Op::ShowDrill,
        Get,
        "/api/v1/projects/{name}/drills/{number}",
        Some(Read),
        "One drill",
    )
    .answers(Body::json::<DrillList>()),
    route(
        Op::Halt,
        Post,
        "/api/v1/environments/{project}/{env}/halt",
        Some(Deploy),
        "Pull the andon cord: stop deploys until resumed",
    )
    .takes(Body::json::<DeployBody>())
    .answers(Body::json::<Halted>()),
    route(
        Op::Resume,
        Post,
        "/api/v1/environments/{project}/{env}/resume",
        Some(Deploy),
        "Lift a halt, or continue a paused rollout",
    )
    .answers(Body::json::<Resumed>()),
    route(
        Op::Approve,
        Post,
        "/api/v1/environments/{project}/{env}/approve",
        Some(Deploy),
        "Let the deploy waiting for approval go on",
    )
    .answers(Body::json::<Approved>()),
    route(
        Op::StopEnvironment,
        Post,
        "/api/v1/environments/{project}/{env}/stop",
        Some(Deploy),
        "Retire an environment: stop what runs there (the next deploy starts it again)",
    )
    .answers(Body::json::<EnvironmentStopped>()),
    route(
        Op::ListIncidents,
        Get,
        "/api/v1/incidents",
        Some(Read),
        "Incidents, newest first (open ones unless `all`)",
    )
    .query(params::<IncidentsQuery>)
    .answers(Body::json::<IncidentList>()),
    route(
        Op::OpenIncident,
        Post,
        "/api/v1/projects/{name}/incidents",
        Some(Deploy),
        "Open an incident by hand",
    )
    .takes(Body::json::<NewIncidentBody>())
    .answers(Body::json::<IncidentAnswer>()),
    route(
        Op::ShowIncident,
        Get,
        "/api/v1/projects/{name}/incidents/{number}",
        Some(Read),
        "One incident: its timeline and its suspects",
    )
    .answers(Body::json::<IncidentDetail>()),
    route(
        Op::Postmortem,
        Get,
        "/api/v1/projects/{name}/incidents/{number}/postmortem",
        Some(Read),
        "A blameless postmortem draft of an incident, from the event log (`takt postmortem` renders it as Markdown)",
    )
    .answers(Body::json::<PostmortemDraft>()),
    route(
        Op::UpdateIncident,
        Post,
        "/api/v1/projects/{name}/incidents/{number}/update",
        Some(Deploy),
        "Move an incident on: a status, a note on its timeline",
    )
    .takes(Body::json::<IncidentChange>())
    .answers(Body::json::<IncidentAnswer>()),
    route(
        Op::AckIncident,
        Post,
        "/api/v1/projects/{name}/incidents/{number}/ack",
        Some(Deploy),
        "Acknowledge an incident (reminders stop)",
    )
    .answers(Body::json::<IncidentAnswer>()),
    route(
        Op::ResolveIncident,
        Post,
        "/api/v1/projects/{name}/incidents/{number}/resolve",
        Some(Deploy),
        "Resolve an incident",
    )
    .takes(Body::json::<IncidentChange>())
    .answers(Body::json::<IncidentAnswer>()),
    route(
        Op::MarkCause,
        Post,
        "/api/v1/projects/{name}/incidents/{number}/cause",
        Some(Deploy),
        "Mark the deployment that caused an incident (the last mark wins)",
    )
    .takes(Body::json::<CauseBody>())
    .answers(Body::json::<IncidentAnswer>()),
    route(
        Op::FlowMetrics,
        Get,
        "/api/v1/metrics",
        Some(Read),
        "Flow metrics: the five DORA keys of the production environments and the bottleneck stage",
    )
    .query(params::<FlowQuery>)
    .answers(Body::json::<FlowReport>()),
    route(
        Op::FlakyTests,
        Get,
        "/api/v1/flaky",
        Some(Read),
        "Flaky tests: test cases that failed and passed on the same commit",
    )
    .query(params::<FlakyQuery>)
    .answers(Body::json::<FlakyList>()),
    route(
        Op::ImportHistory,
        Post,
        "/api/v1/projects/{name}/import",
        Some(Admin),
        "Load deployments and incidents from before takt (only the flow metrics read them)",
    )
    .takes(Body::json::<ImportBody>())
    .answers(Body::json::<ImportAnswer>()),
    route(
        Op::ListChecks,
        Get,
        "/api/v1/projects/{name}/checks",
        Some(Read),
        "The default branch's health checks and their states",
    )
    .answers(Body::json::<CheckList>()),
    route(
        Op::HeartbeatToken,
        Get,
        "/api/v1/projects/{name}/checks/{check}/heartbeat",
        Some(Admin),
        "A heartbeat check's URL and its own token",
    )
    .answers(Body::json::<HeartbeatToken>()),
    route(
        Op::Heartbeat,
        Post,
        "/api/v1/heartbeats/{project}/{check}",
        None,
        "A heartbeat check's beat (its own token as the bearer)",
    )
    .answers(Body::json::<BeatTaken>()),
    route(
        Op::Badge,
        Get,
        "/badge/{file}",
        None,
        "A project's pipeline badge (`/badge/PROJECT.svg?branch=main`, shields.io's flat style): the status of the branch's last run. Without a token when the project says so (`takt project set P --public-badge true`), else a read token",
    )
    .answers(Body::raw("image/svg+xml")),
    route(
        Op::StatusPage,
        Get,
        "/status",
        None,
        "The public status page (HTML, no JavaScript)",
    )
    .answers(Body::raw("text/html; charset=utf-8")),
    route(
        Op::StatusJson,
        Get,
        "/status.json",
        None,
        "The public status page's data",
    )
    .answers(JSON_OBJECT),
    route(
        Op::StatusFeed,
        Get,
        "/status/feed.xml",
        None,
        "The public status page's incidents as an Atom feed",
    )
    .answers(Body::raw("application/atom+xml")),
];

/// The path parameters of a route, in order.
pub fn path_params(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
}
