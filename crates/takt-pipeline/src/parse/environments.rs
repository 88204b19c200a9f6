//! `environments:`: every key checked, every error with its position.

use super::{Cx, key};
use crate::model::*;
use crate::yaml::{Node, NodeKind};
use std::time::Duration;

const ENV_KEYS: &[&str] = &[
    "driver",
    "strategy",
    "auto",
    "requires",
    "soak",
    "approval",
    "freeze",
    "smoke",
    "variables",
    "secrets",
    "port",
    "instances",
    "start",
    "health",
    "deploy",
    "artifact",
    "url",
    "upstream",
    "reload",
    "on_failure",
    "on_restart",
    "production",
    "remind_every",
    "remediate",
    "remediate_window",
    "escalate_after",
    "protected",
];

impl Cx {
    fn number(&mut self, n: &Node, what: &str, max: u64) -> Option<u64> {
        let v = n.as_str().and_then(|t| t.parse::<u64>().ok()).filter(|v| *v <= max);
        if v.is_none() {
            self.err(n.pos, format!("{what} must be a whole number from 0 to {max}"));
        }
        v
    }

    /// A mapping of named things (`environments`, `checks`): each name checked (letters,
    /// digits, `. _ -`), each value read by `read`.
    pub(super) fn named<T>(
        &mut self,
        section: &str,
        what: &str,
        n: &Node,
        mut read: impl FnMut(&mut Cx, &str, &Node, &Node) -> Option<T>,
    ) -> Vec<T> {
        let mut out = Vec::new();
        let Some(entries) = self.map(n, section) else {
            return out;
        };
        for (k, v) in entries {
            let name = key(k).to_string();
            if crate::check_artifact_name(&name).is_err() || name.contains(char::is_whitespace) {
                self.err(
                    k.pos,
                    format!("{what} name `{name}` is not allowed: use letters, digits, . _ -"),
                );
                continue;
            }
            if let Some(x) = read(self, &name, k, v) {
                out.push(x);
            }
        }
        out
    }

    pub(super) fn environments(&mut self, n: &Node) -> Vec<Environment> {
        let out = self.named("`environments`", "environment", n, Cx::environment);
        let names: Vec<String> = out.iter().map(|e| e.name.clone()).collect();
        for e in &out {
            for r in &e.requires {
                if !names.contains(r) {
                    self.err(
                        e.pos,
                        format!("environment `{}` requires `{r}`, which is not defined", e.name),
                    );
                } else if *r == e.name {
                    self.err(e.pos, format!("environment `{}` requires itself", e.name));
                }
            }
        }
        out
    }

    fn environment(&mut self, name: &str, k: &Node, v: &Node) -> Option<Environment> {
        let fields = self.map(v, &format!("environment `{name}`"))?;
        let mut e = Environment {
            name: name.to_string(),
            driver: Driver::Process,
            strategy: Strategy::Recreate,
            auto: false,
            requires: Vec::new(),
            soak: None,
            manual_approval: false,
            freeze: Vec::new(),
            smoke: Vec::new(),
            variables: Vec::new(),
            secrets: Vec::new(),
            port: None,
            instances: 1,
            start: None,
            health: "/healthz".into(),
            deploy: None,
            artifact: None,
            url: None,
            upstream: None,
            reload: None,
            pause_on_failure: false,
            continue_on_restart: false,
            production: None,
            remind_every: None,
            remediate: Remedy::None,
            remediate_window: DEFAULT_REMEDIATE_WINDOW,
            escalate_after: DEFAULT_ESCALATE_AFTER,
            protected: Vec::new(),
            pos: k.pos,
        };
        let ctx = format!("environment `{name}`");
        for (fk, fv) in fields {
            match key(fk) {
                "driver" => match self.string(fv, "`driver`").as_deref() {
                    Some("command") => e.driver = Driver::Command,
                    Some("process") => e.driver = Driver::Process,
                    Some("nginx") => e.driver = Driver::Nginx,
                    Some("kubernetes") => self.err(fv.pos, "the `kubernetes` driver is not supported yet"),
                    Some(other) => self.err_help(
                        fv.pos,
                        format!("unknown driver `{other}`"),
                        "use command, process or nginx",
                    ),
                    None => {}
                },
                "strategy" => {
                    if let Some(s) = self.strategy(fv) {
                        e.strategy = s;
                    }
                }
                "auto" => e.auto = self.bool(fv, "`auto`").unwrap_or(false),
                "requires" => e.requires = self.strings(fv, "`requires`").unwrap_or_default(),
                "protected" => {
                    e.protected = self.strings(fv, "`protected`").unwrap_or_default();
                    if e.protected.is_empty() {
                        self.err_help(
                            fv.pos,
                            "`protected` names no token, so nobody could deploy here",
                            "list the token names that may deploy, promote, approve and roll back here",
                        );
                    }
                }
                "soak" => e.soak = self.duration(fv, "`soak`"),
                "approval" => match self.string(fv, "`approval`").as_deref() {
                    Some("manual") => e.manual_approval = true,
                    Some("none") => e.manual_approval = false,
                    Some(other) => self.err(fv.pos, format!("`approval` is `manual` or `none`, not `{other}`")),
                    None => {}
                },
                "freeze" => e.freeze = self.freezes(fv),
                "smoke" => {
                    if let NodeKind::Seq(items) = &fv.kind {
                        e.smoke = items.iter().filter_map(|i| self.check(i, "a smoke check")).collect();
                    } else {
                        self.err(fv.pos, "`smoke` must be a list of checks");
                    }
                }
                "variables" => e.variables = self.variables(fv, "`variables`"),
                "secrets" => e.secrets = self.strings(fv, "`secrets`").unwrap_or_default(),
                "port" => e.port = self.number(fv, "`port`", 65535).map(|p| p as u16),
                "instances" => e.instances = self.number(fv, "`instances`", 1000).map_or(1, |n| n.max(1) as u32),
                "start" => e.start = self.string(fv, "`start`"),
                "health" => {
                    if let Some(h) = self.string(fv, "`health`") {
                        if !h.starts_with('/') {
                            self.err(fv.pos, "`health` is a path starting with /");
                        }
                        e.health = h;
                    }
                }
                "deploy" => e.deploy = self.string(fv, "`deploy`"),
                "artifact" => e.artifact = self.string(fv, "`artifact`"),
                "url" => {
                    if let Some(u) = self.string(fv, "`url`") {
                        if !(u.starts_with("http://") || u.starts_with("https://")) {
                            self.err(
                                fv.pos,
                                "`url` is where the environment answers, e.g. http://127.0.0.1:8080",
                            );
                        }
                        e.url = Some(u.trim_end_matches('/').to_string());
                    }
                }
                "upstream" => e.upstream = self.string(fv, "`upstream`"),
                "reload" => e.reload = self.string(fv, "`reload`"),
                "on_failure" => match self.string(fv, "`on_failure`").as_deref() {
                    Some("rollback") => e.pause_on_failure = false,
                    Some("pause") => e.pause_on_failure = true,
                    Some(other) => self.err(fv.pos, format!("`on_failure` is `rollback` or `pause`, not `{other}`")),
                    None => {}
                },
                "on_restart" => match self.string(fv, "`on_restart`").as_deref() {
                    Some("rollback") => e.continue_on_restart = false,
                    Some("continue") => e.continue_on_restart = true,
                    Some(other) => self.err(
                        fv.pos,
                        format!("`on_restart` is `rollback` or `continue`, not `{other}`"),
                    ),
                    None => {}
                },
                "production" => e.production = self.bool(fv, "`production`"),
                "remind_every" => {
                    e.remind_every = self.duration(fv, "`remind_every`");
                    if e.remind_every.is_some_and(|d| d < Duration::from_secs(1)) {
                        self.err(fv.pos, "`remind_every` must be at least 1s");
                        e.remind_every = None;
                    }
                }
                "remediate" => e.remediate = self.remedy(fv),
                k @ ("remediate_window" | "escalate_after") => {
                    if let Some(d) = self.duration(fv, &format!("`{k}`")) {
                        if d < Duration::from_secs(1) {
                            self.err(fv.pos, format!("`{k}` must be at least 1s"));
                        } else if k == "remediate_window" {
                            e.remediate_window = d;
                        } else {
                            e.escalate_after = d;
                        }
                    }
                }
                _ => self.unknown_key(fk, ENV_KEYS, &ctx),
            }
        }
        if e.remediate == Remedy::Restart && e.driver == Driver::Command {
            self.err_help(
                k.pos,
                format!(
                    "environment `{name}` has `remediate: restart`, but the command driver runs no instances to restart"
                ),
                "use `remediate: rollback`, or `remediate: {command: ...}` with a command that restarts the service",
            );
        }
        if e.driver == Driver::Command && e.deploy.is_none() {
            self.err_help(
                k.pos,
                format!("environment `{name}` uses the command driver but has no `deploy` script"),
                "add `deploy: ./deploy.sh`",
            );
        }
        if e.driver == Driver::Nginx && (e.upstream.is_none() || e.reload.is_none()) {
            self.err_help(
                k.pos,
                format!("environment `{name}` uses the nginx driver but lacks `upstream` or `reload`"),
                "add `upstream: /etc/nginx/takt/app.conf` (the file takt writes) and `reload: nginx -s reload`",
            );
        }
        if e.driver == Driver::Process && e.port.is_none() {
            self.err_help(
                k.pos,
                format!("environment `{name}` needs a `port` (where takt's proxy receives its traffic)"),
                "add e.g. `port: 8080`",
            );
        }
        Some(e)
    }

    /// `remediate: rollback | restart | none | {command: SCRIPT}`.
    fn remedy(&mut self, n: &Node) -> Remedy {
        let help = "write `remediate: rollback`, `restart`, `none`, or `{command: ./fix.sh}`";
        match &n.kind {
            NodeKind::Map(fields) => {
                let mut out = Remedy::None;
                for (k, v) in fields {
                    match key(k) {
                        "command" => {
                            if let Some(c) = self.string(v, "`remediate.command`") {
                                if c.trim().is_empty() {
                                    self.err(v.pos, "`remediate.command` is empty");
                                } else {
                                    out = Remedy::Command(c);
                                }
                            }
                        }
                        _ => self.unknown_key(k, &["command"], "`remediate`"),
                    }
                }
                if out == Remedy::None && fields.is_empty() {
                    self.err_help(n.pos, "`remediate` is an empty mapping", help);
                }
                out
            }
            _ => match self.string(n, "`remediate`").as_deref() {
                Some("rollback") => Remedy::Rollback,
                Some("restart") => Remedy::Restart,
                Some("none") => Remedy::None,
                Some(other) => {
                    self.err_help(
                        n.pos,
                        format!("`remediate` is rollback, restart, none or {{command: ...}}, not `{other}`"),
                        help,
                    );
                    Remedy::None
                }
                None => Remedy::None,
            },
        }
    }

    fn strategy(&mut self, n: &Node) -> Option<Strategy> {
        if let Some(s) = n.as_str().filter(|_| !matches!(n.kind, NodeKind::Map(_))) {
            return match s {
                "recreate" => Some(Strategy::Recreate),
                "rolling" => Some(Strategy::Rolling { batch: 1, pause: None }),
                "blue_green" => Some(Strategy::BlueGreen {
                    preview_port: None,
                    keep_old: Duration::from_secs(600),
                }),
                "canary" => {
                    self.err_help(
                        n.pos,
                        "a canary needs steps",
                        "write `canary: {steps: [{set_weight: 10}, {pause: 1m}]}`",
                    );
                    None
                }
                other => {
                    self.err_help(
                        n.pos,
                        format!("unknown strategy `{other}`"),
                        "use recreate, rolling, canary or blue_green",
                    );
                    None
                }
            };
        }
        let fields = self.map(n, "`strategy`")?;
        let [(k, v)] = fields else {
            self.err(n.pos, "`strategy` names one strategy");
            return None;
        };
        let sub = |cx: &mut Cx, allowed: &[&str], what: &str| -> Vec<(Node, Node)> {
            match &v.kind {
                NodeKind::Map(f) => f
                    .iter()
                    .filter(|(fk, _)| {
                        let ok = allowed.contains(&key(fk));
                        if !ok {
                            cx.unknown_key(fk, allowed, what);
                        }
                        ok
                    })
                    .cloned()
                    .collect(),
                _ if v.is_null() => Vec::new(),
                _ => {
                    cx.err(v.pos, format!("{what} must be a mapping"));
                    Vec::new()
                }
            }
        };
        match key(k) {
            "recreate" => Some(Strategy::Recreate),
            "rolling" => {
                let (mut batch, mut pause) = (1, None);
                for (fk, fv) in sub(self, &["batch", "pause"], "`rolling`") {
                    match key(&fk) {
                        "batch" => batch = self.number(&fv, "`rolling.batch`", 1000).map_or(1, |b| b.max(1) as u32),
                        _ => pause = self.duration(&fv, "`rolling.pause`"),
                    }
                }
                Some(Strategy::Rolling { batch, pause })
            }
            "blue_green" => {
                let (mut preview_port, mut keep_old) = (None, Duration::from_secs(600));
                for (fk, fv) in sub(self, &["preview_port", "keep_old"], "`blue_green`") {
                    match key(&fk) {
                        "preview_port" => preview_port = self.number(&fv, "`preview_port`", 65535).map(|p| p as u16),
                        _ => keep_old = self.duration(&fv, "`keep_old`").unwrap_or(keep_old),
                    }
                }
                Some(Strategy::BlueGreen { preview_port, keep_old })
            }
            "canary" => {
                let (mut steps, mut deadline) = (Vec::new(), None);
                for (fk, fv) in sub(self, &["steps", "progress_deadline"], "`canary`") {
                    match key(&fk) {
                        "steps" => match &fv.kind {
                            NodeKind::Seq(items) => steps = items.iter().filter_map(|i| self.canary_step(i)).collect(),
                            _ => self.err(fv.pos, "`canary.steps` must be a list"),
                        },
                        _ => deadline = self.duration(&fv, "`progress_deadline`"),
                    }
                }
                if steps.is_empty() {
                    self.err(k.pos, "a canary needs at least one step");
                }
                Some(Strategy::Canary {
                    steps,
                    progress_deadline: deadline,
                })
            }
            other => {
                self.err_help(
                    k.pos,
                    format!("unknown strategy `{other}`"),
                    "use recreate, rolling, canary or blue_green",
                );
                None
            }
        }
    }

    fn canary_step(&mut self, n: &Node) -> Option<CanaryStep> {
        let fields = self.map(n, "a canary step")?;
        let [(k, v)] = fields else {
            self.err(n.pos, "a canary step is one of set_weight, pause, analysis");
            return None;
        };
        match key(k) {
            "set_weight" => self
                .number(v, "`set_weight`", 100)
                .map(|w| CanaryStep::SetWeight(w as u8)),
            "pause" => {
                let indefinite = v.is_null() || matches!(&v.kind, NodeKind::Map(m) if m.is_empty());
                if indefinite {
                    Some(CanaryStep::Pause(None))
                } else {
                    self.duration(v, "`pause`").map(|d| CanaryStep::Pause(Some(d)))
                }
            }
            "analysis" => self.analysis(v).map(CanaryStep::Analysis),
            other => {
                self.err_help(
                    k.pos,
                    format!("unknown canary step `{other}`"),
                    "use set_weight, pause or analysis",
                );
                None
            }
        }
    }

    fn analysis(&mut self, n: &Node) -> Option<AnalysisStep> {
        let fields = self.map(n, "`analysis`")?;
        let mut a = AnalysisStep {
            interval: Duration::from_secs(10),
            count: 1,
            initial_delay: Duration::ZERO,
            failure_limit: 0,
            inconclusive_limit: 0,
            consecutive_error_limit: 4,
            metric: Metric::Proxy,
            success_condition: None,
            failure_condition: None,
        };
        const KEYS: &[&str] = &[
            "interval",
            "count",
            "initial_delay",
            "failure_limit",
            "inconclusive_limit",
            "consecutive_error_limit",
            "metric",
            "success_condition",
            "failure_condition",
        ];
        for (fk, fv) in fields {
            let small = |cx: &mut Cx, what: &str| cx.number(fv, what, 1_000_000).map(|x| x as u32);
            match key(fk) {
                "interval" => a.interval = self.duration(fv, "`interval`").unwrap_or(a.interval),
                "initial_delay" => a.initial_delay = self.duration(fv, "`initial_delay`").unwrap_or_default(),
                "count" => a.count = small(self, "`count`").unwrap_or(1).max(1),
                "failure_limit" => a.failure_limit = small(self, "`failure_limit`").unwrap_or(0),
                "inconclusive_limit" => a.inconclusive_limit = small(self, "`inconclusive_limit`").unwrap_or(0),
                "consecutive_error_limit" => {
                    a.consecutive_error_limit = small(self, "`consecutive_error_limit`").unwrap_or(4)
                }
                "success_condition" => a.success_condition = self.string(fv, "`success_condition`"),
                "failure_condition" => a.failure_condition = self.string(fv, "`failure_condition`"),
                "metric" => {
                    if let Some(m) = self.metric(fv) {
                        a.metric = m;
                    }
                }
                _ => self.unknown_key(fk, KEYS, "`analysis`"),
            }
        }
        if a.success_condition.is_none()
            && a.failure_condition.is_none()
            && !matches!(a.metric, Metric::Http(_) | Metric::Command(_))
        {
            self.err_help(
                n.pos,
                "an analysis needs a `success_condition` or a `failure_condition`",
                "e.g. `success_condition: error_rate < 0.01`",
            );
        }
        Some(a)
    }

    fn metric(&mut self, n: &Node) -> Option<Metric> {
        if n.as_str() == Some("proxy") {
            return Some(Metric::Proxy);
        }
        let fields = self.map(n, "`metric`")?;
        let [(k, v)] = fields else {
            self.err(n.pos, "`metric` is one of proxy, prometheus, http, check, command");
            return None;
        };
        match key(k) {
            "prometheus" => {
                let f = self.map(v, "`prometheus`")?;
                let (mut url, mut query) = (None, None);
                for (fk, fv) in f {
                    match key(fk) {
                        "url" => url = self.string(fv, "`url`"),
                        "query" => query = self.string(fv, "`query`"),
                        _ => self.unknown_key(fk, &["url", "query"], "`prometheus`"),
                    }
                }
                match (url, query) {
                    (Some(url), Some(query)) => Some(Metric::Prometheus { url, query }),
                    _ => {
                        self.err(v.pos, "`prometheus` needs `url` and `query`");
                        None
                    }
                }
            }
            "http" | "check" => self.check(n, "`metric`").map(Metric::Http),
            "command" => self.string(v, "`command`").map(Metric::Command),
            other => {
                self.err_help(
                    k.pos,
                    format!("unknown metric `{other}`"),
                    "use proxy, prometheus, http, check or command",
                );
                None
            }
        }
    }

    fn check(&mut self, n: &Node, what: &str) -> Option<Check> {
        let fields = self.map(n, what)?;
        let [(k, v)] = fields else {
            self.err(
                n.pos,
                format!("{what} is one of `http: {{...}}`, `command: ...` or `check: NAME`"),
            );
            return None;
        };
        match key(k) {
            "command" => self.string(v, "`command`").map(Check::Command),
            // Resolved once `checks:` is read (see `Cx::resolve_checks`).
            "check" => self
                .string(v, "`check`")
                .map(|name| Check::Health(Box::new(HealthCheck::named(&name, v.pos)))),
            "http" => {
                let f = self.map(v, "`http`")?;
                let (mut path, mut status, mut body, mut latency) = (None, 200u16, None, None);
                for (fk, fv) in f {
                    match key(fk) {
                        "path" => path = self.string(fv, "`path`"),
                        "status" => status = self.number(fv, "`status`", 599).map_or(200, |s| s as u16),
                        "body" => body = self.string(fv, "`body`"),
                        "max_latency" => latency = self.duration(fv, "`max_latency`"),
                        _ => self.unknown_key(fk, &["path", "status", "body", "max_latency"], "`http`"),
                    }
                }
                let Some(path) = path.filter(|p| p.starts_with('/')) else {
                    self.err(v.pos, "an http check needs a `path` starting with /");
                    return None;
                };
                Some(Check::Http {
                    path,
                    status,
                    body_contains: body,
                    max_latency: latency,
                })
            }
            other => {
                self.err_help(k.pos, format!("unknown check `{other}`"), "use http, command or check");
                None
            }
        }
    }

    fn freezes(&mut self, n: &Node) -> Vec<Freeze> {
        let NodeKind::Seq(items) = &n.kind else {
            self.err(n.pos, "`freeze` must be a list of windows");
            return Vec::new();
        };
        let mut out = Vec::new();
        for i in items {
            let Some(f) = self.map(i, "a freeze window") else {
                continue;
            };
            let (mut cron, mut duration, mut timezone) = (None, None, None);
            for (fk, fv) in f {
                match key(fk) {
                    "cron" => {
                        cron = self.string(fv, "`cron`");
                        if let Some(c) = &cron
                            && let Err(e) = CronSchedule::check(c)
                        {
                            self.err(fv.pos, format!("`{c}` is not a cron expression: {e}"));
                        }
                    }
                    "duration" => duration = self.duration(fv, "`duration`"),
                    "timezone" => timezone = self.string(fv, "`timezone`"),
                    _ => self.unknown_key(fk, &["cron", "duration", "timezone"], "a freeze window"),
                }
            }
            match (cron, duration) {
                (Some(cron), Some(duration)) => out.push(Freeze {
                    cron,
                    duration,
                    timezone,
                }),
                _ => self.err_help(
                    i.pos,
                    "a freeze window needs `cron` (when it starts) and `duration`",
                    "e.g. `{cron: \"0 16 * * FRI\", duration: 64h}`",
                ),
            }
        }
        out
    }
}
