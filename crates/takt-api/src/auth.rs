//! Scopes and permissions: the vocabulary is the model's ([`takt_model::auth`]); this module
//! adds the schema the OpenAPI document gives a scope.

pub use takt_model::auth::{Limits, Outside, Permission, Scope, UnknownScope};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Schema};

/// A scope in the OpenAPI document: one of the five names.
pub fn scope_schema() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(Scope::ALL.map(Scope::name)))
        .description(Some(
            "read, ci (read + pipelines and pushes), deploy (read + deploys), flags, or admin",
        ))
        .into()
}
