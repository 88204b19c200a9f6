//! `takt.yml` text → [`Pipeline`], collecting every problem with its position.

mod checks;
mod environments;
mod flags;
pub(crate) use flags::flag_files;
mod metrics;

use crate::diag::{Diagnostic, Diagnostics, Pos, Severity, did_you_mean};
use crate::duration;
use crate::expr::Expr;
use crate::gitlab::{self, Layout};
use crate::limits::{
    MAX_DIAGNOSTICS, MAX_EXPANDED_NODES, MAX_EXTENDS_DEPTH, MAX_JOBS, MAX_NEED_EDGES, MAX_NEEDS, MAX_SCRIPT_LINES,
    MAX_STAGES,
};
use crate::model::*;
use crate::yaml::{Node, NodeKind};
use globset::Glob;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

/// The largest pipeline file accepted.
pub const MAX_FILE_BYTES: usize = crate::limits::MAX_FILE_BYTES;
/// The longest job timeout accepted.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
/// The most caches one job may list (GitLab's limit).
const MAX_CACHES: usize = 4;
/// The most jobs one matrix or `parallel: N` may create.
pub const MAX_PARALLEL: usize = crate::limits::MAX_MATRIX_JOBS;

const TOP_KEYS: &[&str] = &[
    "version",
    "stages",
    "variables",
    "default",
    "budget",
    "jobs",
    "schedules",
    "notify",
    "retention",
    "environments",
    "checks",
    "maintenance",
    "quarantine",
    "metrics",
    "drills",
    "workflow",
    "flags",
];
/// Sections accepted and reported as not supported yet (none today).
const RESERVED: &[&str] = &[];
const JOB_KEYS: &[&str] = &[
    "trigger",
    "stage",
    "script",
    "before_script",
    "after_script",
    "variables",
    "needs",
    "dependencies",
    "rules",
    "when",
    "allow_failure",
    "timeout",
    "retry",
    "artifacts",
    "cache",
    "parallel",
    "extends",
    "secrets",
    "network",
    "image",
    "services",
    "tags",
    "only",
    "except",
    "environment",
    "coverage",
    "interruptible",
    "resource_group",
    "inherit",
    "start_in",
];
const DEFAULT_KEYS: &[&str] = &[
    "before_script",
    "after_script",
    "artifacts",
    "cache",
    "retry",
    "timeout",
    "image",
    "services",
    "tags",
    "interruptible",
];
/// GitLab's `artifacts: reports` types other than `junit` (kept with the run and listed).
const REPORT_TYPES: &[&str] = &[
    "accessibility",
    "annotations",
    "api_fuzzing",
    "browser_performance",
    "coverage_report",
    "codequality",
    "container_scanning",
    "coverage_fuzzing",
    "cyclonedx",
    "dast",
    "dependency_scanning",
    "dotenv",
    "load_performance",
    "metrics",
    "requirements",
    "repository_xray",
    "sast",
    "secret_detection",
    "terraform",
];
/// GitLab keys a pasted job may carry that takt knows but does not implement.
const GITLAB_UNSUPPORTED: &[&str] = &[
    "release",
    "pages",
    "id_tokens",
    "hooks",
    "identity",
    "inputs",
    "manual_confirmation",
    "dast_configuration",
];

/// How to read a pipeline file.
#[derive(Debug, Clone, Default)]
pub struct ParseOptions {
    /// `None`: by the file's name ([`Layout::of`]).
    pub layout: Option<Layout>,
    /// Make what the local executor cannot honour (`image`, `services`) an error, not a warning.
    pub strict: bool,
}

/// Parses and validates a pipeline file, its layout by its name, without includes. `file` is
/// the name used in messages.
pub fn parse(file: &str, bytes: &[u8]) -> Result<Pipeline, Diagnostics> {
    parse_with(file, bytes, &ParseOptions::default(), &BTreeMap::new())
}

/// Parses and validates a pipeline file with the files its `include: local` names (path from
/// the repository root → contents; [`crate::gitlab::local_includes`] says which).
pub fn parse_with(
    file: &str,
    bytes: &[u8],
    opts: &ParseOptions,
    includes: &BTreeMap<String, Vec<u8>>,
) -> Result<Pipeline, Diagnostics> {
    let layout = opts.layout.unwrap_or_else(|| Layout::of(file));
    let mut table = Vec::new();
    let fail = |items: Vec<Diagnostic>, table: &[String]| Diagnostics {
        file: file.to_string(),
        items,
        includes: table.to_vec(),
    };
    let start = Pos { line: 1, col: 1 };
    if bytes.len() > MAX_FILE_BYTES {
        return Err(fail(
            vec![
            Diagnostic::new(
                start,
                format!(
                    "the file is {} bytes; the limit is {} bytes (1 MiB)",
                    bytes.len(),
                    MAX_FILE_BYTES
                ),
            )
            .help("a pipeline file this large is almost certainly not hand-written; generate less, or split templates"),
        ],
            &table,
        ));
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let valid = &bytes[..e.valid_up_to()];
            let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
            let col = valid.len() - valid.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1) + 1;
            return Err(fail(
                vec![
                    Diagnostic::new(Pos { line, col }, format!("invalid UTF-8 at byte {}", e.valid_up_to()))
                        .help("save the file as UTF-8"),
                ],
                &table,
            ));
        }
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let normalized = match gitlab::normalize(text, layout, includes, &mut table) {
        Ok(n) => n,
        Err(d) => return Err(fail(capped(d, 0), &table)),
    };
    // The flagd files `flags: $include` names, for `flags` to read.
    let flag_files = normalized
        .root
        .as_ref()
        .map(flags::flag_files)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(_, p)| includes.get_key_value(&p).map(|(k, v)| (k.clone(), v.clone())))
        .collect();
    let mut cx = Cx {
        errors: Vec::new(),
        warnings: Vec::new(),
        dropped: 0,
        expanded: 0,
        layout,
        strict: opts.strict,
        job: None,
        shared: BTreeMap::new(),
        flag_files,
        table,
    };
    for d in normalized.problems {
        cx.push(d);
    }
    let Some(root) = normalized.root else {
        let example = match layout {
            Layout::Takt => "a pipeline needs at least `jobs:` with one job, e.g.\njobs:\n  build:\n    script: [make]",
            Layout::Gitlab => "a pipeline needs at least one job, e.g.\nbuild:\n  script: [make]",
        };
        cx.push(Diagnostic::new(start, "the file is empty").help(example));
        return Err(fail(capped(cx.errors, cx.dropped), &cx.table));
    };
    let pipeline = cx.pipeline(&root);
    cx.name_shared_problems();
    match pipeline {
        Some(mut p) if cx.errors.is_empty() => {
            p.layout = layout;
            p.warnings = fail(capped(cx.warnings, 0), &cx.table);
            Ok(p)
        }
        _ => Err(fail(capped(cx.errors, cx.dropped), &cx.table)),
    }
}

/// Sorted by position, without repeats, at most [`MAX_DIAGNOSTICS`], and a last line saying
/// how many more there were.
fn capped(mut items: Vec<Diagnostic>, mut dropped: usize) -> Vec<Diagnostic> {
    items.sort_by_key(|d| d.pos);
    items.dedup();
    if items.len() > MAX_DIAGNOSTICS {
        dropped += items.len() - MAX_DIAGNOSTICS;
        items.truncate(MAX_DIAGNOSTICS);
    }
    if dropped > 0 {
        let pos = items.last().map_or(Pos { line: 1, col: 1 }, |d| d.pos);
        items.push(Diagnostic::new(
            pos,
            format!("… and {dropped} more problems (takt reports the first {MAX_DIAGNOSTICS})"),
        ));
    }
    items
}

struct Cx {
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    layout: Layout,
    strict: bool,
    /// Problems found beyond [`MAX_DIAGNOSTICS`]: counted, not kept.
    dropped: usize,
    /// YAML nodes made by `extends`, `default` and matrix copies so far
    /// (bounded by [`MAX_EXPANDED_NODES`]).
    expanded: usize,
    /// The job being read, if any: its problems at a place other jobs share (a template, a
    /// `default:` key) are reported once, at that place, with the jobs it reaches.
    job: Option<String>,
    /// (position, severity, message with the job's name left out) → (which list, index in it,
    /// the other jobs the problem reaches).
    shared: BTreeMap<(Pos, Severity, String), (usize, Vec<String>)>,
    /// The flagd files `flags: $include` names: path → contents.
    flag_files: BTreeMap<String, Vec<u8>>,
    /// Files read besides the main one, in the order their lines are offset by
    /// [`gitlab::INCLUDE_LINE_BASE`] (GitLab's includes, then flag files).
    table: Vec<String>,
}

/// A resolved `extends` template: the merged node, how many `extends` levels it stands on,
/// and its size in nodes.
type Resolved = Option<(Node, usize, usize)>;

fn entries(n: &Node) -> &[(Node, Node)] {
    match &n.kind {
        NodeKind::Map(e) => e,
        _ => &[],
    }
}

fn key(k: &Node) -> &str {
    k.as_str().unwrap_or("")
}

fn valid_var_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

fn ctx_of(job: &str) -> String {
    format!("job `{job}`")
}

/// One or several alternatives (an empty list matches nothing).
fn any_of(mut any: Vec<Expr>) -> Expr {
    match any.len() {
        0 => Expr::Cmp(
            Box::new(Expr::Str("a".into())),
            crate::expr::Op::Eq,
            Box::new(Expr::Str("b".into())),
        ),
        1 => any.remove(0),
        _ => Expr::Or(any),
    }
}

/// One `only: refs` entry as a condition: GitLab's keywords (`branches`, `tags`,
/// `merge_requests`, `schedules`, ...), a `/regex/`, or a ref name.
fn only_ref(r: &str) -> Result<Expr, String> {
    use crate::expr::Op;
    let var = |v: &str| Box::new(Expr::Var(v.into()));
    let source = |s: &str| Expr::Cmp(var("CI_PIPELINE_SOURCE"), Op::Eq, Box::new(Expr::Str(s.into())));
    // `ref@group/project` limits the ref to one project: takt runs one project per file.
    let r = r.split('@').next().unwrap_or(r);
    Ok(match r {
        "branches" => Expr::Cmp(var("CI_COMMIT_BRANCH"), Op::Ne, Box::new(Expr::Null)),
        "tags" => Expr::Cmp(var("CI_COMMIT_TAG"), Op::Ne, Box::new(Expr::Null)),
        "merge_requests" => source("merge_request_event"),
        "external_pull_requests" => source("external_pull_request_event"),
        "pushes" => source("push"),
        "schedules" => source("schedule"),
        "triggers" => source("trigger"),
        "pipelines" => source("pipeline"),
        "api" | "web" | "chat" | "external" => source(r),
        _ if r.len() >= 2 && r.starts_with('/') => {
            let e = Expr::parse(&format!("$CI_COMMIT_REF_NAME =~ {r}"))?;
            return Ok(e);
        }
        _ => Expr::Cmp(var("CI_COMMIT_REF_NAME"), Op::Eq, Box::new(Expr::Str(r.into()))),
    })
}

/// Deep-merges `over` onto `base` (mappings merge, everything else is replaced), as `extends` does.
pub(crate) fn deep_merge(base: &Node, over: &Node) -> Node {
    match (&base.kind, &over.kind) {
        (NodeKind::Map(b), NodeKind::Map(o)) => {
            let mut out: Vec<(Node, Node)> = b.clone();
            // Keys are unique within a mapping (the loader refuses duplicates): index them, so
            // that merging two big mappings stays linear.
            let mut index: HashMap<String, usize> = HashMap::with_capacity(out.len());
            for (i, (bk, _)) in out.iter().enumerate() {
                index.entry(key(bk).to_string()).or_insert(i);
            }
            for (k, v) in o {
                match index.get(key(k)).and_then(|i| out.get_mut(*i)) {
                    Some(slot) => slot.1 = deep_merge(&slot.1, v),
                    None => {
                        index.insert(key(k).to_string(), out.len());
                        out.push((k.clone(), v.clone()));
                    }
                }
            }
            Node {
                pos: over.pos,
                kind: NodeKind::Map(out),
            }
        }
        _ => over.clone(),
    }
}

impl Cx {
    fn push(&mut self, d: Diagnostic) {
        if let Some(job) = &self.job {
            let own = format!("`{job}`");
            let general = d.message.replace(&own, "`…`");
            if general != d.message {
                let key = (d.pos, d.severity, general);
                if let Some((_, others)) = self.shared.get_mut(&key) {
                    others.push(job.clone());
                    return;
                }
                let index = match d.severity {
                    Severity::Warning => self.warnings.len(),
                    Severity::Error => self.errors.len(),
                };
                self.shared.insert(key, (index, Vec::new()));
            }
        }
        if d.severity == Severity::Warning {
            if self.warnings.len() < MAX_DIAGNOSTICS {
                self.warnings.push(d);
            }
            return;
        }
        if self.errors.len() < MAX_DIAGNOSTICS {
            self.errors.push(d);
        } else {
            self.dropped += 1;
        }
    }

    /// Problems that several jobs share (one place, the same message but for the job's name):
    /// the first job's report says which others it reaches.
    fn name_shared_problems(&mut self) {
        for ((_, severity, _), (index, others)) in std::mem::take(&mut self.shared) {
            if others.is_empty() {
                continue;
            }
            let list = match severity {
                Severity::Warning => &mut self.warnings,
                Severity::Error => &mut self.errors,
            };
            let Some(d) = list.get_mut(index) else { continue };
            const SHOWN: usize = 5;
            let mut names: Vec<String> = others.iter().take(SHOWN).map(|j| format!("`{j}`")).collect();
            if others.len() > SHOWN {
                names.push(format!("{} more", others.len() - SHOWN));
            }
            d.message.push_str(&format!(
                " (also in {} other job{} that inherit it from here: {})",
                others.len(),
                if others.len() == 1 { "" } else { "s" },
                names.join(", ")
            ));
        }
    }

    /// Whether "did you mean" hints are still worth computing (they cost a comparison with
    /// every candidate: not for problems that will not be shown).
    fn hints(&self) -> bool {
        self.errors.len() < MAX_DIAGNOSTICS
    }

    fn err(&mut self, pos: Pos, msg: impl Into<String>) {
        self.push(Diagnostic::new(pos, msg));
    }

    fn err_help(&mut self, pos: Pos, msg: impl Into<String>, help: impl Into<String>) {
        self.push(Diagnostic::new(pos, msg).help(help));
    }

    fn warn(&mut self, pos: Pos, msg: impl Into<String>, help: impl Into<String>) {
        self.push(Diagnostic::warning(pos, msg).help(help));
    }

    fn map<'a>(&mut self, n: &'a Node, what: &str) -> Option<&'a [(Node, Node)]> {
        match &n.kind {
            NodeKind::Map(e) => Some(e),
            _ => {
                self.err(n.pos, format!("{what} must be a mapping, found {}", n.type_name()));
                None
            }
        }
    }

    fn unknown_key(&mut self, k: &Node, allowed: &[&str], context: &str) {
        let name = key(k);
        if GITLAB_UNSUPPORTED.contains(&name) {
            self.err_help(
                k.pos,
                format!("`{name}` is not supported by takt yet ({context})"),
                "remove it; docs/pipeline.md lists what takt supports",
            );
            return;
        }
        let mut d = Diagnostic::new(k.pos, format!("unknown key `{name}` in {context}"));
        if let Some(s) = did_you_mean(name, allowed) {
            d = d.help(format!("did you mean `{s}`?"));
        } else {
            d = d.help(format!("allowed keys: {}", allowed.join(", ")));
        }
        self.push(d);
    }

    fn string(&mut self, n: &Node, what: &str) -> Option<String> {
        match &n.kind {
            NodeKind::Scalar { value, .. } if !n.is_null() => Some(value.clone()),
            NodeKind::Map(_) => {
                self.err_help(
                    n.pos,
                    format!("{what} must be a string, found {}", n.type_name()),
                    "YAML reads `key: value` as a mapping: quote this line (e.g. 'echo \"a: b\"' or \"echo a: b\")",
                );
                None
            }
            _ => {
                self.err(n.pos, format!("{what} must be a string, found {}", n.type_name()));
                None
            }
        }
    }

    fn bool(&mut self, n: &Node, what: &str) -> Option<bool> {
        match &n.kind {
            NodeKind::Scalar { value, plain: true } => match value.as_str() {
                "true" | "True" | "TRUE" => Some(true),
                "false" | "False" | "FALSE" => Some(false),
                _ => {
                    self.err(n.pos, format!("{what} must be true or false, found `{value}`"));
                    None
                }
            },
            _ => {
                self.err(n.pos, format!("{what} must be true or false, found {}", n.type_name()));
                None
            }
        }
    }

    /// A string or a list of strings.
    fn strings(&mut self, n: &Node, what: &str) -> Option<Vec<String>> {
        match &n.kind {
            NodeKind::Scalar { .. } if !n.is_null() => self.string(n, what).map(|s| vec![s]),
            NodeKind::Seq(items) => {
                let mut out = Vec::new();
                for i in items {
                    match &i.kind {
                        // Nested lists appear when anchors are spliced into scripts; flatten one level.
                        NodeKind::Seq(inner) => {
                            for j in inner {
                                out.push(self.string(j, what)?);
                            }
                        }
                        _ => out.push(self.string(i, what)?),
                    }
                }
                Some(out)
            }
            _ => {
                self.err(
                    n.pos,
                    format!("{what} must be a string or a list of strings, found {}", n.type_name()),
                );
                None
            }
        }
    }

    fn globs(&mut self, n: &Node, what: &str) -> Option<Vec<String>> {
        let list = self.strings(n, what)?;
        for g in &list {
            if g.trim().is_empty() {
                self.err(n.pos, format!("{what} has an empty path"));
            } else if let Err(e) = Glob::new(g) {
                self.err_help(
                    n.pos,
                    format!("{what}: bad glob `{g}`: {}", e.kind()),
                    "check brackets and braces",
                );
            } else if g.split('/').any(|c| c == "..") || g.starts_with('/') {
                self.err_help(
                    n.pos,
                    format!("{what}: `{g}` leaves the project directory"),
                    "paths are relative to the project directory and may not contain `..` or start with `/`",
                );
            }
        }
        Some(list)
    }

    fn duration(&mut self, n: &Node, what: &str) -> Option<Duration> {
        let s = self.string(n, what)?;
        match duration::parse(&s) {
            Ok(d) => Some(d),
            Err(e) => {
                self.err_help(n.pos, format!("{what}: {e}"), "write e.g. `90s`, `10m` or `1h 30m`");
                None
            }
        }
    }

    fn variables(&mut self, n: &Node, what: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if n.is_null() {
            return out;
        }
        let Some(es) = self.map(n, what) else {
            return out;
        };
        for (k, v) in es {
            let name = key(k);
            if !valid_var_name(name) {
                self.err_help(
                    k.pos,
                    format!("`{name}` is not a valid variable name"),
                    "use letters, digits and `_`, not starting with a digit",
                );
                continue;
            }
            let value = match &v.kind {
                NodeKind::Map(_) => {
                    for (vk, _) in entries(v) {
                        if !["value", "description", "expand", "options"].contains(&key(vk)) {
                            self.unknown_key(vk, &["value", "description", "expand", "options"], "a variable");
                        }
                    }
                    let value = v
                        .get("value")
                        .and_then(|x| self.string(x, &format!("variable `{name}`")));
                    let raw = v
                        .get("expand")
                        .and_then(|x| self.bool(x, &format!("`expand` of variable `{name}`")))
                        == Some(false);
                    // `expand: false`: the value is taken as written. Jobs expand variables
                    // with `$$` standing for `$` (GitLab's escape), so escape it once here.
                    if raw {
                        value.map(|s| s.replace('$', "$$"))
                    } else {
                        value
                    }
                }
                _ if v.is_null() => Some(String::new()),
                NodeKind::Scalar { value, .. } => Some(value.clone()),
                _ => {
                    self.err(
                        v.pos,
                        format!("variable `{name}` must be a string, found {}", v.type_name()),
                    );
                    None
                }
            };
            if let Some(value) = value {
                out.push((name.to_string(), value));
            }
        }
        out
    }

    fn pipeline(&mut self, root: &Node) -> Option<Pipeline> {
        let top = self.map(root, "the top level of takt.yml")?;
        let defaults: &[&str] = match self.layout {
            Layout::Takt => &DEFAULT_STAGES,
            Layout::Gitlab => &GITLAB_DEFAULT_STAGES,
        };
        let mut stages: Vec<String> = defaults.iter().map(|s| s.to_string()).collect();
        let mut variables = Vec::new();
        let mut budget = DEFAULT_BUDGET;
        let mut default: Option<&Node> = None;
        let mut jobs_node: Option<&Node> = None;
        let mut reserved = Vec::new();
        let mut flags = None;
        let mut schedules = Vec::new();
        let mut notify = Vec::new();
        let mut retention = None;
        let mut environments = Vec::new();
        let mut checks = Vec::new();
        let mut maintenance = Vec::new();
        let mut quarantine = Vec::new();
        let mut metrics = MetricsConfig::default();
        let mut drills_node = None;
        let mut workflow = Vec::new();
        for (k, v) in top {
            match key(k) {
                "version" => {
                    if v.as_str() != Some("1") {
                        self.err_help(v.pos, "unsupported `version`", "the only version is `1`");
                    }
                }
                "stages" => {
                    if let Some(list) = self.strings(v, "`stages`") {
                        let mut seen = HashSet::new();
                        for s in &list {
                            if !seen.insert(s.clone()) {
                                self.err(v.pos, format!("stage `{s}` is listed twice"));
                            }
                        }
                        if list.is_empty() {
                            self.err(v.pos, "`stages` is empty");
                        }
                        if list.len() > MAX_STAGES {
                            self.err_help(
                                v.pos,
                                format!("`stages` lists {} stages; the limit is {MAX_STAGES}", list.len()),
                                "group jobs into fewer stages, and order them with `needs`",
                            );
                            return None;
                        }
                        stages = list;
                    }
                }
                "variables" => variables = self.variables(v, "`variables`"),
                "budget" => {
                    if let Some(d) = self.duration(v, "`budget`") {
                        if d.is_zero() {
                            self.err(v.pos, "`budget` must be more than zero");
                        }
                        budget = d;
                    }
                }
                "default" => default = Some(v),
                "jobs" => jobs_node = Some(v),
                "schedules" => schedules = self.schedules(v),
                "notify" => notify = self.notify(v),
                "retention" => retention = self.retention(v),
                "environments" => environments = self.environments(v),
                "checks" => checks = self.checks(v),
                "maintenance" => maintenance = self.maintenance(v),
                "quarantine" => quarantine = self.quarantine(v),
                "metrics" => metrics = self.metrics(v),
                "drills" => drills_node = Some(v),
                "workflow" => workflow = self.workflow(v),
                // Checked here; `takt serve` answers them over OFREP (docs/flags.md).
                "flags" => flags = self.flags(v),
                name if RESERVED.contains(&name) => reserved.push((name.to_string(), k.pos)),
                name => {
                    if root.get("jobs").is_none() && matches!(v.kind, NodeKind::Map(_)) && v.get("script").is_some() {
                        self.err_help(
                            k.pos,
                            format!("`{name}` looks like a job, but jobs belong under `jobs:`"),
                            "move it under a top-level `jobs:` mapping (takt keeps jobs apart from settings)",
                        );
                    } else {
                        let all: Vec<&str> = TOP_KEYS.iter().chain(RESERVED.iter()).copied().collect();
                        self.unknown_key(k, &all, "the top level");
                    }
                }
            }
        }
        if !stages.iter().any(|s| s == ".pre") {
            stages.insert(0, ".pre".into());
        }
        if !stages.iter().any(|s| s == ".post") {
            stages.push(".post".into());
        }
        if let Some(f) = &flags {
            for env in f.environments.keys() {
                if !environments.iter().any(|x| x.name == *env) {
                    self.err(
                        f.pos,
                        format!("a flag sets environment `{env}`, which is not defined under `environments`"),
                    );
                }
            }
        }
        for c in &checks {
            if let Some(e) = &c.environment
                && !environments.iter().any(|x| x.name == *e)
            {
                self.err(
                    c.pos,
                    format!(
                        "check `{}` names environment `{e}`, which is not defined under `environments`",
                        c.name
                    ),
                );
            }
        }
        self.resolve_checks(&mut environments, &checks);
        let drills = drills_node.map(|n| self.drills(n, &environments)).unwrap_or_default();
        let defaults = default.map(|d| self.defaults(d)).unwrap_or_default();
        let Some(jobs_node) = jobs_node else {
            self.err_help(
                Pos { line: 1, col: 1 },
                "no `jobs:` section",
                "add `jobs:` with at least one job",
            );
            return None;
        };
        let jobs = self.jobs(jobs_node, &defaults, &stages);
        Some(Pipeline {
            stages,
            variables,
            budget,
            jobs,
            reserved,
            schedules,
            notify,
            retention,
            environments,
            checks,
            maintenance,
            quarantine,
            metrics,
            drills,
            workflow,
            flags,
            layout: self.layout,
            warnings: Diagnostics::default(),
        })
    }

    /// `workflow: {rules: [...], name: ...}`.
    fn workflow(&mut self, n: &Node) -> Vec<Rule> {
        let Some(es) = self.map(n, "`workflow`") else {
            return Vec::new();
        };
        let mut rules = Vec::new();
        for (k, v) in es {
            match key(k) {
                "rules" => rules = self.rules(v, "`workflow`"),
                "name" | "auto_cancel" => {}
                _ => self.unknown_key(k, &["rules", "name", "auto_cancel"], "`workflow`"),
            }
        }
        rules
    }

    /// `quarantine: [{name, suite?, job?, until: YYYY-MM-DD, reason?}]`.
    fn quarantine(&mut self, n: &Node) -> Vec<Quarantined> {
        const KEYS: &[&str] = &["name", "suite", "job", "until", "reason"];
        let NodeKind::Seq(items) = &n.kind else {
            self.err_help(
                n.pos,
                "`quarantine` must be a list of test cases",
                "e.g. `- {name: totals, suite: shop.Cart, until: 2026-12-31}`",
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items {
            let Some(fields) = self.map(item, "a quarantined test") else {
                continue;
            };
            let (mut name, mut suite, mut job, mut until, mut reason) = (None, None, None, None, None);
            for (k, v) in fields {
                match key(k) {
                    "name" => name = self.string(v, "`name`"),
                    "suite" => suite = self.string(v, "`suite`"),
                    "job" => job = self.string(v, "`job`"),
                    "reason" => reason = self.string(v, "`reason`"),
                    "until" => {
                        until = self.string(v, "`until`");
                        if let Some(u) = &until
                            && !is_date(u)
                        {
                            self.err(v.pos, format!("`until` must be a date such as 2026-12-31, not `{u}`"));
                            until = None;
                        }
                    }
                    _ => self.unknown_key(k, KEYS, "a quarantined test"),
                }
            }
            match (name, until) {
                (Some(name), Some(until)) => out.push(Quarantined {
                    name,
                    suite,
                    job,
                    until,
                    reason,
                    pos: item.pos,
                }),
                (None, _) => self.err(item.pos, "a quarantined test needs the test case's `name`"),
                (Some(_), None) => self.err_help(
                    item.pos,
                    "a quarantined test needs `until`, the date after which it counts again",
                    "quarantine is for a while: e.g. `until: 2026-12-31`",
                ),
            }
        }
        out
    }

    /// Each `check: NAME` of the environments' smoke checks and analyses becomes that check of
    /// `checks:`, or an error where it is named.
    fn resolve_checks(&mut self, environments: &mut [Environment], checks: &[HealthCheck]) {
        for e in environments {
            let env = e.name.clone();
            for c in e.checks_mut() {
                let Check::Health(named) = c else { continue };
                let pos = named.pos;
                match checks.iter().find(|k| k.name == named.name) {
                    Some(k) if matches!(k.probe, ProbeSpec::Heartbeat { .. }) => self.err(
                        pos,
                        format!("check `{}` is a heartbeat: takt cannot probe it for a deploy", k.name),
                    ),
                    Some(k) => **named = k.clone(),
                    None => {
                        let names: Vec<&str> = checks.iter().map(|k| k.name.as_str()).collect();
                        let help = match crate::diag::did_you_mean(&named.name, &names) {
                            Some(n) => format!("did you mean `{n}`?"),
                            None => "define it under the top-level `checks:`".to_string(),
                        };
                        self.err_help(
                            pos,
                            format!(
                                "environment `{}` names check `{}`, which `checks:` does not define",
                                env, named.name
                            ),
                            help,
                        );
                    }
                }
            }
        }
    }

    /// `retention: {keep_last: N, keep_deployed_days: D}`.
    fn retention(&mut self, n: &Node) -> Option<crate::model::Retention> {
        let fields = self.map(n, "`retention`")?;
        let mut r = crate::model::Retention::default();
        for (k, v) in fields {
            let what = key(k);
            let number = match what {
                "keep_last" | "keep_deployed_days" => match v.as_str().and_then(|t| t.parse::<u32>().ok()) {
                    Some(x) => x,
                    None => {
                        self.err(v.pos, format!("`retention.{what}` must be a whole number"));
                        continue;
                    }
                },
                _ => {
                    self.unknown_key(k, &["keep_last", "keep_deployed_days"], "`retention`");
                    continue;
                }
            };
            if what == "keep_last" {
                if number == 0 {
                    self.err(v.pos, "`retention.keep_last` must be at least 1");
                }
                r.keep_last = Some(number);
            } else {
                r.keep_deployed_days = Some(number);
            }
        }
        Some(r)
    }

    /// `schedules: {NAME: "CRON"}` or `{NAME: {cron, branch, timezone}}`.
    fn schedules(&mut self, n: &Node) -> Vec<crate::model::CronSchedule> {
        let mut out = Vec::new();
        let Some(es) = self.map(n, "`schedules`") else {
            return out;
        };
        for (k, v) in es {
            let name = key(k).to_string();
            let (mut cron, mut branch, mut timezone) = (None, None, None);
            if let NodeKind::Map(fields) = &v.kind {
                for (fk, fv) in fields {
                    match key(fk) {
                        "cron" => cron = self.string(fv, "`cron`").map(|c| (c, fv.pos)),
                        "branch" => branch = self.string(fv, "`branch`"),
                        "timezone" => timezone = self.string(fv, "`timezone`"),
                        _ => self.unknown_key(fk, &["cron", "branch", "timezone"], &format!("schedule `{name}`")),
                    }
                }
            } else {
                cron = self.string(v, &format!("schedule `{name}`")).map(|c| (c, v.pos));
            }
            let Some((cron, pos)) = cron else {
                self.err_help(
                    k.pos,
                    format!("schedule `{name}` has no `cron`"),
                    "write e.g. `nightly: \"0 3 * * *\"` (minute hour day month weekday, UTC)",
                );
                continue;
            };
            if let Err(e) = crate::model::CronSchedule::check(&cron) {
                self.err_help(
                    pos,
                    format!("schedule `{name}`: `{cron}` is not a cron expression: {e}"),
                    "use five fields (minute hour day month weekday), or six with seconds first",
                );
                continue;
            }
            out.push(crate::model::CronSchedule {
                name,
                cron,
                branch,
                timezone,
            });
        }
        out
    }

    /// `drills: {NAME: {environment, kill, count?, load?, cron, timezone?, production?}}`.
    fn drills(&mut self, n: &Node, environments: &[Environment]) -> Vec<crate::model::ScheduledDrill> {
        const KEYS: &[&str] = &["environment", "kill", "count", "load", "cron", "timezone", "production"];
        let mut out = Vec::new();
        let Some(es) = self.map(n, "`drills`") else {
            return out;
        };
        for (k, v) in es {
            let name = key(k).to_string();
            let what = format!("drill `{name}`");
            let Some(fields) = self.map(v, &what) else { continue };
            let (mut env, mut kill, mut cron, mut timezone) = (None, None, None, None);
            let (mut count, mut load, mut production) = (1u32, 20u32, false);
            for (fk, fv) in fields {
                match key(fk) {
                    "environment" => env = self.string(fv, "`environment`").map(|e| (e, fv.pos)),
                    "kill" => match self.string(fv, "`kill`").as_deref() {
                        Some("instance") => kill = Some(takt_model::DrillKill::Instance),
                        Some("all_instances") => kill = Some(takt_model::DrillKill::AllInstances),
                        Some("supervisor") => kill = Some(takt_model::DrillKill::Supervisor),
                        Some(other) => self.err(
                            fv.pos,
                            format!("`kill` is instance, all_instances or supervisor, not `{other}`"),
                        ),
                        None => {}
                    },
                    f @ ("count" | "load") => match fv.as_str().and_then(|t| t.parse::<u32>().ok()) {
                        Some(x) if f == "count" && x >= 1 => count = x,
                        Some(x) if f == "load" && (1..=1000).contains(&x) => load = x,
                        _ => self.err(
                            fv.pos,
                            if f == "count" {
                                "`count` must be a whole number of at least 1".to_string()
                            } else {
                                "`load` must be 1 to 1000 requests a second".to_string()
                            },
                        ),
                    },
                    "cron" => cron = self.string(fv, "`cron`").map(|c| (c, fv.pos)),
                    "timezone" => timezone = self.string(fv, "`timezone`"),
                    "production" => production = self.bool(fv, "`production`").unwrap_or(false),
                    _ => self.unknown_key(fk, KEYS, &what),
                }
            }
            let (Some((env, env_pos)), Some(kill), Some((cron, cron_pos))) = (env, kill, cron) else {
                self.err_help(
                    k.pos,
                    format!("{what} needs `environment`, `kill` and `cron`"),
                    "e.g. `weekly: {environment: staging, kill: all_instances, cron: \"0 10 * * MON\"}`",
                );
                continue;
            };
            if let Err(e) = crate::model::CronSchedule::check(&cron) {
                self.err(cron_pos, format!("{what}: `{cron}` is not a cron expression: {e}"));
                continue;
            }
            match environments.iter().find(|e| e.name == env) {
                None => {
                    self.err(
                        env_pos,
                        format!("{what} names environment `{env}`, which `environments:` does not define"),
                    );
                    continue;
                }
                Some(e) if e.driver == Driver::Command => {
                    self.err(
                        env_pos,
                        format!(
                            "{what}: environment `{env}` uses the command driver, which runs no instances to turn down"
                        ),
                    );
                    continue;
                }
                Some(_) if is_production(environments, &env) && !production => {
                    self.err_help(
                        env_pos,
                        format!("{what} turns down production environment `{env}`"),
                        "say `production: true` in the drill to mean it",
                    );
                    continue;
                }
                Some(_) => {}
            }
            out.push(crate::model::ScheduledDrill {
                schedule: crate::model::CronSchedule {
                    name: name.clone(),
                    cron,
                    branch: None,
                    timezone,
                },
                name,
                environment: env,
                kill,
                count,
                load,
                production,
                pos: k.pos,
            });
        }
        out
    }

    /// `notify: [{webhook: URL, events: [kinds]}, {slack: URL}]`.
    fn notify(&mut self, n: &Node) -> Vec<crate::model::Subscriber> {
        let mut out = Vec::new();
        let NodeKind::Seq(items) = &n.kind else {
            self.err_help(
                n.pos,
                "`notify` must be a list",
                "write e.g. `notify: [{webhook: https://example.com/hook}, {slack: https://hooks.slack.com/...}]`",
            );
            return out;
        };
        for item in items {
            let Some(fields) = self.map(item, "a `notify` entry") else {
                continue;
            };
            let (mut target, mut events, mut on_call) = (None, Vec::new(), false);
            for (fk, fv) in fields {
                match key(fk) {
                    k @ ("webhook" | "slack") => {
                        if target.is_some() {
                            self.err(fk.pos, "a `notify` entry has one `webhook` or one `slack`");
                        }
                        if let Some(url) = self.string(fv, &format!("`{k}`")) {
                            if !(url.starts_with("http://") || url.starts_with("https://")) {
                                self.err(fv.pos, format!("`{k}` must be an http:// or https:// URL, not `{url}`"));
                            }
                            target = Some((k == "slack", url));
                        }
                    }
                    "events" => events = self.strings(fv, "`events`").unwrap_or_default(),
                    "on_call" => on_call = self.bool(fv, "`on_call`").unwrap_or(false),
                    _ => self.unknown_key(fk, &["webhook", "slack", "events", "on_call"], "a `notify` entry"),
                }
            }
            match target {
                Some((slack, url)) => out.push(crate::model::Subscriber {
                    slack,
                    url,
                    events,
                    on_call,
                }),
                None => self.err(item.pos, "a `notify` entry needs `webhook: URL` or `slack: URL`"),
            }
        }
        out
    }

    fn defaults(&mut self, n: &Node) -> Vec<(Node, Node)> {
        let Some(es) = self.map(n, "`default`") else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, v) in es {
            if DEFAULT_KEYS.contains(&key(k)) {
                out.push((k.clone(), v.clone()));
            } else {
                self.unknown_key(k, DEFAULT_KEYS, "`default`");
            }
        }
        out
    }

    /// Counts `n` more nodes made by `extends`, `default` or a matrix; false (with an error at
    /// `pos`) once the file has asked for more than [`MAX_EXPANDED_NODES`].
    fn expand(&mut self, pos: Pos, n: usize) -> bool {
        self.expanded = self.expanded.saturating_add(n);
        if self.expanded > MAX_EXPANDED_NODES {
            self.err_help(
                pos,
                format!(
                    "`extends`, `default` and `parallel` copy the jobs into more than {MAX_EXPANDED_NODES} YAML nodes; \
                     the limit is {MAX_EXPANDED_NODES}"
                ),
                "share less through templates, or make fewer jobs",
            );
            return false;
        }
        true
    }

    /// Resolves `name`'s `extends` (each template once: `memo`), refusing cycles and chains
    /// longer than [`MAX_EXTENDS_DEPTH`].
    fn resolve_extends(
        &mut self,
        name: &str,
        raw: &BTreeMap<String, &Node>,
        stack: &mut Vec<String>,
        memo: &mut HashMap<String, Resolved>,
    ) -> Resolved {
        if let Some(done) = memo.get(name) {
            return done.clone();
        }
        let node = *raw.get(name)?;
        if stack.iter().any(|s| s == name) {
            stack.push(name.to_string());
            self.err_help(
                node.pos,
                format!("`extends` forms a cycle: {}", stack.join(" → ")),
                "remove one of the `extends`",
            );
            return None;
        }
        let resolved = self.resolve_uncached(name, node, raw, stack, memo);
        memo.insert(name.to_string(), resolved.clone());
        resolved
    }

    fn resolve_uncached(
        &mut self,
        name: &str,
        node: &Node,
        raw: &BTreeMap<String, &Node>,
        stack: &mut Vec<String>,
        memo: &mut HashMap<String, Resolved>,
    ) -> Resolved {
        let Some(ext) = node.get("extends") else {
            return Some((node.clone(), 0, node.size()));
        };
        if stack.len() >= MAX_EXTENDS_DEPTH {
            self.err(
                node.pos,
                format!(
                    "`extends` is nested more than {MAX_EXTENDS_DEPTH} levels deep; the limit is {MAX_EXTENDS_DEPTH}"
                ),
            );
            return None;
        }
        let parents = self.strings(ext, "`extends`")?;
        stack.push(name.to_string());
        let mut merged: Option<Node> = None;
        let mut height = 0;
        for p in &parents {
            if !raw.contains_key(p.as_str()) {
                let mut d = Diagnostic::new(ext.pos, format!("`extends` names `{p}`, which is not defined"));
                if self.hints() {
                    // Not the job itself, nor what it is being extended into (`.flatpak`
                    // missing must not suggest `flatpak`, the job that names it).
                    let names: Vec<&str> = raw
                        .keys()
                        .map(String::as_str)
                        .filter(|n| *n != name && !stack.iter().any(|s| s == n))
                        .collect();
                    if let Some(s) = did_you_mean(p, &names) {
                        d = d.help(format!("did you mean `{s}`?"));
                    }
                }
                self.push(d);
                continue;
            }
            let (resolved, h, n) = self.resolve_extends(p, raw, stack, memo)?;
            if h + 1 > MAX_EXTENDS_DEPTH {
                self.err(
                    ext.pos,
                    format!("`extends` is nested more than {MAX_EXTENDS_DEPTH} levels deep; the limit is {MAX_EXTENDS_DEPTH}"),
                );
                return None;
            }
            height = height.max(h + 1);
            // What merging costs: a copy of the resolved parent.
            if !self.expand(ext.pos, n) {
                return None;
            }
            merged = Some(match merged {
                None => resolved,
                Some(m) => deep_merge(&m, &resolved),
            });
        }
        stack.pop();
        let mine = Node {
            pos: node.pos,
            kind: NodeKind::Map(
                entries(node)
                    .iter()
                    .filter(|(k, _)| key(k) != "extends")
                    .cloned()
                    .collect(),
            ),
        };
        let out = match merged {
            None => mine,
            Some(m) => {
                let mut out = deep_merge(&m, &mine);
                out.pos = node.pos;
                if let NodeKind::Map(es) = &mut out.kind {
                    es.retain(|(k, _)| key(k) != "extends");
                }
                out
            }
        };
        let size = out.size();
        Some((out, height, size))
    }

    fn jobs(&mut self, n: &Node, defaults: &[(Node, Node)], stages: &[String]) -> Vec<Job> {
        let Some(es) = self.map(n, "`jobs`") else {
            return Vec::new();
        };
        let mut raw: BTreeMap<String, &Node> = BTreeMap::new();
        for (k, v) in es {
            if key(k).trim().is_empty() {
                self.err(k.pos, "a job name may not be empty");
                continue;
            }
            if !matches!(v.kind, NodeKind::Map(_)) {
                if key(k).starts_with('.') {
                    // A hidden key may hold any YAML for anchors and `!reference` to use.
                    continue;
                }
                self.err_help(
                    v.pos,
                    format!("job `{}` must be a mapping, found {}", key(k), v.type_name()),
                    "a job needs at least `script:`",
                );
                continue;
            }
            raw.insert(key(k).to_string(), v);
        }
        let mut jobs = Vec::new();
        let mut memo = HashMap::new();
        let stage_set: HashSet<&str> = stages.iter().map(String::as_str).collect();
        for (k, _) in es {
            let name = key(k);
            if name.starts_with('.') || !raw.contains_key(name) {
                continue;
            }
            let Some((node, _, size)) = self.resolve_extends(name, &raw, &mut Vec::new(), &mut memo) else {
                continue;
            };
            // `default` fills keys the job does not set (those `inherit: default` lets through).
            let mut es: Vec<(Node, Node)> = entries(&node).to_vec();
            let mut size = size;
            let (inherited, inherit_variables) = self.inherit(&node, &ctx_of(name));
            for (dk, dv) in defaults {
                let wanted = inherited.as_ref().is_none_or(|keys| keys.iter().any(|i| i == key(dk)));
                if wanted && !es.iter().any(|(k, _)| key(k) == key(dk)) {
                    size = size.saturating_add(dv.size());
                    es.push((dk.clone(), dv.clone()));
                }
            }
            if !self.expand(k.pos, size) {
                return jobs;
            }
            let node = Node {
                pos: k.pos,
                kind: NodeKind::Map(es),
            };
            let mut made = self.job(name, &node, &stage_set, stages);
            for j in &mut made {
                j.inherit_variables.clone_from(&inherit_variables);
            }
            // Matrix copies after the first.
            if !self.expand(k.pos, size.saturating_mul(made.len().saturating_sub(1))) {
                return jobs;
            }
            jobs.extend(made);
            if jobs.len() > MAX_JOBS {
                self.err_help(
                    k.pos,
                    format!(
                        "the pipeline has more than {MAX_JOBS} jobs (counting each `parallel` instance); the limit is {MAX_JOBS}"
                    ),
                    "make fewer jobs, or smaller matrices",
                );
                return jobs;
            }
        }
        if jobs.is_empty() && self.errors.is_empty() {
            self.err_help(
                n.pos,
                "the pipeline has no runnable job",
                "add a job whose name does not start with `.`",
            );
        }
        self.resolve_matrix_needs(&mut jobs);
        self.check_graph(&jobs, stages);
        jobs
    }

    /// `needs: [{job: build, parallel: {matrix: [...]}}]` → the names of the instances of
    /// `build` whose matrix variables are those given (GitLab's matching: every variable of the
    /// entry has the value, whatever its order).
    fn resolve_matrix_needs(&mut self, jobs: &mut [Job]) {
        let mut found: Vec<(usize, usize, Vec<Need>)> = Vec::new();
        for (i, j) in jobs.iter().enumerate() {
            let Some(needs) = &j.needs else { continue };
            for (n, need) in needs.iter().enumerate() {
                if need.matrix.is_empty() {
                    continue;
                }
                let mut named = Vec::new();
                for combo in &need.matrix {
                    let hits: Vec<&Job> = jobs
                        .iter()
                        .filter(|o| o.base == need.job && o.name != o.base)
                        .filter(|o| {
                            combo.iter().all(|(k, v)| {
                                o.variables
                                    .iter()
                                    .rev()
                                    .find(|(ok, _)| ok == k)
                                    .is_some_and(|(_, ov)| ov == v)
                            })
                        })
                        .collect();
                    if hits.is_empty() {
                        let label: Vec<String> = combo.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        self.err_help(
                            need.pos,
                            format!(
                                "job `{}` needs the instance of `{}` with {}, which its matrix does not make",
                                j.name,
                                need.job,
                                label.join(", ")
                            ),
                            "name variables and values that are in the needed job's `parallel: matrix`",
                        );
                    }
                    for o in hits {
                        named.push(Need {
                            job: o.name.clone(),
                            matrix: Vec::new(),
                            ..need.clone()
                        });
                    }
                }
                found.push((i, n, named));
            }
        }
        // Replace from the last entry back, so that earlier indices stay right.
        for (i, n, named) in found.into_iter().rev() {
            if let Some(needs) = jobs.get_mut(i).and_then(|j| j.needs.as_mut())
                && n < needs.len()
            {
                needs.splice(n..=n, named);
            }
        }
    }

    /// `inherit: {default: bool | [keys], variables: bool | [names]}`: for `default` keys and
    /// for top-level variables, `None` when every one is inherited, else the ones that are.
    fn inherit(&mut self, job: &Node, ctx: &str) -> (Option<Vec<String>>, Option<Vec<String>>) {
        let Some(n) = job.get("inherit") else {
            return (None, None);
        };
        let Some(es) = self.map(n, &format!("`inherit` of {ctx}")) else {
            return (None, None);
        };
        let mut out = None;
        let mut variables = None;
        for (k, v) in es {
            let value = match &v.kind {
                NodeKind::Seq(_) => Some(self.strings(v, "`inherit`").unwrap_or_default()),
                _ => match self.bool(v, "`inherit`") {
                    Some(true) | None => None,
                    Some(false) => Some(Vec::new()),
                },
            };
            match key(k) {
                "default" => out = value,
                "variables" => variables = value,
                _ => self.unknown_key(k, &["default", "variables"], "`inherit`"),
            }
        }
        (out, variables)
    }

    fn job(&mut self, name: &str, n: &Node, stage_set: &HashSet<&str>, stages: &[String]) -> Vec<Job> {
        self.job = Some(name.to_string());
        let jobs = self.read_job(name, n, stage_set, stages);
        self.job = None;
        jobs
    }

    fn read_job(&mut self, name: &str, n: &Node, stage_set: &HashSet<&str>, stages: &[String]) -> Vec<Job> {
        let ctx = format!("job `{name}`");
        let mut job = Job {
            name: name.to_string(),
            base: name.to_string(),
            pos: n.pos,
            stage: "test".into(),
            before_script: Vec::new(),
            script: Vec::new(),
            after_script: Vec::new(),
            variables: Vec::new(),
            needs: None,
            dependencies: None,
            rules: Vec::new(),
            when: When::OnSuccess,
            allow_failure: None,
            allow_exit_codes: Vec::new(),
            timeout: None,
            retry: Retry::default(),
            artifacts: None,
            caches: Vec::new(),
            secrets: Vec::new(),
            network: true,
            tags: Vec::new(),
            interruptible: false,
            environment: None,
            coverage: None,
            resource_group: None,
            image: None,
            start_in: None,
            inherit_variables: None,
            trigger: None,
        };
        let mut only: Option<&Node> = None;
        let mut except: Option<&Node> = None;
        let mut delayed = false;
        let mut matrix: Vec<Vec<(String, String)>> = Vec::new();
        let mut has_script = false;
        for (k, v) in entries(n) {
            let what = format!("`{}` of {ctx}", key(k));
            match key(k) {
                "stage" => {
                    if let Some(s) = self.string(v, &what) {
                        if !stage_set.contains(s.as_str()) {
                            let mut d =
                                Diagnostic::new(v.pos, format!("{ctx} uses stage `{s}`, which is not in `stages`"));
                            if self.hints() {
                                let names: Vec<&str> = stages.iter().map(String::as_str).collect();
                                d = match did_you_mean(&s, &names) {
                                    Some(m) => d.help(format!("did you mean `{m}`?")),
                                    None => d.help(format!("the stages are: {}", names.join(", "))),
                                };
                            }
                            self.push(d);
                        }
                        job.stage = s;
                    }
                }
                "script" => {
                    has_script = true;
                    if let Some(s) = self.strings(v, &what) {
                        if s.iter().all(|l| l.trim().is_empty()) {
                            self.err_help(
                                v.pos,
                                format!("{ctx} has an empty `script`"),
                                "give it at least one command",
                            );
                        }
                        job.script = s;
                    }
                }
                "before_script" => job.before_script = self.strings(v, &what).unwrap_or_default(),
                "after_script" => job.after_script = self.strings(v, &what).unwrap_or_default(),
                "variables" => job.variables = self.variables(v, &what),
                "needs" => job.needs = self.needs(v, &ctx),
                "dependencies" => {
                    job.dependencies = self.strings(v, &what);
                    if let Some(d) = &job.dependencies
                        && d.len() > MAX_NEEDS
                    {
                        self.err(
                            v.pos,
                            format!("{what} lists {} jobs; the limit is {MAX_NEEDS}", d.len()),
                        );
                    }
                }
                "rules" => job.rules = self.rules(v, &ctx),
                "when" => {
                    if let Some(s) = self.string(v, &what) {
                        if s == "delayed" {
                            delayed = true;
                            continue;
                        }
                        match When::parse(&s) {
                            Some(When::Never) | None => self.err_help(
                                v.pos,
                                format!("{what}: `{s}` is not a job `when`"),
                                "use on_success, on_failure, always or manual (`never` belongs in `rules`)",
                            ),
                            Some(w) => job.when = w,
                        }
                    }
                }
                "allow_failure" => match &v.kind {
                    NodeKind::Map(es) => {
                        // Allowed for these exit codes only: said, so not a manual job's default.
                        job.allow_failure = Some(false);
                        for (ak, av) in es {
                            if key(ak) == "exit_codes" {
                                for c in self.strings(av, "`allow_failure.exit_codes`").unwrap_or_default() {
                                    match c.parse::<i32>() {
                                        Ok(c) => job.allow_exit_codes.push(c),
                                        Err(_) => self.err(av.pos, format!("exit code `{c}` is not a number")),
                                    }
                                }
                            } else {
                                self.unknown_key(ak, &["exit_codes"], "`allow_failure`");
                            }
                        }
                    }
                    _ => job.allow_failure = Some(self.bool(v, &what).unwrap_or(false)),
                },
                "timeout" => {
                    if let Some(d) = self.duration(v, &what) {
                        if d.is_zero() {
                            self.err(v.pos, format!("{what} must be more than zero"));
                        } else if d > MAX_TIMEOUT {
                            self.err_help(
                                v.pos,
                                format!("{what} is longer than 7 days"),
                                "a CI job should not run for a week; use a shorter timeout",
                            );
                        } else {
                            job.timeout = Some(d);
                        }
                    }
                }
                "retry" => job.retry = self.retry(v, &what),
                "artifacts" => job.artifacts = self.artifacts(v, &ctx),
                "cache" => job.caches = self.caches(v, &ctx),
                "parallel" => matrix = self.parallel(v, &ctx),
                "secrets" => {
                    for s in self.strings(v, &what).unwrap_or_default() {
                        if !valid_var_name(&s) {
                            self.err(v.pos, format!("secret name `{s}` is not a valid variable name"));
                        } else {
                            job.secrets.push(s);
                        }
                    }
                }
                "network" => job.network = self.bool(v, &what).unwrap_or(true),
                "image" | "services" => {
                    let what = match (&v.kind, key(k)) {
                        (NodeKind::Map(_), "image") => v.get("name").and_then(Node::as_str).map(str::to_string),
                        (_, "image") => v.as_str().map(str::to_string),
                        _ => None,
                    };
                    if key(k) == "image" {
                        job.image = what.clone();
                    }
                    let msg = match what {
                        Some(i) => format!("image `{i}` is not used: the local executor runs jobs on this machine"),
                        None => format!("`{}` is not used: the local executor runs jobs on this machine", key(k)),
                    };
                    let help = "install what the job needs on the machine (an executor that runs images comes with the scale-out work)";
                    if self.strict {
                        self.err_help(v.pos, msg, format!("{help}; without --strict this is a warning"));
                    } else {
                        self.warn(v.pos, msg, help);
                    }
                }
                "tags" => {
                    job.tags = self.strings(v, &what).unwrap_or_default();
                    self.warn(
                        v.pos,
                        "`tags` have no effect yet: every job runs on this machine",
                        "they will pick agents once takt has them; nothing to change",
                    );
                }
                "interruptible" => job.interruptible = self.bool(v, &what).unwrap_or(false),
                "environment" => job.environment = self.job_environment(v, &ctx),
                "trigger" => job.trigger = self.trigger(v, &ctx),
                "coverage" => {
                    if let Some(c) = self.string(v, &what) {
                        let body = c.strip_prefix('/').and_then(|r| r.strip_suffix('/'));
                        match body.map(regex::Regex::new) {
                            Some(Ok(_)) => job.coverage = body.map(str::to_string),
                            Some(Err(e)) => self.err(v.pos, format!("{what} is not a valid regex: {e}")),
                            None => self.err_help(
                                v.pos,
                                format!("{what} must be a regex between slashes"),
                                "e.g. `coverage: '/TOTAL.*\\s(\\d+%)$/'`",
                            ),
                        }
                    }
                }
                "resource_group" => job.resource_group = self.string(v, &what),
                "start_in" => job.start_in = self.duration(v, &what),
                "only" => only = Some(v),
                "except" => except = Some(v),
                "inherit" | "extends" => {}
                _ => self.unknown_key(k, JOB_KEYS, &ctx),
            }
        }
        if delayed {
            if job.start_in.is_none() {
                self.err_help(
                    n.pos,
                    format!("{ctx} has `when: delayed` without `start_in`"),
                    "add e.g. `start_in: 30 minutes`",
                );
            }
        } else if job.start_in.is_some() {
            self.err_help(
                n.pos,
                format!("{ctx} has `start_in` without `when: delayed`"),
                "add `when: delayed`",
            );
        }
        if only.is_some() || except.is_some() {
            if !job.rules.is_empty() {
                self.err_help(
                    n.pos,
                    format!("{ctx} has both `rules` and `only`/`except`"),
                    "GitLab refuses this too: keep `rules`",
                );
            } else {
                job.rules = self.only_except(only, except, &ctx);
            }
        }
        if n.get("stage").is_none() && !stage_set.contains("test") {
            self.err_help(
                n.pos,
                format!("{ctx} has no `stage`, so it is in `test`, which is not in `stages`"),
                "give it a `stage:`, or add `test` to `stages` (GitLab refuses this file too)",
            );
        }
        if has_script && job.trigger.is_some() {
            self.err_help(
                n.pos,
                format!("{ctx} has both `script` and `trigger`"),
                "a trigger job runs a child pipeline, not commands (GitLab refuses this too): keep one",
            );
        }
        // A misspelt `script` has its own error, which says what was meant.
        let misspelt = || {
            entries(n)
                .iter()
                .any(|(k, _)| key(k) != "script" && did_you_mean(key(k), &["script"]).is_some())
        };
        if !has_script && n.get("trigger").is_none() && !misspelt() {
            self.err_help(
                n.pos,
                format!("{ctx} has no `script`"),
                "add `script:` with the commands to run",
            );
        }
        let lines = job.before_script.len() + job.script.len() + job.after_script.len();
        if lines > MAX_SCRIPT_LINES {
            self.err_help(
                n.pos,
                format!("{ctx} has {lines} commands (`before_script`, `script` and `after_script`); the limit is {MAX_SCRIPT_LINES}"),
                "move the commands into a script file in the repository and run that",
            );
        }
        if matrix.is_empty() {
            return vec![job];
        }
        let mut out = Vec::new();
        for combo in matrix {
            let mut j = job.clone();
            let label: Vec<String> = combo.iter().map(|(k, v)| format!("{k}={v}")).collect();
            j.name = if let [(index, i), (total, n)] = &combo[..]
                && index == "CI_NODE_INDEX"
                && total == "CI_NODE_TOTAL"
            {
                format!("{name} {i}/{n}")
            } else if self.layout == Layout::Gitlab {
                // GitLab's own names, which its files use in `needs` and `dependencies`.
                let values: Vec<&str> = combo.iter().map(|(_, v)| v.as_str()).collect();
                format!("{name}: [{}]", values.join(", "))
            } else {
                format!("{name} [{}]", label.join(", "))
            };
            j.variables.extend(combo);
            out.push(j);
        }
        out
    }

    /// `trigger: {include: FILE, strategy: depend, forward: {...}}`: a child pipeline from a file
    /// of the repository. The forms that name another project need a GitLab server.
    fn trigger(&mut self, v: &Node, ctx: &str) -> Option<ChildPipeline> {
        let server = |what: &str| {
            format!(
                "`trigger` of {ctx} starts {what}, which needs a GitLab server; takt runs child pipelines from files of this repository"
            )
        };
        if v.as_str().is_some() {
            self.err_help(
                v.pos,
                server("a pipeline of another project"),
                "write `trigger: {include: path/to/child.yml}`",
            );
            return None;
        }
        let es = self.map(v, &format!("`trigger` of {ctx}"))?;
        let mut child = ChildPipeline {
            file: String::new(),
            depend: false,
            forward_variables: true,
            pos: v.pos,
        };
        for (k, val) in es {
            match key(k) {
                "include" => {
                    let items: Vec<&Node> = match &val.kind {
                        NodeKind::Seq(items) => items.iter().collect(),
                        _ => vec![val],
                    };
                    if items.len() != 1 {
                        self.err_help(
                            val.pos,
                            format!(
                                "`trigger: include` of {ctx} lists {} files; takt runs one file as the child pipeline",
                                items.len()
                            ),
                            "make one file that includes the others with `include: local`",
                        );
                        continue;
                    }
                    let item = items[0];
                    let path = match item.as_str() {
                        Some(p) => Some(p.to_string()),
                        None => match item.get("local") {
                            Some(l) => self.string(l, "`trigger: include: local`"),
                            None => {
                                let what = entries(item).first().map(|(k, _)| key(k)).unwrap_or("");
                                self.err_help(
                                    item.pos,
                                    if what == "artifact" {
                                        format!("`trigger: include: artifact` of {ctx} (a generated child pipeline) is not supported yet")
                                    } else {
                                        server(&format!("a child pipeline from `include: {what}`"))
                                    },
                                    "commit the child pipeline's file and write `trigger: {include: path/to/child.yml}`",
                                );
                                None
                            }
                        },
                    };
                    if let Some(p) = path {
                        let p = p.trim_start_matches('/').to_string();
                        if p.split('/').any(|c| c == "..") || p.is_empty() {
                            self.err(
                                item.pos,
                                format!("`trigger: include` of {ctx} must name a file inside the repository"),
                            );
                        } else {
                            child.file = p;
                        }
                    }
                }
                "strategy" => match self.string(val, "`trigger: strategy`").as_deref() {
                    Some("depend") => child.depend = true,
                    Some(o) => self.err_help(val.pos, format!("`{o}` is not a `trigger: strategy`"), "use `depend`"),
                    None => {}
                },
                "forward" => {
                    for (fk, fv) in entries(val) {
                        match key(fk) {
                            "yaml_variables" => {
                                child.forward_variables = self.bool(fv, "`forward: yaml_variables`").unwrap_or(true)
                            }
                            "pipeline_variables" => {
                                let _ = self.bool(fv, "`forward: pipeline_variables`");
                            }
                            _ => self.unknown_key(fk, &["yaml_variables", "pipeline_variables"], "`trigger: forward`"),
                        }
                    }
                }
                "project" | "branch" => {
                    self.err_help(
                        k.pos,
                        server("a pipeline of another project"),
                        "write `trigger: {include: path/to/child.yml}`",
                    );
                    return None;
                }
                _ => self.unknown_key(k, &["include", "strategy", "forward"], "`trigger`"),
            }
        }
        if child.file.is_empty() {
            if !entries(v).iter().any(|(k, _)| key(k) == "include") {
                self.err_help(
                    v.pos,
                    format!("`trigger` of {ctx} has no `include`"),
                    "write `trigger: {include: path/to/child.yml}`",
                );
            }
            return None;
        }
        Some(child)
    }

    /// A job's `environment:`: a name, or `{name, action, url, ...}`.
    fn job_environment(&mut self, v: &Node, ctx: &str) -> Option<JobEnvironment> {
        if let NodeKind::Scalar { .. } = v.kind {
            return self
                .string(v, &format!("`environment` of {ctx}"))
                .map(|name| JobEnvironment {
                    name,
                    action: "start".into(),
                    url: None,
                });
        }
        let es = self.map(v, &format!("`environment` of {ctx}"))?;
        const KEYS: &[&str] = &[
            "name",
            "action",
            "url",
            "on_stop",
            "auto_stop_in",
            "deployment_tier",
            "kubernetes",
        ];
        let mut env = JobEnvironment {
            name: String::new(),
            action: "start".into(),
            url: None,
        };
        for (k, val) in es {
            match key(k) {
                "name" => env.name = self.string(val, "`environment: name`").unwrap_or_default(),
                "action" => {
                    let a = self.string(val, "`environment: action`").unwrap_or_default();
                    if ["start", "prepare", "stop", "verify", "access"].contains(&a.as_str()) {
                        env.action = a;
                    } else {
                        self.err_help(
                            val.pos,
                            format!("`{a}` is not an environment action"),
                            "use start, prepare, stop, verify or access",
                        );
                    }
                }
                "url" => env.url = self.string(val, "`environment: url`"),
                "on_stop" | "auto_stop_in" | "deployment_tier" | "kubernetes" => {}
                _ => self.unknown_key(k, KEYS, "`environment`"),
            }
        }
        if env.name.is_empty() {
            self.err(v.pos, format!("`environment` of {ctx} has no `name`"));
            return None;
        }
        Some(env)
    }

    /// GitLab's `only`/`except` as `rules`: `except` first (`when: never`), then `only`, then
    /// (with `only`) a last rule that leaves the job out. Keys under one of them must all match
    /// (refs: any of them; variables: any expression; changes: any path).
    fn only_except(&mut self, only: Option<&Node>, except: Option<&Node>, ctx: &str) -> Vec<Rule> {
        let mut rules = Vec::new();
        if let Some(e) = except
            && let Some(mut r) = self.only_rule(e, &format!("`except` of {ctx}"))
        {
            r.when = Some(When::Never);
            rules.push(r);
        }
        match only {
            Some(o) => {
                if let Some(r) = self.only_rule(o, &format!("`only` of {ctx}")) {
                    rules.push(r);
                }
                rules.push(Rule::otherwise(o.pos, Some(When::Never)));
            }
            None => rules.push(Rule::otherwise(except.map_or(Pos::default(), |e| e.pos), None)),
        }
        rules
    }

    fn only_rule(&mut self, v: &Node, what: &str) -> Option<Rule> {
        let mut all: Vec<Expr> = Vec::new();
        let mut changes = None;
        let refs_expr = |cx: &mut Cx, n: &Node| -> Option<Expr> {
            let refs = cx.strings(n, &format!("refs of {what}"))?;
            let mut any = Vec::new();
            for r in refs {
                match only_ref(&r) {
                    Ok(e) => any.push(e),
                    Err(e) => cx.err(n.pos, format!("{what}: {e}")),
                }
            }
            Some(any_of(any))
        };
        match &v.kind {
            NodeKind::Map(es) => {
                for (k, val) in es {
                    match key(k) {
                        "refs" => all.extend(refs_expr(self, val)),
                        "variables" => {
                            let mut any = Vec::new();
                            for s in self.strings(val, &format!("`variables` of {what}")).unwrap_or_default() {
                                match Expr::parse(&s) {
                                    Ok(e) => any.push(e),
                                    Err(e) => self.err(val.pos, format!("bad expression in {what}: {e}")),
                                }
                            }
                            all.push(any_of(any));
                        }
                        "changes" => {
                            let list = match &val.kind {
                                NodeKind::Map(_) => val.get("paths").unwrap_or(val),
                                _ => val,
                            };
                            changes = self.globs(list, "`changes`");
                        }
                        "kubernetes" => {
                            if val.as_str() == Some("active") {
                                all.push(Expr::Cmp(
                                    Box::new(Expr::Var("KUBECONFIG".into())),
                                    crate::expr::Op::Ne,
                                    Box::new(Expr::Null),
                                ));
                            } else {
                                self.err(val.pos, format!("{what}: `kubernetes` takes only `active`"));
                            }
                        }
                        _ => self.unknown_key(k, &["refs", "variables", "changes", "kubernetes"], what),
                    }
                }
            }
            _ => all.extend(refs_expr(self, v)),
        }
        let condition = match all.len() {
            0 => None,
            1 => all.pop(),
            _ => Some(Expr::And(all)),
        };
        Some(Rule {
            pos: v.pos,
            condition,
            changes,
            exists: None,
            when: None,
            allow_failure: None,
            variables: Vec::new(),
        })
    }

    fn needs(&mut self, v: &Node, ctx: &str) -> Option<Vec<Need>> {
        let NodeKind::Seq(items) = &v.kind else {
            self.err_help(
                v.pos,
                format!("`needs` of {ctx} must be a list"),
                "e.g. `needs: [build]`, or `needs: []` to start at once",
            );
            return None;
        };
        if items.len() > MAX_NEEDS {
            self.err_help(
                v.pos,
                format!(
                    "`needs` of {ctx} lists {} jobs; the limit is {MAX_NEEDS} (as in GitLab)",
                    items.len()
                ),
                "need fewer jobs, e.g. one that gathers their results",
            );
            return None;
        }
        let mut out = Vec::new();
        for i in items {
            match &i.kind {
                NodeKind::Map(es) => {
                    let mut need = Need {
                        job: String::new(),
                        artifacts: true,
                        optional: false,
                        pos: i.pos,
                        matrix: Vec::new(),
                    };
                    for (k, val) in es {
                        match key(k) {
                            "job" => need.job = self.string(val, "`needs: job`").unwrap_or_default(),
                            "artifacts" => need.artifacts = self.bool(val, "`needs: artifacts`").unwrap_or(true),
                            "optional" => need.optional = self.bool(val, "`needs: optional`").unwrap_or(false),
                            "parallel" => need.matrix = self.parallel(val, "a `needs` entry"),
                            // GitLab's needs on other projects and pipelines need a GitLab server.
                            "project" | "pipeline" | "ref" => self.err_help(
                                k.pos,
                                format!("`needs: {}` of {ctx} names another project or pipeline; takt runs one pipeline per run", key(k)),
                                "need a job of this pipeline, or pass what is needed as an artifact of the repository",
                            ),
                            _ => self.unknown_key(k, &["job", "artifacts", "optional", "parallel"], "a `needs` entry"),
                        }
                    }
                    if need.job.is_empty() {
                        self.err(i.pos, format!("a `needs` entry of {ctx} has no `job`"));
                    } else {
                        out.push(need);
                    }
                }
                _ => {
                    if let Some(s) = self.string(i, &format!("`needs` of {ctx}")) {
                        out.push(Need {
                            job: s,
                            artifacts: true,
                            optional: false,
                            pos: i.pos,
                            matrix: Vec::new(),
                        });
                    }
                }
            }
        }
        Some(out)
    }

    fn rules(&mut self, v: &Node, ctx: &str) -> Vec<Rule> {
        let NodeKind::Seq(items) = &v.kind else {
            self.err(v.pos, format!("`rules` of {ctx} must be a list"));
            return Vec::new();
        };
        let mut out = Vec::new();
        for i in items {
            let Some(es) = self.map(i, &format!("a rule of {ctx}")) else {
                continue;
            };
            let mut rule = Rule {
                pos: i.pos,
                condition: None,
                changes: None,
                exists: None,
                when: None,
                allow_failure: None,
                variables: Vec::new(),
            };
            for (k, val) in es {
                match key(k) {
                    "if" => {
                        if let Some(s) = self.string(val, "`if`") {
                            match Expr::parse(&s) {
                                Ok(e) => rule.condition = Some(e),
                                Err(e) => {
                                    let help = if e.contains("the limit is") {
                                        "split the condition over several rules, or drop parentheses \
                                         (docs/pipeline.md lists the limits)"
                                    } else {
                                        "write e.g. `$CI_COMMIT_BRANCH == \"main\"` or `$CI_COMMIT_TAG =~ /^v/`"
                                    };
                                    self.err_help(val.pos, format!("bad `if` expression in {ctx}: {e}"), help)
                                }
                            }
                        }
                    }
                    "changes" => {
                        let list = match &val.kind {
                            NodeKind::Map(_) => match val.get("paths") {
                                Some(p) => p,
                                None => {
                                    self.err(val.pos, "`changes` as a mapping needs `paths`");
                                    continue;
                                }
                            },
                            _ => val,
                        };
                        rule.changes = self.globs(list, "`changes`");
                    }
                    "exists" => rule.exists = self.globs(val, "`exists`"),
                    "when" => {
                        if let Some(s) = self.string(val, "`when`") {
                            match When::parse(&s) {
                                Some(w) => rule.when = Some(w),
                                None => self.err_help(
                                    val.pos,
                                    format!("`{s}` is not a `when`"),
                                    "use on_success, on_failure, always, manual or never",
                                ),
                            }
                        }
                    }
                    "allow_failure" => rule.allow_failure = self.bool(val, "`allow_failure`"),
                    "variables" => rule.variables = self.variables(val, "rule `variables`"),
                    _ => self.unknown_key(
                        k,
                        &["if", "changes", "exists", "when", "allow_failure", "variables"],
                        "a rule",
                    ),
                }
            }
            out.push(rule);
        }
        out
    }

    fn retry(&mut self, v: &Node, what: &str) -> Retry {
        let max_of = |cx: &mut Cx, n: &Node| -> u32 {
            match n.as_str().and_then(|s| s.parse::<u32>().ok()) {
                Some(m) if m <= 10 => m,
                _ => {
                    cx.err_help(
                        n.pos,
                        format!("{what}: expected a number from 0 to 10"),
                        "e.g. `retry: 2`",
                    );
                    0
                }
            }
        };
        match &v.kind {
            NodeKind::Map(es) => {
                let mut r = Retry::default();
                for (k, val) in es {
                    match key(k) {
                        "max" => r.max = max_of(self, val),
                        "when" => {
                            for w in self.strings(val, "`retry: when`").unwrap_or_default() {
                                match w.as_str() {
                                    "always" => r.when.push(RetryWhen::Always),
                                    "script_failure" => r.when.push(RetryWhen::ScriptFailure),
                                    "job_execution_timeout" => r.when.push(RetryWhen::JobExecutionTimeout),
                                    "runner_system_failure" | "unknown_failure" | "stuck_or_timeout_failure" => {
                                        r.when.push(RetryWhen::RunnerSystemFailure)
                                    }
                                    other => self.err_help(
                                        val.pos,
                                        format!("`{other}` is not a retry reason takt knows"),
                                        "use always, script_failure, job_execution_timeout or runner_system_failure",
                                    ),
                                }
                            }
                        }
                        "exit_codes" => {}
                        _ => self.unknown_key(k, &["max", "when", "exit_codes"], "`retry`"),
                    }
                }
                r
            }
            _ => Retry {
                max: max_of(self, v),
                when: Vec::new(),
            },
        }
    }

    fn artifacts(&mut self, v: &Node, ctx: &str) -> Option<Artifacts> {
        let es = self.map(v, &format!("`artifacts` of {ctx}"))?;
        let mut a = Artifacts {
            name: None,
            paths: Vec::new(),
            exclude: Vec::new(),
            when: ArtifactWhen::OnSuccess,
            expire_in: None,
            junit: Vec::new(),
            reports: Vec::new(),
            expose_as: None,
            public: true,
        };
        const KEYS: &[&str] = &[
            "paths",
            "name",
            "when",
            "expire_in",
            "reports",
            "exclude",
            "untracked",
            "expose_as",
            "public",
            "access",
        ];
        for (k, val) in es {
            match key(k) {
                "paths" => a.paths = self.globs(val, "`artifacts: paths`").unwrap_or_default(),
                "exclude" => a.exclude = self.globs(val, "`artifacts: exclude`").unwrap_or_default(),
                "name" => {
                    if let Some(n) = self.string(val, "`artifacts: name`") {
                        // With variables, the expanded name is made safe when the job runs.
                        if !n.contains('$')
                            && let Err(e) = check_artifact_name(&n)
                        {
                            self.err(val.pos, format!("`artifacts: name` {e}"));
                        }
                        a.name = Some(n);
                    }
                }
                "when" => match self.string(val, "`artifacts: when`").as_deref() {
                    Some("on_success") => a.when = ArtifactWhen::OnSuccess,
                    Some("on_failure") => a.when = ArtifactWhen::OnFailure,
                    Some("always") => a.when = ArtifactWhen::Always,
                    Some(o) => self.err_help(
                        val.pos,
                        format!("`{o}` is not an `artifacts: when`"),
                        "use on_success, on_failure or always",
                    ),
                    None => {}
                },
                "expire_in" => {
                    if val.as_str() != Some("never") {
                        a.expire_in = self.expire_in(val);
                    }
                }
                "reports" => {
                    let Some(rs) = self.map(val, "`artifacts: reports`") else {
                        continue;
                    };
                    for (rk, rv) in rs {
                        let kind = key(rk);
                        let what = format!("`reports: {kind}`");
                        if kind == "junit" {
                            a.junit = self.globs(rv, &what).unwrap_or_default();
                        } else if REPORT_TYPES.contains(&kind) {
                            // `coverage_report: {coverage_format, path}`; every other type is paths.
                            let paths = match rv.get("path") {
                                Some(p) if kind == "coverage_report" => self.globs(p, &what),
                                _ => self.globs(rv, &what),
                            };
                            a.reports.push((kind.to_string(), paths.unwrap_or_default()));
                        } else {
                            let mut d = Diagnostic::new(rk.pos, format!("`{kind}` is not a GitLab report type"));
                            if let Some(m) = did_you_mean(kind, REPORT_TYPES) {
                                d = d.help(format!("did you mean `{m}`?"));
                            }
                            self.push(d);
                        }
                    }
                }
                "expose_as" => a.expose_as = self.string(val, "`artifacts: expose_as`"),
                "public" => a.public = self.bool(val, "`artifacts: public`").unwrap_or(true),
                "access" => match self.string(val, "`artifacts: access`").as_deref() {
                    Some("all") | None => {}
                    Some("developer" | "maintainer" | "none") => a.public = false,
                    Some(o) => self.err_help(
                        val.pos,
                        format!("`{o}` is not an `artifacts: access`"),
                        "use all, developer, maintainer or none",
                    ),
                },
                "untracked" => {
                    if self.bool(val, "`artifacts: untracked`") == Some(true) {
                        self.warn(
                            val.pos,
                            "`artifacts: untracked` is not honoured: takt's checkout has no `.git` to tell what is untracked",
                            "list the paths under `paths:`",
                        );
                    }
                }
                _ => self.unknown_key(k, KEYS, "`artifacts`"),
            }
        }
        // Reports are kept with the run: their files are collected with the artifacts.
        for (_, paths) in &a.reports {
            for p in paths {
                if !a.paths.contains(p) {
                    a.paths.push(p.clone());
                }
            }
        }
        if a.paths.is_empty() && a.junit.is_empty() && a.reports.is_empty() {
            self.err_help(
                v.pos,
                format!("`artifacts` of {ctx} has no `paths` and no `reports`"),
                "add `paths: [...]`",
            );
        }
        Some(a)
    }

    /// `artifacts: expire_in`: a duration, GitLab's weeks, months (30 days) and years (365 days)
    /// included.
    fn expire_in(&mut self, v: &Node) -> Option<Duration> {
        let text = self.string(v, "`artifacts: expire_in`")?;
        let mut days = 0u64;
        let mut rest = Vec::new();
        let words: Vec<&str> = text.split_whitespace().collect();
        let mut i = 0;
        while i < words.len() {
            let w = words[i];
            let (num, unit) = match w.find(|c: char| !c.is_ascii_digit()) {
                Some(0) | None => (w, words.get(i + 1).copied().unwrap_or("")),
                Some(at) => (&w[..at], &w[at..]),
            };
            let per = match unit {
                "wk" | "wks" | "week" | "weeks" => 7,
                "mo" | "mos" | "month" | "months" => 30,
                "yr" | "yrs" | "year" | "years" => 365,
                _ => 0,
            };
            match num.parse::<u64>() {
                Ok(n) if per > 0 => {
                    days = days.saturating_add(n.saturating_mul(per));
                    i += if w.len() == num.len() { 2 } else { 1 };
                }
                _ => {
                    rest.push(w);
                    i += 1;
                }
            }
        }
        let rest = rest.join(" ").replace(" and", "");
        let more = if rest.trim().is_empty() {
            Duration::ZERO
        } else {
            match duration::parse(&rest) {
                Ok(d) => d,
                Err(e) => {
                    self.err_help(
                        v.pos,
                        format!("`artifacts: expire_in`: {e}"),
                        "e.g. `30 days`, `2 weeks`, `1 month` or `never`",
                    );
                    return None;
                }
            }
        };
        Some(Duration::from_secs(days.saturating_mul(86400).min(100 * 365 * 86400)) + more)
    }

    /// `cache:`: one cache, or a list of them (GitLab allows four).
    fn caches(&mut self, v: &Node, ctx: &str) -> Vec<Cache> {
        let NodeKind::Seq(items) = &v.kind else {
            return self.cache(v, ctx).into_iter().collect();
        };
        if items.len() > MAX_CACHES {
            self.err_help(
                v.pos,
                format!(
                    "{ctx} lists {} caches; the limit is {MAX_CACHES} (GitLab's)",
                    items.len()
                ),
                "merge the paths of some caches into one",
            );
            return Vec::new();
        }
        let caches: Vec<Cache> = items.iter().filter_map(|c| self.cache(c, ctx)).collect();
        for (i, c) in caches.iter().enumerate() {
            if caches[..i].iter().any(|o| o.key == c.key) {
                self.err_help(
                    v.pos,
                    format!("two caches of {ctx} have the same key; each would overwrite the other"),
                    "give each cache its own `key` (or `key: {files: [...], prefix: ...}`)",
                );
                break;
            }
        }
        caches
    }

    fn cache(&mut self, v: &Node, ctx: &str) -> Option<Cache> {
        let es = self.map(v, &format!("`cache` of {ctx}"))?;
        if es.is_empty() {
            // `cache: {}`: GitLab's idiom for "no cache here" (over a default).
            return None;
        }
        let mut c = Cache {
            key: CacheKey::Literal("default".into()),
            paths: Vec::new(),
            policy: CachePolicy::PullPush,
        };
        for (k, val) in es {
            match key(k) {
                "key" => match &val.kind {
                    NodeKind::Map(ks) => {
                        let mut files = Vec::new();
                        let mut prefix = None;
                        for (kk, kv) in ks {
                            match key(kk) {
                                "files" => files = self.globs(kv, "`cache: key: files`").unwrap_or_default(),
                                "prefix" => prefix = self.string(kv, "`cache: key: prefix`"),
                                _ => self.unknown_key(kk, &["files", "prefix"], "`cache: key`"),
                            }
                        }
                        if files.is_empty() || files.len() > 2 {
                            self.err(val.pos, "`cache: key: files` lists one or two files");
                        }
                        c.key = CacheKey::Files { files, prefix };
                    }
                    _ => {
                        if let Some(s) = self.string(val, "`cache: key`") {
                            if s.contains('/') || s.contains("..") || s.is_empty() {
                                self.err(val.pos, "`cache: key` may not be empty or contain `/` or `..`");
                            }
                            c.key = CacheKey::Literal(s);
                        }
                    }
                },
                "paths" => {
                    // GitLab ignores paths outside the project, with a warning: so does takt.
                    let inside = |p: &str| !p.starts_with('/') && !p.split('/').any(|c| c == "..");
                    if let NodeKind::Seq(ps) = &val.kind {
                        for p in ps.iter().filter(|p| p.as_str().is_some_and(|p| !inside(p))) {
                            self.warn(
                                p.pos,
                                format!(
                                    "cache path `{}` is outside the project; it is not cached",
                                    p.as_str().unwrap_or_default()
                                ),
                                "GitLab ignores it too; cache only paths inside the project",
                            );
                        }
                        let kept = Node {
                            pos: val.pos,
                            kind: NodeKind::Seq(ps.iter().filter(|p| p.as_str().is_none_or(inside)).cloned().collect()),
                        };
                        c.paths = self.globs(&kept, "`cache: paths`").unwrap_or_default();
                    } else {
                        c.paths = self.globs(val, "`cache: paths`").unwrap_or_default();
                    }
                }
                "policy" => match self.string(val, "`cache: policy`").as_deref() {
                    Some("pull-push") => c.policy = CachePolicy::PullPush,
                    Some("pull") => c.policy = CachePolicy::Pull,
                    Some("push") => c.policy = CachePolicy::Push,
                    Some(o) if o.starts_with('$') => self.warn(
                        val.pos,
                        format!("`cache: policy: {o}` is not expanded yet: takt uses pull-push"),
                        "write the policy itself (pull-push, pull or push)",
                    ),
                    Some(o) => self.err_help(
                        val.pos,
                        format!("`{o}` is not a cache policy"),
                        "use pull-push, pull or push",
                    ),
                    None => {}
                },
                "when" => match self.string(val, "`cache: when`").as_deref() {
                    Some("on_success") | None => {}
                    Some(w @ ("on_failure" | "always")) => self.warn(
                        val.pos,
                        format!("`cache: when: {w}` is not honoured yet: takt saves the cache when the job passes"),
                        "nothing to change; a failed job's cache is not saved",
                    ),
                    Some(o) => self.err_help(
                        val.pos,
                        format!("`{o}` is not a `cache: when`"),
                        "use on_success, on_failure or always",
                    ),
                },
                "untracked" | "unprotect" | "fallback_keys" => self.warn(
                    k.pos,
                    format!("`cache: {}` is not honoured yet", key(k)),
                    "the cache works without it",
                ),
                _ => self.unknown_key(k, &["key", "paths", "policy"], "`cache`"),
            }
        }
        if c.paths.is_empty() {
            // No paths (or none inside the project): nothing to cache, as in GitLab.
            return None;
        }
        Some(c)
    }

    fn parallel(&mut self, v: &Node, ctx: &str) -> Vec<Vec<(String, String)>> {
        if let Some(s) = v.as_str() {
            return match s.parse::<usize>() {
                Ok(n) if (1..=MAX_PARALLEL).contains(&n) => (1..=n)
                    .map(|i| {
                        vec![
                            ("CI_NODE_INDEX".to_string(), i.to_string()),
                            ("CI_NODE_TOTAL".to_string(), n.to_string()),
                        ]
                    })
                    .collect(),
                _ => {
                    self.err(
                        v.pos,
                        format!("`parallel` of {ctx} must be a number from 1 to {MAX_PARALLEL} or a `matrix`"),
                    );
                    Vec::new()
                }
            };
        }
        let Some(es) = self.map(v, &format!("`parallel` of {ctx}")) else {
            return Vec::new();
        };
        let mut out: Vec<Vec<(String, String)>> = Vec::new();
        for (k, val) in es {
            if key(k) != "matrix" {
                self.unknown_key(k, &["matrix"], "`parallel`");
                continue;
            }
            let NodeKind::Seq(rows) = &val.kind else {
                self.err(val.pos, "`parallel: matrix` must be a list of mappings");
                continue;
            };
            for row in rows {
                let Some(vars) = self.map(row, "a `matrix` entry") else {
                    continue;
                };
                let mut combos: Vec<Vec<(String, String)>> = vec![Vec::new()];
                for (vk, vv) in vars {
                    let name = key(vk).to_string();
                    if !valid_var_name(&name) {
                        self.err(vk.pos, format!("`{name}` is not a valid variable name"));
                        continue;
                    }
                    let values = self
                        .strings(vv, &format!("matrix variable `{name}`"))
                        .unwrap_or_default();
                    if combos.len().saturating_mul(values.len()) > MAX_PARALLEL {
                        self.err(
                            val.pos,
                            format!("`parallel: matrix` of {ctx} makes more than {MAX_PARALLEL} jobs; the limit is {MAX_PARALLEL}"),
                        );
                        return Vec::new();
                    }
                    let mut next = Vec::new();
                    for c in &combos {
                        for value in &values {
                            let mut c2 = c.clone();
                            c2.push((name.clone(), value.clone()));
                            next.push(c2);
                        }
                    }
                    combos = next;
                }
                out.extend(combos);
                if out.len() > MAX_PARALLEL {
                    self.err(
                        val.pos,
                        format!("`parallel: matrix` of {ctx} makes more than {MAX_PARALLEL} jobs; the limit is {MAX_PARALLEL}"),
                    );
                    return Vec::new();
                }
            }
        }
        out
    }

    /// Needs that name no job, too many needs in all, and cycles over needs plus stage order.
    fn check_graph(&mut self, jobs: &[Job], stages: &[String]) {
        let mut names: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut seen_full: HashMap<&str, Pos> = HashMap::new();
        for (i, j) in jobs.iter().enumerate() {
            if let Some(p) = seen_full.insert(&j.name, j.pos) {
                self.err(
                    j.pos,
                    format!("two jobs are named `{}` (the other at line {})", j.name, p.line),
                );
            }
            names.entry(&j.base).or_default().push(i);
            if j.base != j.name {
                names.entry(&j.name).or_default().push(i);
            }
        }
        let stage_of: HashMap<&str, usize> = stages.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect();
        let stage_idx = |s: &str| stage_of.get(s).copied().unwrap_or(0);
        // Nodes 0..n are the jobs; node n + t is stage barrier t, "every job of a stage before
        // t". A job without `needs` waits for its stage's barrier, and barrier t for barrier
        // t - 1 and the jobs of stage t - 1: the same order as an edge to every job of every
        // earlier stage, with a number of edges that grows with the jobs, not their square.
        let n = jobs.len();
        let mut edges: Vec<Vec<usize>> = vec![Vec::new(); n + stages.len() + 1];
        let mut edge_count = 0usize;
        let mut over = false;
        for (i, j) in jobs.iter().enumerate() {
            let si = stage_idx(&j.stage);
            if let Some(barrier) = edges.get_mut(n + si + 1) {
                barrier.push(i);
            }
            match &j.needs {
                Some(needs) => {
                    for need in needs {
                        match names.get(need.job.as_str()) {
                            Some(ids) => {
                                edge_count += ids.len();
                                if edge_count > MAX_NEED_EDGES && !over {
                                    over = true;
                                    self.err_help(
                                        need.pos,
                                        format!(
                                            "the jobs' `needs` and `dependencies` name more than {MAX_NEED_EDGES} jobs in all \
                                             (a matrix job counts once per instance); the limit is {MAX_NEED_EDGES}"
                                        ),
                                        "need fewer jobs, or smaller matrices",
                                    );
                                }
                                if !over && let Some(e) = edges.get_mut(i) {
                                    e.extend(ids.iter().copied().filter(|x| *x != i || j.base != need.job));
                                }
                            }
                            None => {
                                let mut d = Diagnostic::new(
                                    need.pos,
                                    format!("job `{}` needs `{}`, which is not defined", j.name, need.job),
                                );
                                if self.hints() {
                                    let all: Vec<&str> = names.keys().copied().collect();
                                    if let Some(s) = did_you_mean(&need.job, &all) {
                                        d = d.help(format!("did you mean `{s}`?"));
                                    }
                                }
                                self.push(d);
                            }
                        }
                        if need.job == j.base || need.job == j.name {
                            self.err(need.pos, format!("job `{}` needs itself", j.name));
                        }
                    }
                }
                None => {
                    if let Some(e) = edges.get_mut(i) {
                        e.push(n + si);
                    }
                }
            }
            if let Some(deps) = &j.dependencies {
                for d in deps {
                    match names.get(d.as_str()) {
                        Some(ids) => {
                            edge_count += ids.len();
                            if edge_count > MAX_NEED_EDGES && !over {
                                over = true;
                                self.err(
                                    j.pos,
                                    format!(
                                        "the jobs' `needs` and `dependencies` name more than {MAX_NEED_EDGES} jobs in all; \
                                         the limit is {MAX_NEED_EDGES}"
                                    ),
                                );
                            }
                        }
                        None => self.err(
                            j.pos,
                            format!("`dependencies` of job `{}` names `{d}`, which is not defined", j.name),
                        ),
                    }
                }
            }
        }
        for t in 1..=stages.len() {
            if let Some(e) = edges.get_mut(n + t) {
                e.push(n + t - 1);
            }
        }
        if let Some(cycle) = find_cycle(&edges) {
            // Barriers are not jobs: name only the jobs, closing the loop on the first.
            let mut path: Vec<usize> = cycle.into_iter().filter(|i| *i < n).collect();
            path.dedup();
            if path.len() > 1 && path.first() == path.last() {
                path.pop();
            }
            if let Some(&first) = path.first() {
                path.push(first);
                let shown: Vec<&str> = path
                    .iter()
                    .filter_map(|i| jobs.get(*i))
                    .map(|j| j.name.as_str())
                    .collect();
                let pos = jobs.get(first).map_or(Pos { line: 1, col: 1 }, |j| j.pos);
                self.err_help(
                    pos,
                    format!("the jobs wait for each other in a cycle: {}", shown.join(" → ")),
                    "remove one of these `needs` (jobs without `needs` wait for every earlier stage)",
                );
            }
        }
    }
}

/// A cycle in a dependency graph, as a path that returns to its start.
pub fn find_cycle(edges: &[Vec<usize>]) -> Option<Vec<usize>> {
    // 0 = unvisited, 1 = on stack, 2 = done. Iterative DFS: deep graphs must not overflow.
    let mut state = vec![0u8; edges.len()];
    for start in 0..edges.len() {
        if state[start] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        state[start] = 1;
        while let Some((node, next)) = stack.last().copied() {
            if let Some(&to) = edges.get(node).and_then(|e| e.get(next)) {
                if let Some(top) = stack.last_mut() {
                    top.1 += 1;
                }
                // An edge to no node (a caller's mistake) leads nowhere.
                match state.get(to).copied().unwrap_or(2) {
                    0 => {
                        if let Some(s) = state.get_mut(to) {
                            *s = 1;
                        }
                        stack.push((to, 0));
                    }
                    1 => {
                        let from = stack.iter().position(|(n, _)| *n == to).unwrap_or(0);
                        let mut cycle: Vec<usize> = stack.iter().skip(from).map(|(n, _)| *n).collect();
                        cycle.push(to);
                        return Some(cycle);
                    }
                    _ => {}
                }
            } else {
                if let Some(s) = state.get_mut(node) {
                    *s = 2;
                }
                stack.pop();
            }
        }
    }
    None
}

/// Checks an artifact name or version against the safe set: 1 to 200 of ASCII letters,
/// digits and `. _ - +`, starting with a letter, digit or `_`, with no `..`. Nothing else is
/// allowed (no `/`, spaces, control characters, bidi overrides, look-alike Unicode dots), so
/// a name is shown as it is stored and cannot escape a directory.
pub fn check_artifact_name(n: &str) -> Result<(), String> {
    let shown: String = n.chars().take(60).flat_map(char::escape_default).collect();
    if n.is_empty() {
        Err("may not be empty".into())
    } else if n.len() > 200 {
        Err(format!("is {} bytes long; the limit is 200", n.len()))
    } else if let Some(c) = n
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+')))
    {
        Err(format!(
            "`{shown}` contains {c:?}: use only ASCII letters, digits and . _ - +"
        ))
    } else if n.contains("..") || !n.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
        Err(format!(
            "`{shown}` may not contain `..` and must start with a letter, a digit or `_`"
        ))
    } else {
        Ok(())
    }
}

/// A valid artifact name made from a job name (GitLab job names may hold spaces and `/`):
/// every character outside the safe set becomes `-`, leading dots and dashes are dropped, runs
/// of dots collapse, and it is cut to 200 bytes; `artifact` if nothing is left.
pub fn artifact_name_for_job(job: &str) -> String {
    let mut out = String::with_capacity(job.len());
    for c in job.chars() {
        let c = if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+') {
            c
        } else {
            '-'
        };
        if c == '.' && out.ends_with('.') {
            continue;
        }
        out.push(c);
    }
    let trimmed = out.trim_start_matches(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
    let mut name: String = trimmed.chars().take(200).collect();
    if name.is_empty() {
        name = "artifact".into();
    }
    name
}

/// `YYYY-MM-DD` with a month from 1 to 12 and a day from 1 to 31.
fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r.clone()).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' || !digits(0..4) || !digits(5..7) || !digits(8..10) {
        return false;
    }
    let month: u8 = s[5..7].parse().unwrap_or(0);
    let day: u8 = s[8..10].parse().unwrap_or(0);
    (1..=12).contains(&month) && (1..=31).contains(&day)
}
