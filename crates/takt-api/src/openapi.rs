//! The OpenAPI 3.1 document, derived from [`ROUTES`] and the types' schemas: nothing here is
//! written by hand but the titles.

use crate::routes::{Body, Method, ROUTES, path_params};
use crate::types::ErrorBody;
pub use utoipa::openapi::OpenApi;
use utoipa::openapi::content::Content;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, Parameter, ParameterIn, Paths};
use utoipa::openapi::request_body::RequestBody;
use utoipa::openapi::response::{Response, Responses};
use utoipa::openapi::schema::{Components, ObjectBuilder, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Info, RefOr, Required, Schema};

fn http_method(m: Method) -> HttpMethod {
    match m {
        Method::Get => HttpMethod::Get,
        Method::Post => HttpMethod::Post,
        Method::Put => HttpMethod::Put,
        Method::Delete => HttpMethod::Delete,
    }
}

fn content(b: &Body, schemas: &mut Vec<(String, RefOr<Schema>)>) -> Content {
    let schema: RefOr<Schema> = match b.schema {
        Some(f) => f(schemas),
        None if b.media == "application/json" => ObjectBuilder::new().schema_type(Type::Object).into(),
        None => ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::Custom("binary".into())))
            .into(),
    };
    Content::new(Some(schema))
}

fn error(description: &str, schemas: &mut Vec<(String, RefOr<Schema>)>) -> Response {
    Response::builder()
        .description(description)
        .content("application/json", content(&Body::json::<ErrorBody>(), schemas))
        .build()
}

/// The whole document.
pub fn document(version: &str) -> OpenApi {
    let mut schemas = Vec::new();
    let mut paths = Paths::new();
    for r in ROUTES {
        let mut op = OperationBuilder::new()
            .operation_id(Some(r.op.name()))
            .summary(Some(r.summary));
        for name in path_params(r.path) {
            let ty = if name == "run" { Type::Integer } else { Type::String };
            op = op.parameter(
                Parameter::builder()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(ObjectBuilder::new().schema_type(ty))),
            );
        }
        for mut p in r.query.map(|q| q()).unwrap_or_default() {
            p.parameter_in = ParameterIn::Query;
            op = op.parameter(p);
        }
        if let Some(b) = &r.request {
            op = op.request_body(Some(
                RequestBody::builder()
                    .content(b.media, content(b, &mut schemas))
                    .build(),
            ));
        }
        let mut ok = Response::builder().description("OK");
        if let Some(b) = &r.response {
            ok = ok.content(b.media, content(b, &mut schemas));
        }
        let mut responses = Responses::builder()
            .response("200", ok.build())
            .response("400", error("bad request: the reason names the field", &mut schemas));
        if r.permission.is_some() {
            responses = responses
                .response("401", error("no token, or an unknown one", &mut schemas))
                .response("403", error("the token's scope lacks the permission", &mut schemas));
            op = op.security(SecurityRequirement::new("bearer", Vec::<String>::new()));
        }
        let mut ext = utoipa::openapi::extensions::Extensions::default();
        ext.insert("x-takt-permission".into(), r.permission.map(|p| p.name()).into());
        op = op.responses(responses.build()).extensions(Some(ext));
        paths.add_path_operation(r.path, vec![http_method(r.method)], op.build());
    }
    let mut components = Components::new();
    for (name, s) in schemas {
        components.schemas.insert(name, s);
    }
    components.security_schemes.insert(
        "bearer".into(),
        RefOr::T(SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer))),
    );
    let mut doc = OpenApi::new(Info::new("takt API", version), paths);
    doc.components = Some(components);
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_lists_every_route_with_its_permission_and_resolves_every_reference() {
        let doc = serde_json::to_value(document("0.0.0")).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        for r in ROUTES {
            let op = &doc["paths"][r.path][r.method.as_str().to_lowercase()];
            assert_eq!(op["operationId"], r.op.name(), "{} {}", r.method.as_str(), r.path);
            assert_eq!(
                op["x-takt-permission"],
                serde_json::json!(r.permission.map(|p| p.name())),
                "{}",
                r.path
            );
            assert_eq!(op["security"].is_array(), r.permission.is_some(), "{}", r.path);
        }
        // Every $ref points at a schema in the components.
        let text = doc.to_string();
        let mut refs = 0;
        for piece in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = &piece[..piece.find('"').unwrap()];
            assert!(doc["components"]["schemas"][name].is_object(), "dangling $ref {name}");
            refs += 1;
        }
        assert!(refs > 20, "{refs} references");
        // The types' own fields are in it: a scope is one of the five names.
        let scope = &doc["components"]["schemas"]["NewToken"]["properties"]["scope"];
        assert!(scope["enum"].to_string().contains("deploy"), "{scope}");
        assert!(doc["components"]["schemas"]["NewToken"]["properties"]["name"].is_object());
    }
}
