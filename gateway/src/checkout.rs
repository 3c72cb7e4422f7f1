//! `POST /checkout`: a cart in, a checkout published, `202` with where to follow it.
//!
//! The body is the cart (`customer_id`, `items` with `sku`, `quantity` and the
//! `unit_price_cents` the customer saw, `payment_token`, `amount_cents`, `currency`); the
//! gateway picks the saga id (from the `Idempotency-Key` when there is one). Nothing reaches
//! the broker unless every check passed.

use crate::AppState;
use crate::idempotency::{self, Claim};
use crate::problem::Problem;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use checkout_door::validate::{self, Rejection};
use checkout_shared::envelope::{MSG_ID, SAGA_ID};
use checkout_shared::messages::{CheckoutRequested, LineItem, MAX_REQUEST_BYTES};
use checkout_shared::messaging::{self, Outgoing};
use checkout_shared::subjects;
use futures::StreamExt;
use opentelemetry::KeyValue;
use opentelemetry::trace::TraceContextExt;
use serde::Deserialize;
use std::sync::Arc;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use uuid::Uuid;

/// The cart as an HTTP caller sends it: a checkout without its id.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cart {
    customer_id: String,
    items: Vec<LineItem>,
    payment_token: String,
    amount_cents: i64,
    currency: String,
}

/// Handles `POST /checkout`.
pub async fn post(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    match accept(&state, &headers, body).await {
        Ok(response) => response,
        Err(problem) => problem.into_response(),
    }
}

async fn accept(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Response, Problem> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Unsupported media type",
            format!("the cart must be application/json, not {content_type:?}"),
        )
        .field(Some("Content-Type".into()))
        .refused());
    }
    let key = match headers.get("idempotency-key").map(|v| v.to_str()) {
        None => None,
        Some(Ok(key)) if idempotency::valid_key(key) => Some(key.to_owned()),
        Some(_) => {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid_idempotency_key",
                "Invalid Idempotency-Key",
                "the Idempotency-Key must be 1 to 255 visible ASCII characters".into(),
            )
            .field(Some("Idempotency-Key".into()))
            .refused());
        }
    };
    let raw = read_limited(body).await?;
    // Parsed twice on purpose: as JSON first, so that a body that is not JSON at all is told
    // apart (400) from JSON that is not a cart (422), and so that the idempotency hash is
    // taken over the canonical form.
    let json: serde_json::Value = serde_json::from_slice(&raw).map_err(|e| {
        Problem::from_rejection(&Rejection::Malformed(e.to_string()), true).refused()
    })?;
    let cart: Cart = serde_json::from_value(json.clone()).map_err(|e| {
        Problem::from_rejection(&Rejection::Malformed(e.to_string()), false).refused()
    })?;
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
    // A replay publishes again: if the first attempt's publish failed after its key was
    // stored, this is what starts the saga; if it succeeded, JetStream's duplicate window
    // (and, after it, the orchestrator's saga-id check) drops the copy.
    publish(state, &server_cx, &request)
        .await
        .map_err(|err| unavailable("broker", &err.to_string()))?;
    tracing::info!(%saga_id, replay, "checkout accepted");
    let status_url = format!("/checkouts/{saga_id}");
    let body = serde_json::json!({
        "saga_id": saga_id,
        "trace_id": trace_id,
        "status_url": status_url,
        "events_url": format!("{status_url}/events"),
        "replayed": replay,
    });
    let mut response = (StatusCode::ACCEPTED, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    if let Ok(location) = header::HeaderValue::from_str(&status_url) {
        headers.insert(header::LOCATION, location);
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
            StatusCode::CONFLICT,
            "idempotency_key_reused",
            "Idempotency-Key already used",
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
        items: cart.items.clone(),
        payment_token: cart.payment_token.clone(),
        amount_cents: cart.amount_cents,
        currency: cart.currency.clone(),
    }
}

/// Reads the body, refusing (413) as soon as it passes the limit rather than after it has
/// all been buffered.
async fn read_limited(body: Body) -> Result<Bytes, Problem> {
    let mut stream = body.into_data_stream();
    let mut buffer = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "unreadable_body",
                "Unreadable body",
                e.to_string(),
            )
            .refused()
        })?;
        buffer.extend_from_slice(&chunk);
        if buffer.len() > MAX_REQUEST_BYTES {
            return Err(
                Problem::from_rejection(&Rejection::TooLarge(buffer.len()), false).refused(),
            );
        }
    }
    Ok(buffer.freeze())
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
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "Try again",
        format!("the {what} is unavailable; retry with the same Idempotency-Key"),
    )
}
