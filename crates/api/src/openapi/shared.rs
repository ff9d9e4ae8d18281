//! What every protected operation shares, declared once and added to each by a `Modify` hook:
//! the bearer-key security scheme and requirement, and the `401`, `404`, `500` and `503`
//! answers as `#/components/responses/…`. A handler's `#[utoipa::path]` lists only the answers
//! that are its own.
//!
//! The rules: every route outside [`crate::auth::PUBLIC_PATHS`] needs a key (`401`) and reads the
//! database (`500`, `503`); every one of them with an `{id}` in its path answers `404` for an id
//! that names nothing (`routes::path_id`).

use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{Object, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Header, HeaderBuilder, OpenApi, Ref, RefOr};

/// `(status, component name, response)` of every shared answer.
fn shared_responses() -> [(&'static str, &'static str, Response); 4] {
    [
        (
            "401",
            "Unauthorized",
            error_response("`unauthorized`: no valid API key was sent.")
                .header("WWW-Authenticate", Header::default())
                .build(),
        ),
        (
            "404",
            "NotFound",
            error_response(
                "`not_found`: nothing has this id (a deleted subscription counts as none), or the \
                 id could never be one.",
            )
            .build(),
        ),
        (
            "500",
            "Internal",
            error_response("`internal`: anything unexpected.").build(),
        ),
        (
            "503",
            "DatabaseUnavailable",
            error_response("`database_unavailable`: the database cannot be reached; retry later.")
                .header(
                    "Retry-After",
                    HeaderBuilder::new()
                        .schema(Object::with_type(Type::String))
                        .description(Some("Always `1` (seconds)."))
                        .build(),
                )
                .build(),
        ),
    ]
}

/// An answer with the API's JSON error body.
fn error_response(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorBody")))
            .build(),
    )
}

/// The `Modify` hook of [`super::ApiDoc`].
pub struct SharedResponses;

impl utoipa::Modify for SharedResponses {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key from DISPATCH_API_KEYS. /healthz, /readyz, /metrics and \
                         /openapi.json need none.",
                    ))
                    .build(),
            ),
        );
        for (_, name, response) in shared_responses() {
            components
                .responses
                .insert(name.to_owned(), RefOr::T(response));
        }
        for (path, item) in openapi.paths.paths.iter_mut() {
            if crate::auth::PUBLIC_PATHS.contains(&path.as_str()) {
                continue;
            }
            let has_id = path.contains("{id}");
            for operation in operations(item) {
                operation.security = Some(vec![SecurityRequirement::new(
                    "bearer",
                    Vec::<String>::new(),
                )]);
                for (status, name, _) in shared_responses() {
                    if status == "404" && !has_id {
                        continue;
                    }
                    operation
                        .responses
                        .responses
                        .insert(status.to_owned(), RefOr::Ref(Ref::from_response_name(name)));
                }
            }
        }
    }
}

/// Every operation of a path, whatever its method.
fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    #[test]
    fn every_protected_operation_has_the_shared_answers_and_only_id_paths_a_404() {
        let doc = serde_json::to_value(super::super::document()).expect("serialises");
        let mut checked = 0;
        for route in crate::routes::ROUTES {
            let op = &doc["paths"][route.path][route.method.to_ascii_lowercase()];
            let responses = &op["responses"];
            let reference = |status: &str| responses[status]["$ref"].as_str().map(str::to_owned);
            if crate::auth::PUBLIC_PATHS.contains(&route.path) {
                assert!(op.get("security").is_none(), "{}", route.path);
                assert_eq!(reference("401"), None, "{}", route.path);
                continue;
            }
            assert_eq!(op["security"][0]["bearer"], Value::Array(Vec::new()));
            for (status, name) in [
                ("401", "Unauthorized"),
                ("500", "Internal"),
                ("503", "DatabaseUnavailable"),
            ] {
                assert_eq!(
                    reference(status).as_deref(),
                    Some(format!("#/components/responses/{name}").as_str()),
                    "{} {}",
                    route.method,
                    route.path
                );
            }
            let not_found = reference("404");
            assert_eq!(
                not_found.is_some(),
                route.path.contains("{id}"),
                "{} {}: {not_found:?}",
                route.method,
                route.path
            );
            checked += 1;
        }
        assert!(checked > 15, "the protected routes were checked");
        for name in [
            "Unauthorized",
            "NotFound",
            "Internal",
            "DatabaseUnavailable",
        ] {
            let response = &doc["components"]["responses"][name];
            assert_eq!(
                response["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{name}"
            );
        }
    }
}
