//! `GET /v1/openapi.json`: the OpenAPI 3.1 document of the API, generated from the handlers'
//! declarations and the bodies' types, so it cannot drift from the code.

use axum::Json;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api::Problem;
use crate::api::compose::{ErrorAnswer, ErrorRequest, IqAnswer, StanzaRequest};
use crate::api::observe::{Health, Status};
use crate::api::stanzas::{Accepted, MsgRequest};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "component-http API",
        description = "Send stanzas through the component (README, \"The HTTP API\")."
    ),
    paths(
        crate::api::stanzas::post_stanza,
        crate::api::stanzas::post_msg,
        crate::api::observe::status,
        crate::api::observe::health,
        crate::api::observe::metrics,
        document
    ),
    components(schemas(
        StanzaRequest,
        ErrorRequest,
        IqAnswer,
        ErrorAnswer,
        Accepted,
        MsgRequest,
        Problem,
        Status,
        Health
    )),
    modifiers(&Security),
    security(("bearer" = []), ("basic" = []))
)]
pub(crate) struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
    }
}

/// This document.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json"))
)]
pub(crate) async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_with_every_route() {
        let document = serde_json::to_value(ApiDoc::openapi()).unwrap();
        assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));
        for path in [
            "/v1/stanzas",
            "/msg/{to}",
            "/v1/openapi.json",
            "/v1/status",
            "/health",
            "/metrics",
        ] {
            assert!(document["paths"][path].is_object(), "{path} is missing");
        }
        for schema in ["StanzaRequest", "IqAnswer", "Accepted", "Problem"] {
            assert!(
                document["components"]["schemas"][schema].is_object(),
                "{schema} is missing"
            );
        }
    }
}
