//! Feature flags, **pure**: flag definitions in flagd's schema (`state`, `variants`,
//! `defaultVariant`, `targeting` as JsonLogic, `metadata`, `$evaluators` with `$ref`), checked
//! as a whole (every problem, each at its JSON path), and evaluated as flagd evaluates them:
//! `fractional` (murmur3 x86 32-bit of flag key + targeting key, `(hash × total weight) >> 32`),
//! `sem_ver`, `starts_with`, `ends_with`, and the `$flagd.flagKey` / `$flagd.timestamp` values.
//! Time is passed in; nothing here reads a clock or a file (docs/flags.md).

mod change;
mod define;
mod eval;

pub use change::{Change, Refused, apply, patch, uniform};
pub use define::{Flag, FlagSet, Kind, Problem, State, parse, seg};
pub use eval::{ErrorCode, Reason, Resolution};
