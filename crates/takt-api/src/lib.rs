//! takt's HTTP API contract, shared by the server (`takt-server`) and the CLI (`takt`):
//! scopes and permissions ([`auth`]), the request and response bodies ([`types`]), the route
//! table with each route's permission ([`routes`]), and the OpenAPI document derived from
//! them ([`openapi`]). Serde and schema types only: no HTTP framework, no I/O.

pub mod auth;
pub mod openapi;
pub mod routes;
pub mod types;

pub use auth::{Limits, Permission, Scope};
pub use routes::{Method, Op, ROUTES, Route};
pub use types::*;
