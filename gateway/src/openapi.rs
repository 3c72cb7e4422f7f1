//! The gateway's OpenAPI document (`GET /openapi.json`), generated from the code.
//!
//! ```text
//!  #[utoipa::path] on each handler ─┐
//!  ToSchema of the bodies ──────────┼─▶ utoipa_axum::OpenApiRouter ─▶ (axum Router, OpenApi)
//!  Reason (problem types) ──────────┘        one call registers a route and documents it
//! ```
//!
//! A route is served only as its handler's `#[utoipa::path]` documents it (the router and the
//! document come out of the same `routes!` calls in [`crate::router`]), the bodies' schemas
//! are the types the handlers serialize, and each problem status lists exactly the
//! [`Reason`]s the code gives with it. The live gateway is tested against this document by
//! schemathesis (`cli/tests/e2e/schemathesis.rs`).

use crate::problem::{Reason, TYPE_BASE};
use axum::http::StatusCode;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    AdditionalProperties, Object, ObjectBuilder, Schema, SchemaFormat, Type,
};

/// The document's frame: what the handlers' paths are added to.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "checkout-saga gateway",
        description = "Carts in, checkouts out, progress back: the HTTP front door of the \
            checkout saga. A checkout is accepted (202) once its cart passed the door's rules \
            and the catalog's prices, and is then followed by its status or its event stream. \
            Refusals are RFC 9457 problem details whose `reason` is a stable code. Every \
            request may carry a W3C `traceparent` (and `tracestate`, `baggage`): the checkout \
            then continues the caller's trace.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    tags(
        (name = "checkouts", description = "Start a checkout and follow it"),
        (name = "operations", description = "Probes and this document"),
    ),
    components(schemas(crate::view::CheckoutEvent))
)]
pub struct ApiDoc;

/// The document, as the router serves it.
pub fn document() -> serde_json::Value {
    let mut doc = serde_json::to_value(crate::routes().1).unwrap_or_default();
    camel_case_links(&mut doc);
    doc
}

/// utoipa 5.5 writes a Link object's fields as Rust spells them (`operation_id`); OpenAPI
/// spells them `operationId`, `operationRef`, `requestBody`, and clients (schemathesis) follow
/// only those.
fn camel_case_links(doc: &mut serde_json::Value) {
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    let responses = paths
        .values_mut()
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut())
        .filter_map(|operation| operation.get_mut("responses")?.as_object_mut())
        .flat_map(|responses| responses.values_mut());
    for response in responses {
        let Some(links) = response.get_mut("links").and_then(|l| l.as_object_mut()) else {
            continue;
        };
        for link in links.values_mut().filter_map(|l| l.as_object_mut()) {
            for (snake, camel) in [
                ("operation_id", "operationId"),
                ("operation_ref", "operationRef"),
                ("request_body", "requestBody"),
            ] {
                if let Some(value) = link.remove(snake) {
                    link.insert(camel.to_owned(), value);
                }
            }
        }
    }
}

/// The body of a problem whose `reason` is one of `reasons`.
fn problem(status: StatusCode, reasons: &[Reason]) -> Object {
    let string = || ObjectBuilder::new().schema_type(Type::String);
    let codes = reasons.iter().map(|r| r.as_str());
    let types = reasons.iter().map(|r| r.type_uri());
    let about = format!(
        "An RFC 9457 problem of status {}: `type` is {TYPE_BASE} followed by the `reason`.",
        status.as_u16()
    );
    ObjectBuilder::new()
        .description(Some(about))
        .property(
            "type",
            string()
                .format(Some(SchemaFormat::Custom("uri".into())))
                .enum_values(Some(types)),
        )
        .required("type")
        .property(
            "title",
            string().description(Some("A short summary of the kind")),
        )
        .required("title")
        .property(
            "status",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .enum_values(Some([status.as_u16()])),
        )
        .required("status")
        .property("detail", string().description(Some("What went wrong here")))
        .required("detail")
        .property(
            "reason",
            string()
                .enum_values(Some(codes))
                .description(Some("The stable reason code")),
        )
        .required("reason")
        .property(
            "field",
            string().description(Some(
                "The field at fault, as a path into the JSON body, or the header's name",
            )),
        )
        .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)))
        .build()
}

/// One server-sent event of `GET /checkouts/{id}/events`, as OpenAPI 3.1 describes an event
/// stream (the `schema` of `text/event-stream` is that of each event; OpenAPI 3.2 calls it
/// `itemSchema`): named by its kind, numbered by the lifecycle stream, its `data` the JSON of
/// a [`crate::view::CheckoutEvent`].
pub struct CheckoutEventStream;

impl utoipa::PartialSchema for CheckoutEventStream {
    fn schema() -> RefOr<Schema> {
        use checkout_shared::messages::LifecycleKind;
        use strum::VariantArray;
        let kinds = LifecycleKind::VARIANTS.iter().map(|k| k.as_str());
        // JSON Schema's `contentSchema` (2020-12), which utoipa's builder lacks: carried as an
        // extension, which serializes as a sibling keyword.
        let data_schema = [(
            "contentSchema",
            serde_json::json!({"$ref": "#/components/schemas/CheckoutEvent"}),
        )];
        let data = ObjectBuilder::new()
            .schema_type(Type::String)
            .content_media_type("application/json")
            .extensions(Some(data_schema.into_iter().collect()))
            .description(Some("The event, as JSON: a `CheckoutEvent`"));
        let object = ObjectBuilder::new()
            .description(Some("One server-sent event"))
            .property(
                "event",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(kinds))
                    .description(Some("The event's kind (`kind` in its data)")),
            )
            .required("event")
            .property("data", data)
            .required("data")
            .property(
                "id",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^[0-9]+$"))
                    .description(Some("The event's sequence in the lifecycle stream")),
            )
            .required("id")
            .build();
        RefOr::T(Schema::Object(object))
    }
}

impl utoipa::ToSchema for CheckoutEventStream {}

/// Declares the problem body of one status: its reasons are [`Reason::of_status`].
macro_rules! problem_of_status {
    ($($name:ident = $status:ident;)*) => {$(
        #[doc = concat!("The problem body of a `", stringify!($status), "`.")]
        pub struct $name;

        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                let status = StatusCode::$status;
                let reasons: Vec<Reason> = Reason::of_status(status).collect();
                RefOr::T(Schema::Object(problem(status, &reasons)))
            }
        }

        impl utoipa::ToSchema for $name {}
    )*};
}

problem_of_status! {
    Problem400 = BAD_REQUEST;
    Problem404 = NOT_FOUND;
    Problem409 = CONFLICT;
    Problem413 = PAYLOAD_TOO_LARGE;
    Problem415 = UNSUPPORTED_MEDIA_TYPE;
    Problem422 = UNPROCESSABLE_ENTITY;
    Problem429 = TOO_MANY_REQUESTS;
    Problem503 = SERVICE_UNAVAILABLE;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use strum::VariantArray;

    fn doc() -> Value {
        document()
    }

    /// The public contract (README, "Through the HTTP gateway"): these and no others.
    #[test]
    fn every_route_of_the_contract_is_described_and_nothing_else() {
        let doc = doc();
        let mut described: Vec<String> = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                described.push(format!("{} {path}", method.to_uppercase()));
            }
        }
        described.sort();
        assert_eq!(
            described,
            [
                "GET /checkouts/{id}",
                "GET /checkouts/{id}/events",
                "GET /healthz",
                "GET /openapi.json",
                "GET /readyz",
                "POST /checkout",
            ]
        );
    }

    #[test]
    fn headers_problems_and_the_event_stream_are_described() {
        let doc = doc();
        let post = &doc["paths"]["/checkout"]["post"];
        let params: Vec<&str> = post["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        for header in ["Idempotency-Key", "traceparent", "tracestate", "baggage"] {
            assert!(params.contains(&header), "{header} in {params:?}");
        }
        let accepted = &post["responses"]["202"];
        assert!(accepted["headers"]["Location"].is_object(), "{accepted}");
        assert_eq!(accepted["links"]["status"]["operationId"], "get_checkout");
        assert_eq!(
            accepted["links"]["events"]["operationId"],
            "checkout_events"
        );
        let events = &doc["paths"]["/checkouts/{id}/events"]["get"]["responses"]["200"];
        let stream = &events["content"]["text/event-stream"]["schema"]["$ref"];
        assert_eq!(
            stream, "#/components/schemas/CheckoutEventStream",
            "{events}"
        );
        let data = &doc["components"]["schemas"]["CheckoutEventStream"]["properties"]["data"];
        assert_eq!(
            data["contentSchema"]["$ref"], "#/components/schemas/CheckoutEvent",
            "{data}"
        );
        // Every error response is a problem of its status; every 503 and 429 says when to retry.
        let mut reasons_described = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                for (status, response) in operation["responses"].as_object().unwrap() {
                    let code: u16 = status.parse().unwrap();
                    if code < 400 {
                        continue;
                    }
                    let schema = &response["content"]["application/problem+json"]["schema"];
                    let name = schema["$ref"].as_str().unwrap_or_default();
                    let name = name.rsplit('/').next().unwrap_or_default();
                    assert_eq!(name, format!("Problem{code}"), "{method} {path} {status}");
                    let body = &doc["components"]["schemas"][name];
                    for reason in body["properties"]["reason"]["enum"].as_array().unwrap() {
                        reasons_described.push(reason.as_str().unwrap().to_owned());
                    }
                    if code == 503 || code == 429 {
                        let retry = &response["headers"]["Retry-After"];
                        assert!(retry.is_object(), "{method} {path}: {response}");
                    }
                }
            }
        }
        for reason in Reason::VARIANTS {
            assert!(
                reasons_described.iter().any(|r| r == reason.as_str()),
                "problem type {reason} is in no response"
            );
        }
    }
}
