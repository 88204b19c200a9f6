//! GitLab's own layout (`.gitlab-ci.yml`) → takt's layout, before the typed layer reads it.
//!
//! What GitLab does and this module does too, in this order: `include: local` files are merged
//! under the file that includes them (the including file wins, mappings merge deeply);
//! `!reference [a, b]` tags are replaced by what they name (lists spliced into lists, as GitLab
//! flattens them); the top level is split into global keywords and jobs (every other key, hidden
//! `.templates` included, may hold any YAML until something uses it); the old global form of
//! `image`, `services`, `cache`, `before_script` and `after_script` becomes `default:`.
//! `spec: inputs` headers fill `$[[ inputs.NAME ]]` with their defaults.
//!
//! Pure: the included files are handed in by the caller ([`local_includes`] says which to fetch).

use crate::diag::{Diagnostic, Pos};
use crate::limits::MAX_EXPANDED_NODES;
use crate::parse::deep_merge;
use crate::yaml::{self, Duplicates, Node, NodeKind};
use std::collections::BTreeMap;

/// Global keywords of `.gitlab-ci.yml`; every other top-level key is a job.
pub const GLOBAL_KEYS: &[&str] = &[
    "stages",
    "variables",
    "default",
    "workflow",
    "include",
    "image",
    "services",
    "cache",
    "before_script",
    "after_script",
];
/// The old global form of `default:` keywords.
const OLD_DEFAULTS: &[&str] = &["image", "services", "cache", "before_script", "after_script"];
/// The most files one pipeline may include (GitLab's limit).
pub const MAX_INCLUDES: usize = 150;
/// How deep `!reference` tags may nest (GitLab's limit).
pub const MAX_REFERENCE_DEPTH: usize = 10;
/// Lines of an included file are numbered from `(index + 1) * INCLUDE_LINE_BASE` (index in the
/// include table handed to the parser), so that a position says which file it is in; a pipeline
/// file is at most 1 MiB, fewer lines than this.
pub const INCLUDE_LINE_BASE: usize = 1 << 24;

/// Which layout a pipeline file is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `takt.yml`: jobs under `jobs:`, settings beside them.
    Takt,
    /// `.gitlab-ci.yml`: jobs at the top level, as GitLab reads it.
    Gitlab,
}

impl Layout {
    /// By the file's name: `.gitlab-ci.yml` (or `*.gitlab-ci.yml`) is GitLab's layout.
    pub fn of(file: &str) -> Layout {
        let name = file.rsplit('/').next().unwrap_or(file);
        if name.ends_with(".gitlab-ci.yml") || name.ends_with(".gitlab-ci.yaml") {
            Layout::Gitlab
        } else {
            Layout::Takt
        }
    }
}

/// One `include:` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Include {
    /// A file (or a glob with `*`) in the same repository, from its root.
    Local(String),
    /// `project`, `remote`, `template` or `component`: these need a GitLab server.
    Elsewhere { kind: &'static str, what: String },
}

fn includes_of(n: &Node) -> Vec<(Pos, Include)> {
    let one = |i: &Node| -> Option<(Pos, Include)> {
        if let Some(s) = i.as_str() {
            let inc = if s.starts_with("https://") || s.starts_with("http://") {
                Include::Elsewhere {
                    kind: "remote",
                    what: s.to_string(),
                }
            } else {
                Include::Local(s.trim_start_matches('/').to_string())
            };
            return Some((i.pos, inc));
        }
        for kind in ["local", "project", "remote", "template", "component"] {
            if let Some(v) = i.get(kind) {
                let what = v.as_str().unwrap_or_default().to_string();
                let inc = match kind {
                    "local" => Include::Local(what.trim_start_matches('/').to_string()),
                    "project" => Include::Elsewhere { kind: "project", what },
                    "remote" => Include::Elsewhere { kind: "remote", what },
                    "template" => Include::Elsewhere { kind: "template", what },
                    _ => Include::Elsewhere {
                        kind: "component",
                        what,
                    },
                };
                return Some((v.pos, inc));
            }
        }
        None
    };
    match &n.kind {
        NodeKind::Seq(items) => items.iter().filter_map(one).collect(),
        _ => one(n).into_iter().collect(),
    }
}

/// The `include: local` paths (or globs) of one GitLab-layout file, for the caller to fetch
/// before parsing (then again for what those files include). Unreadable files give none: the
/// parser reports their problems.
pub fn local_includes(bytes: &[u8]) -> Vec<String> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Vec::new();
    };
    let Ok(loaded) = yaml::load_all(text, Duplicates::KeepLast) else {
        return Vec::new();
    };
    let Some(root) = pipeline_document(&loaded.documents).map(|(_, n)| n) else {
        return Vec::new();
    };
    let mut out: Vec<String> = root
        .get("include")
        .map(includes_of)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(_, i)| match i {
            // Only paths inside the repository: `with_includes` reports a path it was not given.
            Include::Local(p) if !p.split('/').any(|c| c == "..") => Some(p),
            _ => None,
        })
        .collect();
    // The flagd JSON files `flags: $include` names (read by `flags`, never merged as YAML).
    out.extend(crate::parse::flag_files(root).into_iter().map(|(_, p)| p));
    out
}

/// Which files `include: local` reaches from a pipeline file, nested includes too, at most
/// [`MAX_INCLUDES`]: a walk the caller drives, reading each path [`IncludeWalk::wanted`] names
/// wherever the files are (a commit, the working tree) and handing the contents back.
pub struct IncludeWalk<'a> {
    /// Every file of the commit, for glob includes (`include: 'ci/*.yml'`).
    files: &'a [String],
    todo: Vec<String>,
    asked: std::collections::BTreeSet<String>,
    got: BTreeMap<String, Vec<u8>>,
}

impl<'a> IncludeWalk<'a> {
    pub fn new(main: &[u8], files: &'a [String]) -> IncludeWalk<'a> {
        let mut w = IncludeWalk {
            files,
            todo: Vec::new(),
            asked: Default::default(),
            got: BTreeMap::new(),
        };
        w.queue(main);
        w
    }

    fn queue(&mut self, bytes: &[u8]) {
        for inc in local_includes(bytes) {
            if inc.contains('*') {
                let g = crate::glob::GlobList::new(std::slice::from_ref(&inc));
                let hits: Vec<String> = self.files.iter().filter(|f| g.is_match(f)).cloned().collect();
                self.todo.extend(hits.into_iter().rev());
            } else {
                self.todo.push(inc);
            }
        }
    }

    /// The next file to read, or `None` when the walk is done.
    pub fn wanted(&mut self) -> Option<String> {
        while let Some(p) = self.todo.pop() {
            if self.asked.len() >= MAX_INCLUDES {
                self.todo.clear();
                return None;
            }
            if self.asked.insert(p.clone()) {
                return Some(p);
            }
        }
        None
    }

    /// What `path` holds (`None`: no such file; the parser reports it).
    pub fn give(&mut self, path: String, content: Option<Vec<u8>>) {
        if let Some(c) = content {
            self.queue(&c);
            self.got.insert(path, c);
        }
    }

    /// The files read: path from the repository root → contents, for [`crate::parse_with`].
    pub fn finish(self) -> BTreeMap<String, Vec<u8>> {
        self.got
    }

    /// The whole walk over a synchronous reader.
    pub fn read_all(
        main: &[u8],
        files: &[String],
        mut read: impl FnMut(&str) -> Option<Vec<u8>>,
    ) -> BTreeMap<String, Vec<u8>> {
        let mut w = IncludeWalk::new(main, files);
        while let Some(p) = w.wanted() {
            let c = read(&p);
            w.give(p, c);
        }
        w.finish()
    }
}

/// The document that holds the pipeline: the only one, or the one after a `spec:` header.
fn pipeline_document(docs: &[(Pos, Option<Node>)]) -> Option<(Option<&Node>, &Node)> {
    match docs {
        [(_, Some(h)), (_, Some(body)), ..] if h.get("spec").is_some() => Some((Some(h), body)),
        [(_, Some(body)), ..] => Some((None, body)),
        _ => None,
    }
}

/// What the caller needs to know to read a GitLab-layout file: the takt-layout tree, and the
/// problems found on the way (positions in included files are offset, see [`INCLUDE_LINE_BASE`]).
pub struct Normalized {
    pub root: Option<Node>,
    pub problems: Vec<Diagnostic>,
}

/// Loads a GitLab-layout file with its includes (path → bytes, as [`local_includes`] named them)
/// and rewrites it into takt's layout. `table` receives the include paths in the order their
/// line numbers are offset by.
pub fn normalize(
    text: &str,
    layout: Layout,
    includes: &BTreeMap<String, Vec<u8>>,
    table: &mut Vec<String>,
) -> Result<Normalized, Vec<Diagnostic>> {
    let mut problems = Vec::new();
    let duplicates = match layout {
        Layout::Takt => Duplicates::Refuse,
        Layout::Gitlab => Duplicates::KeepLast,
    };
    let loaded = yaml::load_all(text, duplicates)?;
    problems.extend(loaded.problems);
    let Some((header, body)) = pipeline_document(&loaded.documents) else {
        return Ok(Normalized { root: None, problems });
    };
    let skip = if header.is_some() { 2 } else { 1 };
    if let Some((pos, _)) = loaded.documents.get(skip) {
        problems.push(Diagnostic::new(*pos, "more than one YAML document in the file").help(
            "a pipeline file holds one document, or a `spec:` header and then the pipeline: remove the extra `---`",
        ));
    }
    let mut root = body.clone();
    if let Some(h) = header {
        let inputs = inputs_of(h, &mut problems);
        root = interpolate(&root, &inputs, &mut problems);
    }
    let mut seen = 0usize;
    root = with_includes(root, includes, table, &mut seen, 0, &mut problems);
    let whole = root.clone();
    let mut refs = Refs {
        whole: &whole,
        made: 0,
        problems: &mut problems,
    };
    root = refs.resolve(&root, 0);
    let root = match layout {
        Layout::Takt => root,
        Layout::Gitlab => to_takt_layout(root, &mut problems),
    };
    Ok(Normalized {
        root: Some(root),
        problems,
    })
}

/// Merges what `root` includes under it (recursively), then drops `include`.
fn with_includes(
    root: Node,
    includes: &BTreeMap<String, Vec<u8>>,
    table: &mut Vec<String>,
    seen: &mut usize,
    depth: usize,
    problems: &mut Vec<Diagnostic>,
) -> Node {
    let Some(inc) = root.get("include").cloned() else {
        return root;
    };
    let mut base: Option<Node> = None;
    for (pos, i) in includes_of(&inc) {
        let path = match i {
            Include::Elsewhere { kind, what } => {
                problems.push(
                    Diagnostic::new(
                        pos,
                        format!("`include: {kind}` ({what}) needs a GitLab server; takt reads only `include: local`"),
                    )
                    .help("copy the file into the repository and include it with `local:`"),
                );
                continue;
            }
            Include::Local(p) => p,
        };
        let matched: Vec<&String> = if path.contains('*') {
            let g = crate::glob::GlobList::new(std::slice::from_ref(&path));
            includes.keys().filter(|k| g.is_match(k)).collect()
        } else {
            includes.get_key_value(&path).map(|(k, _)| k).into_iter().collect()
        };
        if matched.is_empty() {
            problems.push(
                Diagnostic::new(
                    pos,
                    format!("`include: local` names `{path}`, which is not in the repository"),
                )
                .help("the path is from the repository's root, e.g. `ci/build.yml`"),
            );
            continue;
        }
        for file in matched {
            *seen += 1;
            if *seen > MAX_INCLUDES || depth >= MAX_REFERENCE_DEPTH {
                problems.push(Diagnostic::new(
                    pos,
                    format!("more than {MAX_INCLUDES} includes, or includes nested more than {MAX_REFERENCE_DEPTH} deep; the limit is GitLab's"),
                ));
                return drop_key(root, "include");
            }
            table.push(file.clone());
            let offset = table.len() * INCLUDE_LINE_BASE;
            let bytes = &includes[file];
            let Ok(text) = std::str::from_utf8(bytes) else {
                problems.push(Diagnostic::new(pos, format!("`{file}` is not UTF-8")));
                continue;
            };
            let loaded = match yaml::load_all(text, Duplicates::KeepLast) {
                Ok(l) => l,
                Err(errs) => {
                    problems.extend(errs.into_iter().map(|d| shifted_diag(d, offset)));
                    continue;
                }
            };
            problems.extend(loaded.problems.into_iter().map(|d| shifted_diag(d, offset)));
            let Some((_, body)) = pipeline_document(&loaded.documents) else {
                continue;
            };
            let body = shifted(body, offset);
            let body = with_includes(body, includes, table, seen, depth + 1, problems);
            base = Some(match base {
                None => body,
                Some(b) => deep_merge(&b, &body),
            });
        }
    }
    let root = drop_key(root, "include");
    match base {
        None => root,
        Some(b) => deep_merge(&b, &root),
    }
}

pub(crate) fn shifted_diag(mut d: Diagnostic, offset: usize) -> Diagnostic {
    d.pos.line += offset;
    d
}

pub(crate) fn shifted(n: &Node, offset: usize) -> Node {
    let pos = Pos {
        line: n.pos.line + offset,
        col: n.pos.col,
    };
    let kind = match &n.kind {
        NodeKind::Seq(items) => NodeKind::Seq(items.iter().map(|i| shifted(i, offset)).collect()),
        NodeKind::Map(es) => NodeKind::Map(
            es.iter()
                .map(|(k, v)| (shifted(k, offset), shifted(v, offset)))
                .collect(),
        ),
        other => other.clone(),
    };
    Node { pos, kind }
}

fn drop_key(n: Node, name: &str) -> Node {
    match n.kind {
        NodeKind::Map(es) => Node {
            pos: n.pos,
            kind: NodeKind::Map(es.into_iter().filter(|(k, _)| k.as_str() != Some(name)).collect()),
        },
        kind => Node { pos: n.pos, kind },
    }
}

/// What resolving `!reference` tags needs: the whole tree to look names up in, how many nodes
/// the references have copied so far (bounded like aliases and `extends`: a file cannot grow
/// without limit by referencing references), and where problems go.
struct Refs<'a> {
    whole: &'a Node,
    made: usize,
    problems: &'a mut Vec<Diagnostic>,
}

impl Refs<'_> {
    /// Replaces every `!reference` in `n` by what it names.
    fn resolve(&mut self, n: &Node, depth: usize) -> Node {
        match &n.kind {
            NodeKind::Reference(path) => self.lookup(n.pos, path, depth),
            NodeKind::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                for i in items {
                    let r = self.resolve(i, depth);
                    match (&i.kind, r.kind) {
                        // A list named inside a list is spliced in, as GitLab flattens scripts and rules.
                        (NodeKind::Reference(_), NodeKind::Seq(inner)) => out.extend(inner),
                        (_, kind) => out.push(Node { pos: r.pos, kind }),
                    }
                }
                Node {
                    pos: n.pos,
                    kind: NodeKind::Seq(out),
                }
            }
            NodeKind::Map(es) => Node {
                pos: n.pos,
                kind: NodeKind::Map(es.iter().map(|(k, v)| (k.clone(), self.resolve(v, depth))).collect()),
            },
            NodeKind::Scalar { .. } => n.clone(),
        }
    }

    fn lookup(&mut self, pos: Pos, path: &[String], depth: usize) -> Node {
        let empty = Node {
            pos,
            kind: NodeKind::Seq(Vec::new()),
        };
        if depth >= MAX_REFERENCE_DEPTH {
            self.problems.push(Diagnostic::new(
                pos,
                format!("`!reference` tags nest more than {MAX_REFERENCE_DEPTH} deep; the limit is GitLab's"),
            ));
            return empty;
        }
        if self.made > MAX_EXPANDED_NODES {
            // Reported once, when the limit was crossed.
            return empty;
        }
        let mut at = self.whole;
        for (i, name) in path.iter().enumerate() {
            match at.get(name) {
                Some(next) => at = next,
                None => {
                    let so_far = path[..=i].join(", ");
                    self.problems.push(
                        Diagnostic::new(
                            pos,
                            format!(
                                "`!reference [{}]` names `{so_far}`, which is not defined",
                                path.join(", ")
                            ),
                        )
                        .help("a reference names a top-level key (usually a `.template`) and then keys inside it"),
                    );
                    return empty;
                }
            }
        }
        let mut found = self.resolve(at, depth + 1);
        self.made = self.made.saturating_add(found.size());
        if self.made > MAX_EXPANDED_NODES {
            self.problems.push(
                Diagnostic::new(
                    pos,
                    format!("`!reference` tags copy more than {MAX_EXPANDED_NODES} YAML nodes; the limit is {MAX_EXPANDED_NODES}"),
                )
                .help("reference smaller templates, or fewer times"),
            );
            return empty;
        }
        found.pos = pos;
        found
    }
}

/// `spec: inputs:` defaults of a header document.
fn inputs_of(header: &Node, problems: &mut Vec<Diagnostic>) -> BTreeMap<String, Option<String>> {
    let mut out = BTreeMap::new();
    let Some(NodeKind::Map(es)) = header.get("spec").and_then(|s| s.get("inputs")).map(|i| &i.kind) else {
        return out;
    };
    for (k, v) in es {
        let default = v.get("default").map(|d| match &d.kind {
            NodeKind::Scalar { value, .. } => value.clone(),
            _ => {
                problems.push(Diagnostic::new(d.pos, "an input's `default` must be a scalar for takt"));
                String::new()
            }
        });
        out.insert(k.as_str().unwrap_or_default().to_string(), default);
    }
    out
}

/// Fills `$[[ inputs.NAME ]]` in every scalar with the input's default (takt runs a pipeline
/// without a caller to pass inputs, so an input without a default is an error).
fn interpolate(n: &Node, inputs: &BTreeMap<String, Option<String>>, problems: &mut Vec<Diagnostic>) -> Node {
    let kind = match &n.kind {
        NodeKind::Scalar { value, plain } if value.contains("$[[") => {
            let mut out = String::new();
            let mut rest = value.as_str();
            while let Some(start) = rest.find("$[[") {
                out.push_str(&rest[..start]);
                let after = &rest[start + 3..];
                let Some(end) = after.find("]]") else {
                    problems.push(Diagnostic::new(n.pos, "`$[[` without its `]]`"));
                    out.push_str(&rest[start..]);
                    rest = "";
                    break;
                };
                let name = after[..end].trim();
                match name.strip_prefix("inputs.").map(|i| (i, inputs.get(i))) {
                    Some((_, Some(Some(v)))) => out.push_str(v),
                    Some((i, Some(None))) => problems.push(
                        Diagnostic::new(n.pos, format!("input `{i}` has no `default`"))
                            .help("takt starts pipelines without a caller to pass inputs: give it a `default`"),
                    ),
                    _ => problems.push(Diagnostic::new(
                        n.pos,
                        format!("`$[[ {name} ]]` names no input of the `spec:` header"),
                    )),
                }
                rest = &after[end + 2..];
            }
            out.push_str(rest);
            NodeKind::Scalar {
                value: out,
                plain: *plain,
            }
        }
        NodeKind::Seq(items) => NodeKind::Seq(items.iter().map(|i| interpolate(i, inputs, problems)).collect()),
        NodeKind::Map(es) => NodeKind::Map(
            es.iter()
                .map(|(k, v)| (interpolate(k, inputs, problems), interpolate(v, inputs, problems)))
                .collect(),
        ),
        other => other.clone(),
    };
    Node { pos: n.pos, kind }
}

/// Splits the top level into takt's `stages`, `variables`, `default`, `workflow` and `jobs`.
fn to_takt_layout(root: Node, problems: &mut Vec<Diagnostic>) -> Node {
    let NodeKind::Map(es) = root.kind else {
        problems.push(Diagnostic::new(
            root.pos,
            format!(
                "the top level of .gitlab-ci.yml must be a mapping, found {}",
                root.type_name()
            ),
        ));
        return root;
    };
    let mut top: Vec<(Node, Node)> = Vec::new();
    let mut old_defaults: Vec<(Node, Node)> = Vec::new();
    let mut default: Option<(Node, Node)> = None;
    let mut jobs: Vec<(Node, Node)> = Vec::new();
    for (k, v) in es {
        let name = k.as_str().unwrap_or_default();
        if OLD_DEFAULTS.contains(&name) {
            old_defaults.push((k, v));
        } else if name == "default" {
            default = Some((k, v));
        } else if GLOBAL_KEYS.contains(&name) {
            top.push((k, v));
        } else {
            jobs.push((k, v));
        }
    }
    if !old_defaults.is_empty() || default.is_some() {
        let pos = default
            .as_ref()
            .map_or(old_defaults.first().map_or(root.pos, |(k, _)| k.pos), |(k, _)| k.pos);
        let mut merged = Node {
            pos,
            kind: NodeKind::Map(old_defaults),
        };
        if let Some((_, d)) = &default {
            // Keys under `default:` win over the old global form.
            merged = deep_merge(&merged, d);
        }
        top.push((
            Node {
                pos,
                kind: NodeKind::Scalar {
                    value: "default".into(),
                    plain: true,
                },
            },
            merged,
        ));
    }
    top.push((
        Node {
            pos: root.pos,
            kind: NodeKind::Scalar {
                value: "jobs".into(),
                plain: true,
            },
        },
        Node {
            pos: root.pos,
            kind: NodeKind::Map(jobs),
        },
    ));
    Node {
        pos: root.pos,
        kind: NodeKind::Map(top),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(text: &str) -> (Node, Vec<Diagnostic>) {
        let n = normalize(text, Layout::Gitlab, &BTreeMap::new(), &mut Vec::new()).unwrap();
        (n.root.unwrap(), n.problems)
    }

    fn lint(text: &str) -> crate::Diagnostics {
        crate::parse_with(".gitlab-ci.yml", text.as_bytes(), &Default::default(), &BTreeMap::new())
            .expect_err("the file has problems")
    }

    #[test]
    fn a_problem_many_jobs_inherit_is_reported_once_at_its_source() {
        let d = lint(
            "default:\n  retry: {max: 2, when: [nope]}\n.t:\n  timeout: forever\na:\n  extends: .t\n  script: [x]\nb:\n  extends: .t\n  script: [x]\nc:\n  extends: .t\n  script: [x]\n",
        );
        let at = |line: usize| d.items.iter().filter(|i| i.pos.line == line).collect::<Vec<_>>();
        assert_eq!(at(2).len(), 1, "{d}");
        assert_eq!(at(4).len(), 1, "{d}");
        assert!(
            at(4)[0]
                .message
                .contains("also in 2 other jobs that inherit it from here: `b`, `c`"),
            "{d}"
        );
        assert_eq!(d.items.len(), 2, "{d}");
    }

    #[test]
    fn a_missing_template_is_not_suggested_as_the_job_itself() {
        let d = lint("flatpak:\n  extends: .flatpak\n  script: [x]\n");
        assert_eq!(d.items.len(), 1, "{d}");
        assert_eq!(d.items[0].help, None, "{d}");
        let d = lint(".flatpack:\n  script: [x]\nflatpak:\n  extends: .flatpak\n  script: [x]\n");
        assert_eq!(d.items[0].help.as_deref(), Some("did you mean `.flatpack`?"), "{d}");
    }

    #[test]
    fn layout_by_file_name() {
        assert_eq!(Layout::of(".gitlab-ci.yml"), Layout::Gitlab);
        assert_eq!(Layout::of("/x/y/.gitlab-ci.yml"), Layout::Gitlab);
        assert_eq!(Layout::of("takt.yml"), Layout::Takt);
    }

    #[test]
    fn references_splice_lists_and_name_missing_keys() {
        let (n, p) = norm(
            ".setup:\n  script: [a, b]\njob:\n  script:\n    - !reference [.setup, script]\n    - c\nbad:\n  script: !reference [.nope, script]\n",
        );
        let script = n.get("jobs").unwrap().get("job").unwrap().get("script").unwrap();
        let NodeKind::Seq(items) = &script.kind else {
            panic!("{script:?}")
        };
        let lines: Vec<&str> = items.iter().filter_map(Node::as_str).collect();
        assert_eq!(lines, ["a", "b", "c"]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].message.contains("`.nope`"), "{p:?}");
        assert_eq!(p[0].pos.line, 8);
    }

    #[test]
    fn reference_bombs_stop_at_the_node_limit() {
        // Each level references the one below ten times: 10^9 nodes if nothing stopped it.
        let mut text = String::from(".l0: [a, b, c, d, e, f, g, h, i, j]\n");
        for l in 1..=9 {
            let refs = vec![format!("!reference [.l{}]", l - 1); 10].join(", ");
            text.push_str(&format!(".l{l}: [{refs}]\n"));
        }
        text.push_str("job:\n  script: !reference [.l9]\n");
        let n = normalize(&text, Layout::Gitlab, &BTreeMap::new(), &mut Vec::new()).unwrap();
        assert!(
            n.problems.iter().any(|p| p.message.contains("copy more than")),
            "{:?}",
            n.problems
        );
        assert!(n.root.unwrap().size() < 10 * MAX_EXPANDED_NODES);
    }

    #[test]
    fn duplicate_keys_keep_the_last_with_a_warning() {
        let (n, p) = norm("job:\n  script: [a]\njob:\n  script: [b]\n");
        let s = n.get("jobs").unwrap().get("job").unwrap().get("script").unwrap();
        assert_eq!(
            s,
            &Node {
                pos: s.pos,
                kind: NodeKind::Seq(vec![Node {
                    pos: Pos { line: 4, col: 12 },
                    kind: NodeKind::Scalar {
                        value: "b".into(),
                        plain: true
                    }
                }])
            }
        );
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].severity, crate::diag::Severity::Warning);
        assert!(
            p[0].message.contains("line 3") && p[0].message.contains("line 1"),
            "{p:?}"
        );
    }

    #[test]
    fn inputs_take_their_defaults() {
        let (n, p) = norm(
            "spec:\n  inputs:\n    stage:\n      default: test\n---\njob:\n  stage: $[[ inputs.stage ]]\n  script: [x]\n",
        );
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(
            n.get("jobs")
                .unwrap()
                .get("job")
                .unwrap()
                .get("stage")
                .unwrap()
                .as_str(),
            Some("test")
        );
    }

    #[test]
    fn includes_merge_under_the_including_file() {
        let mut inc = BTreeMap::new();
        inc.insert(
            "ci/a.yml".to_string(),
            b"variables: {A: from-a, B: from-a}\nlint:\n  script: [lint]\n".to_vec(),
        );
        let mut table = Vec::new();
        let n = normalize(
            "include:\n  - local: /ci/a.yml\n  - project: g/p\nvariables: {B: main}\nbuild:\n  script: [make]\n",
            Layout::Gitlab,
            &inc,
            &mut table,
        )
        .unwrap();
        let root = n.root.unwrap();
        assert_eq!(table, ["ci/a.yml"]);
        let vars = root.get("variables").unwrap();
        assert_eq!(vars.get("A").unwrap().as_str(), Some("from-a"));
        assert_eq!(vars.get("B").unwrap().as_str(), Some("main"));
        assert!(root.get("jobs").unwrap().get("lint").is_some());
        assert_eq!(
            root.get("jobs").unwrap().get("lint").unwrap().pos.line,
            INCLUDE_LINE_BASE + 3
        );
        assert_eq!(n.problems.len(), 1);
        assert!(n.problems[0].message.contains("`include: project`"), "{:?}", n.problems);
    }
}
