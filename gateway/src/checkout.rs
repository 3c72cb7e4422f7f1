//! `POST /checkout`: a cart in, a checkout published, `202` with where to follow it.
//!
//! The body is the cart (`customer_id`, `items` with `sku`, `quantity` and the
//! `unit_price_cents` the customer saw, `payment_token`, `amount_cents`, `currency`); the
//! gateway picks the saga id (from the `Idempotency-Key` when there is one). Nothing reaches
//! the broker unless every check passed; what passed is recorded as accepted before it is
//! published, so that its status answers at once ([`crate::accepted`]).
//!
//! The cart's schema states the door's field rules that JSON Schema can say (lengths, bounds,
//! the currency's form); the rest (the sum, the catalog's SKUs and prices) is the door's alone
//! and answered `422` with its reason.

use crate::AppState;
use crate::accepted;
use crate::cart_input;
use crate::idempotency::{self, Claim};
use crate::openapi::{
    Problem400, Problem409, Problem413, Problem415, Problem422, Problem429, Problem503,
};
use crate::problem::{Problem, Reason};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use checkout_door::validate;
use checkout_shared::envelope::{MSG_ID, SAGA_ID};
use checkout_shared::messages::{CheckoutRequested, LineItem};
use checkout_shared::messaging::{self, Outgoing};
use checkout_shared::subjects;
use opentelemetry::KeyValue;
use opentelemetry::trace::TraceContextExt;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use uuid::Uuid;

/// The cart as an HTTP caller sends it: a checkout without its id.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Cart {
    /// Who is buying.
    #[schema(min_length = 1, max_length = 128, pattern = r"\S")]
    customer_id: String,
    /// The lines, each SKU once.
    #[schema(min_items = 1, max_items = 100)]
    items: Vec<CartLine>,
    /// The payment method's token (never logged or traced).
    #[schema(min_length = 1, max_length = 128, pattern = r"\S")]
    payment_token: String,
    /// The sum of quantity × unit price over the lines, in cents.
    #[schema(minimum = 0)]
    amount_cents: i64,
    /// The catalog's currency (ISO 4217).
    #[schema(pattern = "^[A-Z]{3}$", example = "EUR")]
    currency: String,
}

/// One line of a cart.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CartLine {
    /// The SKU, as the catalog lists it.
    #[schema(min_length = 1, max_length = 128, pattern = r"\S", example = "SKU-MUG")]
    sku: String,
    /// How many.
    #[schema(minimum = 1, maximum = 10_000)]
    quantity: i32,
    /// The unit price the customer saw, in cents (refused as `price_mismatch` when the
    /// catalog's is another).
    #[serde(default)]
    #[schema(value_type = i64, required = true, minimum = 0)]
    unit_price_cents: Option<i64>,
}

impl From<CartLine> for LineItem {
    fn from(line: CartLine) -> Self {
        let CartLine {
            sku,
            quantity,
            unit_price_cents,
        } = line;
        LineItem {
            sku,
            quantity,
            unit_price_cents,
        }
    }
}

/// The answer to an accepted checkout (fields in the order the README shows them).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// Where its events stream (`GET`).
    events_url: String,
    /// Whether an earlier request with the same `Idempotency-Key` and cart was accepted.
    replayed: bool,
    /// The checkout's saga id.
    saga_id: Uuid,
    /// Where its status is (`GET`; also the `Location`).
    status_url: String,
    /// The checkout's trace (the caller's, when it sent a `traceparent`).
    trace_id: String,
}

/// Start a checkout.
///
/// The cart is checked (JSON, the door's rules, the catalog's SKUs, prices and currency),
/// then published to the saga; `202` says where to follow it. With an `Idempotency-Key`, the
/// same key and cart answer the same checkout again (`replayed`), never a second one, on any
/// gateway; the same key with another cart is a `409`.
#[utoipa::path(
    post,
    path = "/checkout",
    operation_id = "start_checkout",
    tag = "checkouts",
    params(
        ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255,
            pattern = "^[!-~]+$",
            description = "One checkout per key: a retry with the same key and cart is a replay"),
        ("traceparent" = Option<String>, Header, nullable = false,
            description = "W3C trace context: the checkout continues the caller's trace \
                (an invalid one is ignored and a trace started)",
            example = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ("tracestate" = Option<String>, Header, nullable = false,
            description = "W3C trace state, carried with the trace"),
        ("baggage" = Option<String>, Header, nullable = false, description = "W3C baggage, carried with the trace"),
    ),
    request_body(content = Cart, content_type = "application/json",
        example = json!({"customer_id": "cust-ada", "payment_token": "tok_visa",
            "currency": "EUR", "amount_cents": 4397,
            "items": [{"sku": "SKU-MUG", "quantity": 2, "unit_price_cents": 1299},
                      {"sku": "SKU-CAP", "quantity": 1, "unit_price_cents": 1799}]})),
    responses(
        (status = 202, description = "Accepted: follow it at `Location`", body = Accepted,
            headers(("Location" = String, description = "The checkout's status: `status_url`")),
            links(
                ("status" = (operation_id = "get_checkout",
                    parameters(("id" = "$response.body#/saga_id")),
                    description = "The checkout's status")),
                ("events" = (operation_id = "checkout_events",
                    parameters(("id" = "$response.body#/saga_id")),
                    description = "The checkout's events")),
            )),
        (status = 400, description = "Not JSON, or an invalid `Idempotency-Key`",
            body = Problem400, content_type = "application/problem+json"),
        (status = 409, description = "The `Idempotency-Key` was used with another cart",
            body = Problem409, content_type = "application/problem+json"),
        (status = 413, description = "The body is over 64 KiB",
            body = Problem413, content_type = "application/problem+json"),
        (status = 415, description = "The body is not `application/json`",
            body = Problem415, content_type = "application/problem+json"),
        (status = 422, description = "Not a cart, or refused by the door or the catalog",
            body = Problem422, content_type = "application/problem+json"),
        (status = 429, description = "This gateway handles as many checkouts at once as it \
            may: retry (with the same `Idempotency-Key`)", body = Problem429,
            content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
        (status = 503, description = "The system is behind, or the broker, the database or \
            the catalog is unavailable or did not acknowledge: retry (with the same \
            `Idempotency-Key`)", body = Problem503,
            content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    )
)]
pub async fn post(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    match accept(&state, &headers, body).await {
        Ok(response) => response,
        Err(problem) => problem.into_response(),
    }
}

async fn accept(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Response, Problem> {
    // Before anything is read: a flood is refused for the price of a permit check.
    let _slot = state.shedding.admit()?;
    let key = cart_input::read_headers(headers)?;
    let raw = cart_input::read_limited(body).await?;
    // Parsed twice on purpose: as JSON first, so that a body that is not JSON at all is told
    // apart (400) from JSON that is not a cart (422), and so that the idempotency hash is
    // taken over the canonical form.
    let (json, cart) = cart_input::decode(&raw)?;
    let server_cx = tracing::Span::current().context();
    let trace_id = server_cx.span().span_context().trace_id().to_string();
    let (saga_id, trace_id, replay) = match &key {
        None => {
            let saga_id = Uuid::new_v4();
            validate_cart(state, &to_request(saga_id, &cart)).await?;
            (saga_id, trace_id, false)
        }
        Some(key) => claim(state, key, &json, &cart, trace_id).await?,
    };
    let request = to_request(saga_id, &cart);
    tracing::Span::current().record("saga.id", saga_id.to_string());
    accepted::record(&state.pool, saga_id, &trace_id)
        .await
        .map_err(|err| unavailable("database", &err.to_string()))?;
    // A replay publishes again: if the first attempt's publish failed after its key was
    // stored, this is what starts the saga; if it succeeded, JetStream's duplicate window
    // (and, after it, the orchestrator's saga-id check) drops the copy.
    let timeout = state.shedding.limits().publish_timeout;
    match tokio::time::timeout(timeout, publish(state, &server_cx, &request)).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => return Err(unavailable("broker", &err.to_string())),
        Err(_) => {
            let error = format!("no acknowledgement within {} ms", timeout.as_millis());
            return Err(unavailable("broker", &error));
        }
    }
    tracing::info!(%saga_id, replay, "checkout accepted");
    let status_url = format!("/checkouts/{saga_id}");
    let body = Accepted {
        events_url: format!("{status_url}/events"),
        replayed: replay,
        saga_id,
        status_url: status_url.clone(),
        trace_id,
    };
    let mut response = crate::view::json(StatusCode::ACCEPTED, &body);
    if let Ok(location) = header::HeaderValue::from_str(&status_url) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Resolves an Idempotency-Key: a replay of the same cart gets the key's saga back without
/// being checked again (it was accepted once; a price changed since must not turn the replay
/// into a refusal); a new key is claimed only for a cart that passes the checks, so that a
/// refused cart does not take the key.
async fn claim(
    state: &AppState,
    key: &str,
    json: &serde_json::Value,
    cart: &Cart,
    trace_id: String,
) -> Result<(Uuid, String, bool), Problem> {
    let hash = idempotency::body_hash(json);
    let known = idempotency::lookup(&state.pool, key, &hash)
        .await
        .map_err(|err| unavailable("database", &err.to_string()))?;
    let claim = match known {
        Some(claim) => claim,
        None => {
            validate_cart(state, &to_request(idempotency::saga_id(key), cart)).await?;
            idempotency::claim(&state.pool, key, &hash, &trace_id)
                .await
                .map_err(|err| unavailable("database", &err.to_string()))?
        }
    };
    match claim {
        Claim::Same {
            saga_id,
            trace_id,
            replay,
        } => Ok((saga_id, trace_id, replay)),
        Claim::Conflict { saga_id } => Err(Problem::new(
            Reason::IdempotencyKeyReused,
            format!("this key started checkout {saga_id} with another cart"),
        )
        .field(Some("Idempotency-Key".into()))
        .refused()),
    }
}

fn to_request(saga_id: Uuid, cart: &Cart) -> CheckoutRequested {
    CheckoutRequested {
        checkout_id: saga_id,
        customer_id: cart.customer_id.clone(),
        items: cart.items.iter().cloned().map(LineItem::from).collect(),
        payment_token: cart.payment_token.clone(),
        amount_cents: cart.amount_cents,
        currency: cart.currency.clone(),
    }
}

/// The door's rules and the catalog, under a `validate checkout` span that records each
/// changed price as a `price_mismatch` event and a refusal as its error status.
async fn validate_cart(state: &AppState, request: &CheckoutRequested) -> Result<(), Problem> {
    let span = tracing::info_span!(
        "validate checkout",
        otel.status_code = tracing::field::Empty,
        otel.status_message = tracing::field::Empty,
        checkout.rejection = tracing::field::Empty,
        cart.item_count = request.items.len(),
    );
    let checked = validate::check(&state.catalog, request)
        .instrument(span.clone())
        .await;
    match checked {
        Ok(Ok(())) => Ok(()),
        Ok(Err(rejection)) => {
            span.record("checkout.rejection", rejection.kind());
            messaging::mark_error(&span, &rejection.to_string());
            Err(Problem::from_rejection(&rejection, false).refused())
        }
        Err(err) => Err(unavailable("catalog", &err.to_string())),
    }
}

/// Publishes the checkout under a producer span, child of the server span; the span's
/// context (with the caller's `tracestate` and baggage) goes into the NATS headers.
async fn publish(
    state: &AppState,
    parent: &opentelemetry::Context,
    request: &CheckoutRequested,
) -> Result<(), messaging::PublishFailed> {
    let msg_id = request.checkout_id.to_string();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(MSG_ID, msg_id.as_str());
    headers.insert(SAGA_ID, msg_id.as_str());
    let outgoing = Outgoing {
        subject: subjects::CHECKOUT_REQUESTED.to_owned(),
        msg_id: msg_id.clone(),
        headers,
        payload: Bytes::from(serde_json::to_vec(request).unwrap_or_default()),
    };
    let extra = vec![KeyValue::new("saga.id", msg_id)];
    messaging::publish(&state.js, &state.flusher, parent, outgoing, extra).await
}

/// A failure of ours or of a dependency (503): retry later, with the same key.
fn unavailable(what: &str, error: &str) -> Problem {
    tracing::error!(%error, "{what} unavailable; checkout not accepted");
    Problem::new(
        Reason::Unavailable,
        format!("the {what} is unavailable; retry with the same Idempotency-Key"),
    )
}
