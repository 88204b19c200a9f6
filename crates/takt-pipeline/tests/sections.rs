//! `schedules:` and `notify:`: what they accept and how they refuse.

#![allow(clippy::unwrap_used)]

fn errors(yml: &str) -> String {
    match takt_pipeline::parse("takt.yml", yml.as_bytes()) {
        Ok(_) => String::new(),
        Err(d) => d.to_string(),
    }
}

#[test]
fn schedules_take_a_cron_string_or_a_mapping() {
    let p = takt_pipeline::parse(
        "takt.yml",
        b"schedules:\n  nightly: \"0 3 * * *\"\n  weekly: {cron: \"0 4 * * MON\", branch: release, timezone: Europe/Berlin}\njobs:\n  a: {script: [true]}\n",
    )
    .unwrap();
    assert_eq!(p.schedules.len(), 2);
    assert_eq!(p.schedules[1].branch.as_deref(), Some("release"));
    assert_eq!(p.schedules[1].timezone.as_deref(), Some("Europe/Berlin"));
    assert!(p.reserved.is_empty());
}

#[test]
fn bad_schedules_and_subscribers_say_where_and_why() {
    let e = errors("schedules:\n  nightly: \"61 3 * * *\"\njobs:\n  a: {script: [true]}\n");
    assert!(
        e.contains("takt.yml:2:12") && e.contains("not a cron expression"),
        "{e}"
    );
    let e = errors("schedules:\n  nightly: {branch: main}\njobs:\n  a: {script: [true]}\n");
    assert!(e.contains("has no `cron`"), "{e}");
    let e = errors("schedules:\n  nightly: {cron: \"0 3 * * *\", brnch: x}\njobs:\n  a: {script: [true]}\n");
    assert!(e.contains("brnch"), "{e}");
    let e = errors("notify: {webhook: http://x}\njobs:\n  a: {script: [true]}\n");
    assert!(e.contains("`notify` must be a list"), "{e}");
    let e = errors("notify:\n  - webhook: ftp://x\njobs:\n  a: {script: [true]}\n");
    assert!(e.contains("takt.yml:2:14") && e.contains("http://"), "{e}");
    let e = errors("notify:\n  - events: [run_finished]\njobs:\n  a: {script: [true]}\n");
    assert!(e.contains("needs `webhook: URL` or `slack: URL`"), "{e}");
    let p = takt_pipeline::parse(
        "takt.yml",
        b"notify:\n  - webhook: http://127.0.0.1:1/x\n    events: [run_finished]\n  - slack: https://hooks.example/y\njobs:\n  a: {script: [true]}\n",
    )
    .unwrap();
    assert_eq!(p.notify.len(), 2);
    assert!(p.notify[1].slack);
}

const ENVS: &str = r#"
environments:
  staging:
    port: 8080
    auto: true
    instances: 2
    start: python3 app.py
    smoke:
      - http: {path: /healthz, status: 200, body: ok, max_latency: 200ms}
      - command: ./smoke.sh
  production:
    port: 9090
    requires: [staging]
    soak: 10m
    approval: manual
    freeze:
      - {cron: "0 16 * * FRI", duration: 64h, timezone: Europe/Berlin}
    secrets: [DB_PASSWORD]
    strategy:
      canary:
        progress_deadline: 10m
        steps:
          - set_weight: 10
          - analysis: {interval: 1s, count: 5, failure_limit: 1, success_condition: "error_rate < 0.01"}
          - pause: 1m
          - set_weight: 50
          - pause: {}
  preview:
    port: 7070
    strategy: {blue_green: {preview_port: 7071, keep_old: 30m}}
  script:
    driver: command
    deploy: ./deploy.sh
    strategy: {rolling: {batch: 2}}
jobs:
  a: {script: [true]}
"#;

#[test]
fn environments_parse_with_strategies_checks_and_gates() {
    use takt_pipeline::{CanaryStep, Check, Driver, Strategy};
    let p = takt_pipeline::parse("takt.yml", ENVS.as_bytes()).unwrap();
    assert_eq!(p.environments.len(), 4);
    let staging = &p.environments[0];
    assert!(staging.auto && staging.instances == 2 && staging.driver == Driver::Process);
    assert!(
        matches!(&staging.smoke[0], Check::Http { status: 200, body_contains: Some(b), max_latency: Some(_), .. } if b == "ok")
    );
    let prod = &p.environments[1];
    assert_eq!(prod.requires, ["staging"]);
    assert!(prod.manual_approval && prod.soak == Some(std::time::Duration::from_secs(600)));
    assert_eq!(prod.freeze[0].timezone.as_deref(), Some("Europe/Berlin"));
    let Strategy::Canary {
        steps,
        progress_deadline,
    } = &prod.strategy
    else {
        panic!("{:?}", prod.strategy)
    };
    assert_eq!(progress_deadline.map(|d| d.as_secs()), Some(600));
    assert_eq!(steps[0], CanaryStep::SetWeight(10));
    assert!(
        matches!(&steps[1], CanaryStep::Analysis(a) if a.count == 5 && a.failure_limit == 1 && a.consecutive_error_limit == 4)
    );
    assert_eq!(steps[4], CanaryStep::Pause(None));
    assert!(matches!(
        p.environments[2].strategy,
        Strategy::BlueGreen {
            preview_port: Some(7071),
            ..
        }
    ));
    assert!(matches!(
        p.environments[3].strategy,
        Strategy::Rolling { batch: 2, pause: None }
    ));
    // Deployments act on them: nothing is reported as not supported.
    assert!(p.reserved.is_empty(), "{:?}", p.reserved);
}

#[test]
fn bad_environments_say_where_and_why() {
    let cases = [
        (
            "environments:\n  s: {port: 1, driver: docker}\n",
            "unknown driver `docker`",
        ),
        ("environments:\n  s: {driver: process}\n", "needs a `port`"),
        ("environments:\n  s: {driver: command}\n", "no `deploy` script"),
        (
            "environments:\n  s: {port: 1, requires: [qa]}\n",
            "requires `qa`, which is not defined",
        ),
        (
            "environments:\n  s: {port: 1, strategy: canary}\n",
            "a canary needs steps",
        ),
        (
            "environments:\n  s: {port: 1, strategy: {canary: {steps: [{set_weight: 150}]}}}\n",
            "`set_weight` must be a whole number from 0 to 100",
        ),
        (
            "environments:\n  s: {port: 1, strategy: {canary: {steps: [{analysis: {count: 2}}]}}}\n",
            "needs a `success_condition`",
        ),
        (
            "environments:\n  s: {port: 1, strategy: {canary: {steps: [{wait: 1m}]}}}\n",
            "unknown canary step `wait`",
        ),
        (
            "environments:\n  s: {port: 1, freeze: [{cron: \"0 99 * * *\", duration: 1h}]}\n",
            "not a cron expression",
        ),
        (
            "environments:\n  s: {port: 1, smoke: [{http: {status: 200}}]}\n",
            "needs a `path`",
        ),
        (
            "environments:\n  s: {port: 1, instancse: 2}\n",
            "did you mean `instances`?",
        ),
    ];
    for (yml, want) in cases {
        let e = errors(&format!("{yml}jobs:\n  a: {{script: [true]}}\n"));
        assert!(e.contains(want), "{yml}\n→ {e}");
        assert!(
            e.contains("takt.yml:2:") || e.contains("takt.yml:3:"),
            "a position: {e}"
        );
    }
}

#[test]
fn checks_parse_in_gatus_terms_with_their_defaults() {
    let yml = "environments:\n  prod: {port: 8080}\njobs:\n  a: {script: [x]}\nchecks:\n  api:\n    environment: prod\n    http: {path: /healthz}\n    interval: 30s\n    conditions:\n      - \"[STATUS] == 200\"\n      - \"[BODY].status == ok\"\n      - '[RESPONSE_TIME] < 500'\n  db:\n    tcp: {host: 127.0.0.1, port: 5432}\n  backup:\n    heartbeat: {every: 24h}\n  dns:\n    dns: {name: example.org, type: aaaa}\n    conditions: [\"[DNS_RCODE] == NOERROR\"]\n";
    let p = takt_pipeline::parse("takt.yml", yml.as_bytes()).unwrap();
    let c = |n: &str| p.checks.iter().find(|c| c.name == n).unwrap();
    let api = c("api");
    assert_eq!(api.environment.as_deref(), Some("prod"));
    assert_eq!(api.interval, std::time::Duration::from_secs(30));
    assert_eq!((api.failure_threshold, api.success_threshold), (3, 2));
    assert_eq!(api.conditions.len(), 3);
    assert!(
        matches!(&api.probe, takt_pipeline::ProbeSpec::Http { path: Some(p), method, .. } if p == "/healthz" && method == "GET")
    );
    // Without conditions a check passes when it connects, as in Gatus.
    assert_eq!(c("db").conditions, ["[CONNECTED] == true"]);
    assert!(
        matches!(c("backup").probe, takt_pipeline::ProbeSpec::Heartbeat { grace, .. } if grace == std::time::Duration::from_secs(8640))
    );
    assert!(matches!(&c("dns").probe, takt_pipeline::ProbeSpec::Dns { record, .. } if record == "AAAA"));
    // One missed beat fails a heartbeat and one beat brings it back, unless it says otherwise.
    assert_eq!((c("backup").failure_threshold, c("backup").success_threshold), (1, 1));
    assert!(p.reserved.is_empty(), "{:?}", p.reserved);
}

#[test]
fn bad_checks_say_where_and_why() {
    let head = "jobs:\n  a: {script: [x]}\nchecks:\n";
    for (body, want) in [
        // The condition's own column, after the quote: line 6, column 9 + 1 + 0.
        (
            "  c:\n    http: {url: http://x}\n    conditions:\n      - \"[STAUTS] == 200\"\n",
            "takt.yml:7:10: error: invalid condition `[STAUTS] == 200`: unknown placeholder [STAUTS]: did you mean [STATUS]?",
        ),
        (
            "  c:\n    http: {url: http://x}\n    conditions:\n      - '[BODY].a[x] == 1'\n",
            "takt.yml:7:19: error: invalid condition",
        ),
        (
            "  c:\n    tcp: {host: h, port: 1}\n    conditions: [\"[STATUS] == 200\"]\n",
            "a tcp check has no [STATUS]",
        ),
        ("  c:\n    interval: 1m\n", "check `c` has no probe"),
        (
            "  c:\n    http: \"http://x\"\n",
            "takt.yml:5:11: error: `http` must be a mapping, found a scalar",
        ),
        (
            "  c:\n    tcp: {host: h, port: 1}\n    command: x\n",
            "has more than one probe",
        ),
        ("  c:\n    http: {path: /h}\n", "names no `environment`"),
        (
            "  c:\n    environment: nowhere\n    http: {path: /h}\n",
            "names environment `nowhere`, which is not defined",
        ),
        (
            "  c:\n    http: {url: ftp://x}\n",
            "must start with http:// or https://",
        ),
        (
            "  c:\n    http: {url: http://x, path: /x}\n",
            "needs a `url` or a `path`, not both",
        ),
        ("  c:\n    tcp: {host: h, port: 0}\n", "a port number from 1 to 65535"),
        ("  c:\n    heartbeat: {every: 5000000d}\n", "`every` is at most 366d"),
        (
            "  c:\n    heartbeat: {every: 1h}\n    conditions: [\"[CONNECTED] == true\"]\n",
            "is a heartbeat: it has no `conditions`",
        ),
        (
            "  c:\n    http: {url: http://x}\n    failure_threshold: 0\n",
            "`failure_threshold` must be a whole number from 1 to 1000",
        ),
        (
            "  c:\n    http: {url: http://x}\n    intervall: 1m\n",
            "did you mean `interval`?",
        ),
        ("  c:\n    dns: {name: x, type: ZZ}\n", "unknown DNS record type `ZZ`"),
        (
            "  c:\n    tcp: {host: h, port: 1}\n    degraded_when: [\"[STATUS] == 429\"]\n",
            "a tcp check has no [STATUS]",
        ),
        (
            "  c:\n    heartbeat: {every: 1h}\n    degraded_latency: 1s\n",
            "it has no latency, so no `degraded_latency`",
        ),
        (
            "  c:\n    http: {url: http://x}\n    degraded_when: \"[STATUS] == 429\"\n",
            "`degraded_when` must be a list",
        ),
    ] {
        let err = errors(&format!("{head}{body}"));
        assert!(err.contains(want), "{body}\n→ {err}");
    }
    // A probe that does not parse says so, without a second error that there is none.
    let err = errors(&format!("{head}  c:\n    http: \"http://x\"\n"));
    assert_eq!(err.matches("error:").count(), 1, "{err}");
    // Nor does an `every` that does not parse get a second error that there is none.
    let err = errors(&format!("{head}  c:\n    heartbeat: {{every: 0s}}\n"));
    assert_eq!(err.matches("error:").count(), 1, "{err}");
    assert!(err.contains("`every` must be more than zero"), "{err}");
}

#[test]
fn a_metric_check_compares_a_series_of_a_prometheus_page() {
    let yml = "environments:\n  prod: {port: 8080}\njobs:\n  a: {script: [x]}\nchecks:\n  queue:\n    environment: prod\n    metric: {name: jobs_queued, labels: {queue: mail}, op: \"<\", value: 100}\n  node:\n    metric: {url: \"http://10.0.0.5:9100/metrics\", name: up, op: \"==\", value: 1}\n    conditions: [\"[STATUS] == 200\"]\n";
    let p = takt_pipeline::parse("takt.yml", yml.as_bytes()).unwrap();
    let queue = &p.checks[0];
    assert!(
        matches!(&queue.probe, takt_pipeline::ProbeSpec::Metric { path: Some(p), url: None, name, labels, .. }
            if p == "/metrics" && name == "jobs_queued" && labels == &[("queue".to_string(), "mail".to_string())]),
        "{:?}",
        queue.probe
    );
    // The comparison is one more condition, after Gatus's default or the check's own.
    assert_eq!(queue.conditions, ["[CONNECTED] == true", "[BODY].value < 100"]);
    assert_eq!(p.checks[1].conditions, ["[STATUS] == 200", "[BODY].value == 1"]);

    let head = "jobs:\n  a: {script: [x]}\nchecks:\n  c:\n";
    for (body, want) in [
        (
            "    metric: {name: up, op: \"<\"}\n",
            "takt.yml:5:13: error: `metric` needs the series' `name` and the comparison's `op` and `value`",
        ),
        (
            "    metric: {url: \"http://x/m\", name: up, op: \"=~\", value: 1}\n",
            "`metric.op` must be one of <, <=, >, >=, == or !=",
        ),
        (
            "    metric: {url: \"http://x/m\", name: up, op: \"<\", value: lots}\n",
            "`metric.value` must be a number",
        ),
        (
            "    metric: {url: \"http://x/m\", name: 9up, op: \"<\", value: 1}\n",
            "`metric.name` is not a Prometheus metric name",
        ),
        (
            "    metric: {name: up, op: \"<\", value: 1}\n",
            "probes a `path` but names no `environment`",
        ),
        (
            "    metric: {url: \"http://x/m\", path: /m, name: up, op: \"<\", value: 1}\n",
            "needs a `url` or a `path`, not both",
        ),
        (
            "    metric: {url: \"http://x/m\", name: up, op: \"<\", value: 1, lables: {a: b}}\n",
            "did you mean `labels`?",
        ),
        (
            "    metric: {url: \"http://x/m\", name: up, op: \"<\", value: 1}\n    conditions: [\"[IP] == x\"]\n",
            "a metric check has no [IP]",
        ),
    ] {
        let err = errors(&format!("{head}{body}"));
        assert!(err.contains(want), "{body}\n→ {err}");
        // One error each: a field that did not parse is not also reported missing.
        assert_eq!(err.matches("error:").count(), 1, "{body}\n→ {err}");
    }
}

#[test]
fn a_check_may_say_when_it_is_degraded() {
    let yml = "jobs:\n  a: {script: [x]}\nchecks:\n  api:\n    http: {url: \"http://127.0.0.1:1/\"}\n    degraded_when: [\"[STATUS] == 429\", \"[BODY].degraded == true\"]\n    degraded_latency: 300ms\n";
    let p = takt_pipeline::parse("takt.yml", yml.as_bytes()).unwrap();
    let c = &p.checks[0];
    assert_eq!(c.degraded_when, ["[STATUS] == 429", "[BODY].degraded == true"]);
    assert_eq!(c.degraded_latency, Some(std::time::Duration::from_millis(300)));
    assert_eq!(
        c.conditions,
        ["[STATUS] < 400"],
        "its own conditions keep Gatus's default"
    );
}

#[test]
fn smoke_checks_and_analyses_may_name_a_health_check() {
    let yml = "jobs:\n  a: {script: [x]}\nenvironments:\n  prod:\n    port: 1\n    smoke: [{check: api}, {command: ./t.sh}]\n    strategy:\n      canary:\n        steps:\n          - analysis: {metric: {check: api}}\nchecks:\n  api:\n    environment: prod\n    http: {path: /healthz}\n    conditions: [\"[STATUS] == 200\"]\n";
    let p = takt_pipeline::parse("takt.yml", yml.as_bytes()).unwrap();
    let e = &p.environments[0];
    let takt_pipeline::Check::Health(c) = &e.smoke[0] else {
        panic!("{:?}", e.smoke)
    };
    assert_eq!(
        **c, p.checks[0],
        "the check as `checks:` defines it (defined after, too)"
    );
    assert!(!e.smoke[0].is_command() && e.smoke[1].is_command());
    let takt_pipeline::Strategy::Canary { steps, .. } = &e.strategy else {
        panic!()
    };
    assert!(matches!(
        &steps[0],
        takt_pipeline::CanaryStep::Analysis(a) if matches!(&a.metric, takt_pipeline::Metric::Http(takt_pipeline::Check::Health(c)) if c.name == "api")
    ));
    let head = "jobs:\n  a: {script: [x]}\nchecks:\n  api: {http: {url: \"http://x/\"}}\n  beat: {heartbeat: {every: 1h}}\nenvironments:\n  s:\n    port: 1\n";
    for (body, want) in [
        (
            "    smoke: [{check: apj}]\n",
            "takt.yml:9:21: error: environment `s` names check `apj`, which `checks:` does not define",
        ),
        ("    smoke: [{check: apj}]\n", "did you mean `api`?"),
        (
            "    smoke: [{check: beat}]\n",
            "check `beat` is a heartbeat: takt cannot probe it for a deploy",
        ),
        (
            "    strategy: {canary: {steps: [{analysis: {metric: {check: nope}}}]}}\n",
            "names check `nope`",
        ),
    ] {
        let err = errors(&format!("{head}{body}"));
        assert!(err.contains(want), "{body}\n→ {err}");
    }
}

#[test]
fn production_is_what_says_so_or_what_nothing_requires() {
    let yml = "jobs:\n  a: {script: [x]}\nenvironments:\n  staging: {port: 1}\n  production: {port: 2, requires: [staging], remind_every: 30m}\n  eu: {port: 3, requires: [staging]}\n  lab: {port: 4, production: false}\n  qa: {port: 5, production: true}\n  pre: {port: 6}\n  last: {port: 7, requires: [pre]}\n";
    let p = takt_pipeline::parse("takt.yml", yml.as_bytes()).unwrap();
    let prod: Vec<&str> = p
        .environments
        .iter()
        .filter(|e| takt_pipeline::is_production(&p.environments, &e.name))
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(prod, ["production", "eu", "qa", "last"]);
    let e = |n: &str| p.environments.iter().find(|e| e.name == n).unwrap();
    assert_eq!(e("production").remind_every, Some(std::time::Duration::from_secs(1800)));
    assert_eq!(e("staging").remind_every, None);
    let err =
        errors("jobs:\n  a: {script: [x]}\nenvironments:\n  s: {port: 1, production: maybe, remind_every: 10ms}\n");
    assert!(err.contains("`production` must be true or false"), "{err}");
    assert!(err.contains("`remind_every` must be at least 1s"), "{err}");
}

#[test]
fn maintenance_windows_daily_or_once_and_their_errors() {
    use takt_monitor::maintenance::Start;
    let yml = "jobs:\n  a: {script: [x]}\nmaintenance:\n  - {start: \"23:30\", duration: 2h, every: [sunday, Mon], services: [shop]}\n  - {at: 2026-12-24T22:00:00Z, duration: 30m}\n";
    let p = takt_pipeline::parse("takt.yml", yml.as_bytes()).unwrap();
    assert_eq!(p.maintenance.len(), 2);
    assert_eq!(
        p.maintenance[0].start,
        Start::Daily {
            minute: 23 * 60 + 30,
            days: vec![6, 0]
        }
    );
    assert_eq!(
        (p.maintenance[0].duration_s, &p.maintenance[0].services[..]),
        (7200, &["shop".to_string()][..])
    );
    assert_eq!(p.maintenance[1].start, Start::Once { at: 1_798_149_600 });
    assert!(p.maintenance[1].services.is_empty());
    let head = "jobs:\n  a: {script: [x]}\nmaintenance:\n";
    for (body, want) in [
        (
            "  - {start: \"25:00\", duration: 1h}\n",
            "4:13: error: `start` is a UTC time of day such as \"23:00\", not `25:00`",
        ),
        (
            "  - {start: \"23:00\", duration: 1h, every: [someday]}\n",
            "`every` lists weekdays such as monday, not `someday`",
        ),
        ("  - {at: tomorrow, duration: 1h}\n", "`at` is an RFC 3339 time"),
        (
            "  - {start: \"23:00\"}\n",
            "4:5: error: a maintenance window needs a `duration`",
        ),
        (
            "  - {duration: 1h}\n",
            "a maintenance window needs a `start` or an `at`",
        ),
        (
            "  - {start: \"23:00\", at: 2026-12-24T22:00:00Z, duration: 1h}\n",
            "not both",
        ),
        (
            "  - {at: 2026-12-24T22:00:00Z, duration: 1h, every: [monday]}\n",
            "`every` goes with a daily `start`",
        ),
        (
            "  - {start: \"23:00\", duration: 1h, when: now}\n",
            "unknown key `when`",
        ),
        ("  {start: \"23:00\"}\n", "`maintenance` must be a list of windows"),
    ] {
        let yml = format!("{head}{body}");
        let err = takt_pipeline::parse("takt.yml", yml.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{body:?}: {err}");
    }
}

#[test]
fn quarantine_entries_and_their_errors() {
    let yml = "quarantine:\n  - {name: totals, suite: shop.Cart, job: unit, until: 2026-12-31, reason: flaky}\njobs:\n  a: {script: [x]}\n";
    let p = takt_pipeline::parse("takt.yml", yml.as_bytes()).unwrap();
    let q = &p.quarantine[0];
    assert_eq!((q.name.as_str(), q.until.as_str()), ("totals", "2026-12-31"));
    assert!(q.covers("unit", "shop.Cart", "totals") && q.covers("unit [A=1]", "shop.Cart", "totals"));
    assert!(!q.covers("units", "shop.Cart", "totals") && !q.covers("unit", "shop.Other", "totals"));
    assert!(!q.expired("2026-12-31") && q.expired("2027-01-01"));
    for (body, want) in [
        ("quarantine: totals\n", "`quarantine` must be a list of test cases"),
        (
            "quarantine:\n  - {name: t, until: 31.12.2026}\n",
            "`until` must be a date such as 2026-12-31",
        ),
        ("quarantine:\n  - {name: t}\n", "needs `until`"),
        ("quarantine:\n  - {until: 2026-12-31}\n", "needs the test case's `name`"),
        (
            "quarantine:\n  - {name: t, until: 2026-12-31, expires: x}\n",
            "unknown key `expires`",
        ),
    ] {
        let err = errors(&format!("{body}jobs:\n  a: {{script: [x]}}\n"));
        assert!(err.contains(want), "{body}\n→ {err}");
    }
}

const FLAGS: &str = "jobs:
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
      if: [{$ref: staff}, 'on', {fractional: [['on', 25], ['off', 75]]}]
    environments:
      production: {state: DISABLED}
  retries:
    state: ENABLED
    variants: {few: 2, many: 5}
    defaultVariant: few
";

/// `flags:` in flagd's schema, as YAML: checked by takt-flags, an environment's own state.
#[test]
fn flags_are_flagd_definitions_with_environments_of_their_own() {
    let p = takt_pipeline::parse("takt.yml", FLAGS.as_bytes()).unwrap();
    let f = p.flags.expect("flags parsed");
    assert_eq!(f.document["flags"]["new-checkout"]["variants"]["on"], true);
    assert_eq!(f.document["flags"]["retries"]["variants"]["many"], 5);
    assert!(f.document["flags"]["new-checkout"].get("environments").is_none());
    assert_eq!(f.document["flags"]["new-checkout"]["state"], "ENABLED");
    assert_eq!(
        f.environments["production"]["flags"]["new-checkout"]["state"],
        "DISABLED"
    );
    let set = takt_flags::parse(&f.document).unwrap();
    let ctx = serde_json::json!({"targetingKey": "u", "email": "ada@example.com"});
    let r = set.evaluate("new-checkout", ctx.as_object().unwrap(), 0);
    assert_eq!(r.value, Some(serde_json::json!(true)));
    // Served over OFREP: no longer "not supported yet".
    assert!(p.reserved.is_empty(), "{:?}", p.reserved);
}

#[test]
fn broken_flags_say_line_and_column() {
    let e = errors(&FLAGS.replace("defaultVariant: off", "defaultVariant: of"));
    assert!(
        e.contains(
            "takt.yml:12:21: error: defaultVariant `of` names no variant of `new-checkout` (its variants: off, on)"
        ),
        "{e}"
    );
    let e = errors(&FLAGS.replace("['off', 75]", "['off', 7.5]"));
    assert!(
        e.contains("takt.yml:14:67: error: weight `7.5` is not a whole number"),
        "{e}"
    );
    let e = errors(&FLAGS.replace("{state: DISABLED}", "{state: OFF}"));
    assert!(
        e.contains("takt.yml:16:27: error: in environment `production`: flag `new-checkout` needs `state`"),
        "{e}"
    );
    let e = errors(&FLAGS.replace("production: {state", "prod: {state"));
    assert!(
        e.contains("a flag sets environment `prod`, which is not defined"),
        "{e}"
    );
    let e = errors(&FLAGS.replace("variants: {few: 2, many: 5}", "variants: {few: 2, many: five}"));
    assert!(e.contains("takt.yml:19:30: error: variants of mixed types"), "{e}");
}

/// `flags: $include` names flagd JSON files, read as flagd writes them; their problems are
/// placed in them, by line and column.
#[test]
fn flagd_files_named_by_include_join_the_flags() {
    let yml = "jobs:\n  a: {script: [true]}\nflags:\n  $include: [flags/shop.flagd.json]\n  banner:\n    state: ENABLED\n    variants: {on: true, off: false}\n    defaultVariant: off\n";
    let flagd = r#"{
  "$schema": "https://flagd.dev/schema/v0/flags.json",
  "flags": {
    "new-checkout": {
      "state": "ENABLED",
      "variants": {"on": true, "off": false},
      "defaultVariant": "off",
      "targeting": {"if": [{"$ref": "staff"}, "on", "off"]}
    }
  },
  "$evaluators": {"staff": {"ends_with": [{"var": "email"}, "@example.com"]}}
}
"#;
    let parse = |json: &str| {
        let files: std::collections::BTreeMap<String, Vec<u8>> =
            takt_pipeline::gitlab::IncludeWalk::read_all(yml.as_bytes(), &[], |p| {
                (p == "flags/shop.flagd.json").then(|| json.as_bytes().to_vec())
            });
        takt_pipeline::parse_with("takt.yml", yml.as_bytes(), &Default::default(), &files)
    };
    let p = parse(flagd).unwrap();
    let f = p.flags.unwrap();
    let set = takt_flags::parse(&f.document).unwrap();
    let keys: Vec<&str> = set.flags().map(|f| f.key.as_str()).collect();
    assert_eq!(keys, ["banner", "new-checkout"]);
    assert!(set.get("new-checkout").unwrap().targeting.is_some());
    // A problem in the file: its own line and column.
    let e = parse(&flagd.replace(r#""defaultVariant": "off""#, r#""defaultVariant": "of""#)).unwrap_err();
    assert!(
        e.to_string()
            .contains("flags/shop.flagd.json:7:25: error: defaultVariant `of` names no variant"),
        "{e}"
    );
    // A key defined twice; a file that is missing; a path out of the repository.
    let e = parse(&flagd.replace("new-checkout", "banner")).unwrap_err();
    assert!(
        e.to_string()
            .contains("flags/shop.flagd.json:4:5: error: flag `banner` is defined twice"),
        "{e}"
    );
    let e = takt_pipeline::parse("takt.yml", yml.as_bytes()).unwrap_err();
    assert!(
        e.to_string()
            .contains("takt.yml:4:14: error: `$include` names `flags/shop.flagd.json`, which is not in the repository"),
        "{e}"
    );
    let e = errors(&yml.replace("flags/shop.flagd.json", "../secrets.json"));
    assert!(
        e.contains("must be relative to the repository's root and stay inside it"),
        "{e}"
    );
}

/// A problem only an environment's own rule reaches (an evaluator nothing else names) is
/// reported too, at that environment: a file that passes lint always compiles on the server.
#[test]
fn a_problem_only_an_environments_rule_reaches_is_reported() {
    let yml = "jobs:\n  a: {script: [true]}\nenvironments:\n  production: {driver: command, deploy: 'true'}\nflags:\n  $evaluators:\n    broken: {and: [{$ref: missing}]}\n  f:\n    state: ENABLED\n    variants: {on: true, off: false}\n    defaultVariant: off\n    environments:\n      production: {targeting: {$ref: broken}}\n";
    let e = errors(yml);
    assert!(
        e.contains("takt.yml:13:19: error: in environment `production`: `$ref: missing` names no evaluator"),
        "{e}"
    );
}
