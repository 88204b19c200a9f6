//! A small, position-keeping YAML tree built from `saphyr-parser` events.
//!
//! Why not deserialize straight into structs: takt reports *every* problem of a file at once,
//! each with its line and column, and refuses what serde-based loaders accept silently
//! (duplicate keys) or expand without bound (alias bombs). Scalars keep their text and whether
//! they were quoted; the typed layer (`parse.rs`) decides what each scalar means.

use crate::diag::{Diagnostic, Pos};
use crate::limits;
use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use std::collections::{HashMap, HashSet};

/// The most nodes a file may expand to through aliases (a guard against alias bombs).
pub const MAX_NODES: usize = limits::MAX_YAML_NODES;
/// The deepest nesting accepted, counting what aliases splice in: every tree [`load`] returns
/// is at most this deep, so walking, cloning and dropping it recursively is safe.
pub const MAX_DEPTH: usize = limits::MAX_YAML_DEPTH;

fn too_deep(pos: Pos) -> Vec<Diagnostic> {
    vec![
        Diagnostic::new(
            pos,
            format!("YAML nested deeper than {MAX_DEPTH} levels; the limit is {MAX_DEPTH}"),
        )
        .help("a pipeline file needs only a few levels of lists and mappings"),
    ]
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub kind: NodeKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// A scalar; `plain` is false when it was quoted or a block scalar.
    Scalar {
        value: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
    /// GitLab's `!reference [.template, key, ...]`: the node at that path, resolved after
    /// loading (`parse` replaces every one; a reference left in a tree is an error there).
    Reference(Vec<String>),
}

impl Node {
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, NodeKind::Scalar { value, plain: true } if value.is_empty() || value == "~" || value == "null" || value == "Null" || value == "NULL")
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    /// Name of the node's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            _ if self.is_null() => "null",
            NodeKind::Scalar { .. } => "a scalar",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
            NodeKind::Reference(_) => "a `!reference`",
        }
    }

    /// The value of `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            NodeKind::Map(entries) => entries.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v),
            _ => None,
        }
    }

    /// How many nodes the tree holds (recursive: trees from [`load`] are at most [`MAX_DEPTH`] deep).
    pub fn size(&self) -> usize {
        match &self.kind {
            NodeKind::Scalar { .. } | NodeKind::Reference(_) => 1,
            NodeKind::Seq(items) => 1 + items.iter().map(Node::size).sum::<usize>(),
            NodeKind::Map(e) => 1 + e.iter().map(|(k, v)| k.size() + v.size()).sum::<usize>(),
        }
    }
}

fn pos_of(span: &Span) -> Pos {
    Pos {
        line: span.start.line(),
        col: span.start.col() + 1,
    }
}

/// An open list or mapping: its position, anchor, what it holds so far, and the height of its
/// tallest child (a scalar is 0 high, a list of scalars 1).
enum Frame {
    /// The last field: the list is tagged `!reference`.
    Seq(Pos, usize, Vec<Node>, usize, bool),
    Map(Pos, usize, Vec<(Node, Node)>, Option<Node>, usize),
}

/// What a duplicate key in a mapping means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Duplicates {
    /// An error (takt.yml): YAML keeps one and takt will not guess which. The first is kept,
    /// so that the rest of the file is still checked.
    #[default]
    Refuse,
    /// The last one wins, with a warning naming both lines (what GitLab does).
    KeepLast,
}

/// A loaded file: its documents (where each starts, and its tree; `None` when empty), and the
/// problems that did not stop loading (duplicate keys, bad merge keys), in file order.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub documents: Vec<(Pos, Option<Node>)>,
    pub problems: Vec<Diagnostic>,
}

/// Parses one YAML document into a [`Node`] tree. An empty document gives `Ok(None)`.
/// On a syntax error the first error is returned (YAML cannot be resynchronised reliably).
pub fn load(text: &str) -> Result<Option<Node>, Vec<Diagnostic>> {
    let loaded = load_all(text, Duplicates::Refuse)?;
    let mut problems = loaded.problems;
    if let Some((pos, _)) = loaded.documents.get(1) {
        problems.push(
            Diagnostic::new(*pos, "more than one YAML document in the file")
                .help("takt.yml holds exactly one document: remove the extra `---`"),
        );
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(loaded.documents.into_iter().next().and_then(|(_, n)| n))
}

/// Parses every document of `text`. `Err` only for what stops reading altogether (a syntax
/// error, a limit); every other problem is in [`Loaded::problems`].
pub fn load_all(text: &str, duplicates: Duplicates) -> Result<Loaded, Vec<Diagnostic>> {
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    // Each anchored node with its height, so that an alias cannot splice in more depth than allowed.
    let mut anchors: HashMap<usize, (Node, usize)> = HashMap::new();
    let mut root: Option<Node> = None;
    let mut documents: Vec<(Pos, Option<Node>)> = Vec::new();
    let mut total = 0usize;
    let mut errors: Vec<Diagnostic> = Vec::new();

    while let Some(item) = parser.next_event() {
        let (event, span) = match item {
            Ok(x) => x,
            Err(e) => {
                let m = e.marker();
                let pos = Pos {
                    line: m.line(),
                    col: m.col() + 1,
                };
                let info = e.info().to_string();
                if info.contains("recursion limit") {
                    return Err(too_deep(pos));
                }
                let mut d = Diagnostic::new(pos, format!("YAML syntax error: {info}"));
                if info.contains("tab")
                    || text
                        .lines()
                        .nth(m.line().saturating_sub(1))
                        .is_some_and(|l| l.starts_with('\t'))
                {
                    d = d.help("YAML indentation must use spaces, not tabs");
                }
                return Err(vec![d]);
            }
        };
        let pos = pos_of(&span);
        let (node, height) = match event {
            Event::DocumentStart(_) => {
                documents.push((pos, None));
                continue;
            }
            Event::DocumentEnd => {
                if let Some(last) = documents.last_mut() {
                    last.1 = root.take();
                }
                continue;
            }
            Event::StreamStart | Event::StreamEnd | Event::Nothing => continue,
            Event::SequenceStart(anchor, tag) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(too_deep(pos));
                }
                let reference = tag.is_some_and(|t| t.handle == "!" && t.suffix == "reference");
                stack.push(Frame::Seq(pos, anchor, Vec::new(), 0, reference));
                continue;
            }
            Event::MappingStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(too_deep(pos));
                }
                stack.push(Frame::Map(pos, anchor, Vec::new(), None, 0));
                continue;
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq(p, anchor, items, tallest, reference)) => {
                    let kind = if reference {
                        let path: Option<Vec<String>> = items.iter().map(|i| i.as_str().map(str::to_string)).collect();
                        match path {
                            Some(path) if !path.is_empty() => NodeKind::Reference(path),
                            _ => {
                                errors.push(
                                    Diagnostic::new(p, "`!reference` takes a list of names")
                                        .help("e.g. `!reference [.setup, script]`"),
                                );
                                NodeKind::Seq(Vec::new())
                            }
                        }
                    } else {
                        NodeKind::Seq(items)
                    };
                    let n = Node { pos: p, kind };
                    if anchor > 0 {
                        anchors.insert(anchor, (n.clone(), tallest + 1));
                    }
                    (n, tallest + 1)
                }
                _ => return Err(vec![Diagnostic::new(pos, "unbalanced sequence")]),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map(p, anchor, entries, _, tallest)) => {
                    let n = Node {
                        pos: p,
                        kind: NodeKind::Map(finish_map(entries, duplicates, &mut errors)),
                    };
                    if anchor > 0 {
                        anchors.insert(anchor, (n.clone(), tallest + 1));
                    }
                    (n, tallest + 1)
                }
                _ => return Err(vec![Diagnostic::new(pos, "unbalanced mapping")]),
            },
            Event::Scalar(value, style, anchor, _) => {
                let n = Node {
                    pos,
                    kind: NodeKind::Scalar {
                        value: value.into_owned(),
                        plain: style == ScalarStyle::Plain,
                    },
                };
                if anchor > 0 {
                    anchors.insert(anchor, (n.clone(), 0));
                }
                (n, 0)
            }
            Event::Alias(id) => {
                let Some((target, height)) = anchors.get(&id) else {
                    return Err(vec![Diagnostic::new(pos, "alias to an unknown anchor")]);
                };
                if stack.len() + height > MAX_DEPTH {
                    return Err(too_deep(pos));
                }
                // The alias itself is counted below, as one of the nodes it stands for.
                total += target.size().saturating_sub(1);
                if total > MAX_NODES {
                    return Err(vec![
                        Diagnostic::new(pos, format!("aliases expand this file beyond {MAX_NODES} nodes"))
                            .help("this looks like an alias bomb; use fewer nested aliases"),
                    ]);
                }
                let mut n = target.clone();
                n.pos = pos;
                (n, *height)
            }
        };
        total += 1;
        if total > MAX_NODES {
            return Err(vec![Diagnostic::new(
                pos,
                format!("the file has more than {MAX_NODES} nodes"),
            )]);
        }
        // Attach the finished node to its parent.
        match stack.last_mut() {
            None => root = Some(node),
            Some(Frame::Seq(_, _, items, tallest, _)) => {
                *tallest = (*tallest).max(height);
                items.push(node)
            }
            Some(Frame::Map(_, _, entries, pending, tallest)) => {
                *tallest = (*tallest).max(height);
                match pending.take() {
                    None => *pending = Some(node),
                    Some(key) => entries.push((key, node)),
                }
            }
        }
    }
    if documents.is_empty() && root.is_some() {
        documents.push((Pos { line: 1, col: 1 }, root));
    }
    errors.sort_by_key(|d| d.pos);
    Ok(Loaded {
        documents,
        problems: errors,
    })
}

/// Checks keys (scalars only, no duplicates) and applies YAML merge keys (`<<: *anchor`):
/// explicit keys win over merged ones, earlier merged mappings over later ones.
fn finish_map(entries: Vec<(Node, Node)>, duplicates: Duplicates, errors: &mut Vec<Diagnostic>) -> Vec<(Node, Node)> {
    let mut out: Vec<(Node, Node)> = Vec::with_capacity(entries.len());
    // Key → line of its first definition; sets instead of scans keep big mappings linear.
    let mut lines: HashMap<String, usize> = HashMap::new();
    let mut merged: Vec<(Node, Node)> = Vec::new();
    let mut merged_keys: HashSet<String> = HashSet::new();
    for (k, v) in entries {
        let Some(key) = k.as_str() else {
            errors.push(Diagnostic::new(
                k.pos,
                format!("a mapping key must be a plain string, not {}", k.type_name()),
            ));
            continue;
        };
        if key == "<<" && matches!(&k.kind, NodeKind::Scalar { plain: true, .. }) {
            let sources: Vec<Node> = match v.kind {
                NodeKind::Map(_) => vec![v],
                NodeKind::Seq(items) => items,
                _ => {
                    errors.push(Diagnostic::new(v.pos, "`<<` merges a mapping or a list of mappings"));
                    continue;
                }
            };
            for s in sources {
                match s.kind {
                    NodeKind::Map(e) => {
                        for (mk, mv) in e {
                            if merged_keys.insert(mk.as_str().unwrap_or_default().to_string()) {
                                merged.push((mk, mv));
                            }
                        }
                    }
                    _ => errors.push(Diagnostic::new(s.pos, "`<<` merges a mapping or a list of mappings")),
                }
            }
            continue;
        }
        if let Some(first) = lines.get(key).copied() {
            match duplicates {
                Duplicates::Refuse => errors.push(
                    Diagnostic::new(k.pos, format!("duplicate key `{key}` (first defined at line {first})"))
                        .help("remove one of them; YAML keeps only one and takt will not guess which"),
                ),
                Duplicates::KeepLast => {
                    let line = k.pos.line;
                    errors.push(
                        Diagnostic::warning(
                            k.pos,
                            format!("duplicate key `{key}`: this one (line {line}) replaces the one at line {first}"),
                        )
                        .help("GitLab keeps the last one, and so does takt; remove the other"),
                    );
                    let key = key.to_string();
                    if let Some(slot) = out.iter_mut().find(|(ok, _)| ok.as_str() == Some(key.as_str())) {
                        *slot = (k, v);
                    }
                    lines.insert(key, line);
                }
            }
            continue;
        }
        lines.insert(key.to_string(), k.pos.line);
        out.push((k, v));
    }
    for (mk, mv) in merged {
        if !lines.contains_key(mk.as_str().unwrap_or_default()) {
            out.push((mk, mv));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_positions_and_merges() {
        let n = load("base: &b\n  a: 1\n  b: 2\njob:\n  <<: *b\n  b: 3\n")
            .unwrap()
            .unwrap();
        let job = n.get("job").unwrap();
        assert_eq!(job.get("a").unwrap().as_str(), Some("1"));
        assert_eq!(job.get("b").unwrap().as_str(), Some("3"));
        assert_eq!(n.get("job").unwrap().pos.line, 5);
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let e = load("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert!(e[0].message.contains("duplicate key `a`"), "{:?}", e);
        assert_eq!(e[0].pos.line, 3);
    }

    #[test]
    fn alias_bombs_stop_early() {
        let mut s = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        let mut prev = 'a';
        for c in 'b'..='k' {
            s.push_str(&format!(
                "{c}: &{c} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
            prev = c;
        }
        let e = load(&s).unwrap_err();
        assert!(e[0].message.contains("alias"), "{:?}", e);
    }

    #[test]
    fn empty_document_is_none() {
        assert_eq!(load("").unwrap(), None);
        assert_eq!(load("# only a comment\n").unwrap(), None);
    }
}
