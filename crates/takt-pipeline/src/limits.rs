//! What one pipeline file may ask for. Every limit is checked while parsing or planning and
//! reported as a positioned diagnostic (file:line:column) naming the limit; none of them is
//! reached by a hand-written pipeline. They bound the time, memory and stack that `takt lint`,
//! `takt run` and the server spend on a file, whoever wrote it. docs/pipeline.md ("Limits")
//! lists them for users: keep the two in step.

/// The largest pipeline file accepted, in bytes (1 MiB).
pub const MAX_FILE_BYTES: usize = 1024 * 1024;

/// The most YAML nodes a file may have, counting what aliases expand to (alias bombs fail fast).
pub const MAX_YAML_NODES: usize = 100_000;

/// The deepest YAML nesting accepted (lists and mappings inside each other), counting what
/// aliases splice in.
pub const MAX_YAML_DEPTH: usize = 64;

/// The deepest parenthesis nesting of a `rules: if:` expression.
pub const MAX_EXPR_DEPTH: usize = 64;

/// The longest `rules: if:` expression, in bytes.
pub const MAX_EXPR_BYTES: usize = 4096;

/// The most stages a file may list (`.pre` and `.post` not counted).
pub const MAX_STAGES: usize = 1000;

/// The most jobs of a pipeline, after `parallel` and `parallel: matrix` expansion (templates
/// starting with `.` do not count).
pub const MAX_JOBS: usize = 5000;

/// The most jobs one `parallel: N` or `parallel: matrix` may create (GitLab's limit).
pub const MAX_MATRIX_JOBS: usize = 200;

/// The most entries of one job's `needs` (GitLab's limit), and of its `dependencies`.
pub const MAX_NEEDS: usize = 50;

/// The most job instances all `needs` and `dependencies` of a pipeline may name together,
/// after matrix expansion (a need naming a matrix job waits for each of its instances).
pub const MAX_NEED_EDGES: usize = 250_000;

/// The most `extends` levels between a job and its furthest template.
pub const MAX_EXTENDS_DEPTH: usize = 10;

/// The most commands of one job (`before_script`, `script` and `after_script` together).
pub const MAX_SCRIPT_LINES: usize = 1000;

/// The most YAML nodes all jobs may add up to once `extends`, `default` and matrix copies are
/// applied (what a file can make takt hold in memory, beyond its own size).
pub const MAX_EXPANDED_NODES: usize = 500_000;

/// The most problems reported for one file; the rest are counted in a last message.
pub const MAX_DIAGNOSTICS: usize = 100;

/// The most memory one compiled `=~` pattern may take (the regex crate's `size_limit`).
pub const MAX_REGEX_BYTES: usize = 256 * 1024;
