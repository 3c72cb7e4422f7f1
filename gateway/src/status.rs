//! `GET /checkouts/{id}` and `GET /checkouts/{id}/events`: a saga's progress, read from the
//! lifecycle events the orchestrator publishes on `checkout.saga.<id>.*`.
//!
//! Those events are the orchestrator's public interface for watchers (the `watch` command
//! follows them too), kept a day in their stream; reading them keeps the gateway out of the
//! orchestrator's schema, works the same from every gateway, and lets the event stream replay
//! what happened before the caller connected and then follow live, from one ordered consumer.
//! The price: lifecycle events are best-effort (the saga row is the truth), so a status may
//! miss an event that was lost, and a saga older than the stream's day is not found.
//!
//! The status is the one fold of those events that `checkout watch` shares
//! ([`checkout_shared::saga_view`]). Before the first event, a checkout this gateway (or
//! another) accepted is `accepted` ([`crate::accepted`]); an id no gateway accepted and no
//! event names is `404`.

use crate::AppState;
use crate::accepted;
use crate::openapi::{CheckoutEventStream, Problem400, Problem404, Problem503};
use crate::problem::{Problem, Reason};
use crate::view::{CheckoutEvent, CheckoutStatus, json};
use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use checkout_shared::messages::LifecycleEvent;
use checkout_shared::saga_view::SagaView;
use checkout_shared::subjects;
use futures::{Stream, StreamExt};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// How long a status read waits for the stream before answering 503.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

async fn follow(
    state: &AppState,
    saga_id: Uuid,
) -> Result<(u64, async_nats::jetstream::consumer::pull::Ordered), Problem> {
    let config = OrderedConfig {
        filter_subject: subjects::lifecycle_of(saga_id),
        deliver_policy: DeliverPolicy::All,
        ..Default::default()
    };
    let consumer = state
        .lifecycle
        .create_consumer(config)
        .await
        .map_err(|e| broker_down(&e.to_string()))?;
    let pending = consumer.cached_info().num_pending;
    let messages = consumer
        .messages()
        .await
        .map_err(|e| broker_down(&e.to_string()))?;
    Ok((pending, messages))
}

/// A checkout's status.
///
/// `accepted` from the moment the gateway answered `202` until the orchestrator's first
/// lifecycle event, then the saga's own status, its current step and each step's outcome.
#[utoipa::path(
    get,
    path = "/checkouts/{id}",
    operation_id = "get_checkout",
    tag = "checkouts",
    params(("id" = Uuid, Path, description = "The checkout's saga id (as in `Location`)")),
    responses(
        (status = 200, description = "Where the checkout stands", body = CheckoutStatus),
        (status = 400, description = "Not a checkout id", body = Problem400,
            content_type = "application/problem+json"),
        (status = 404, description = "No gateway accepted it and no saga of that id is known",
            body = Problem404, content_type = "application/problem+json"),
        (status = 503, description = "The broker or the database is unavailable",
            body = Problem503, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    )
)]
pub async fn get(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let saga_id = match parse_id(&id) {
        Ok(id) => id,
        Err(problem) => return problem.into_response(),
    };
    let read = async {
        let (pending, mut messages) = follow(&state, saga_id).await?;
        let mut events = Vec::new();
        let mut left = pending;
        while left > 0 {
            let Some(Ok(message)) = messages.next().await else {
                return Err(broker_down("the lifecycle stream ended early"));
            };
            left = message.info().map(|i| i.pending).unwrap_or(0);
            if let Ok(event) = serde_json::from_slice::<LifecycleEvent>(&message.payload) {
                events.push(event);
            }
        }
        Ok(events)
    };
    let events = match tokio::time::timeout(READ_TIMEOUT, read).await {
        Ok(Ok(events)) => events,
        Ok(Err(problem)) => return problem.into_response(),
        Err(_) => return broker_down("reading the lifecycle stream timed out").into_response(),
    };
    if events.is_empty() {
        return match accepted_trace(&state, saga_id).await {
            Ok(trace_id) => json(StatusCode::OK, &CheckoutStatus::accepted(saga_id, trace_id)),
            Err(problem) => problem.into_response(),
        };
    }
    json(
        StatusCode::OK,
        &CheckoutStatus::from(SagaView::fold(saga_id, &events)),
    )
}

/// The trace of a checkout a gateway accepted; `404` when none did.
async fn accepted_trace(state: &AppState, saga_id: Uuid) -> Result<String, Problem> {
    match accepted::trace_of(&state.pool, saga_id).await {
        Ok(Some(trace_id)) => Ok(trace_id),
        Ok(None) => Err(Problem::new(
            Reason::NotFound,
            format!("no gateway accepted {saga_id} and no saga of that id is known (kept a day)"),
        )),
        Err(err) => {
            tracing::error!(error = %err, "reading the accepted checkouts failed");
            Err(Problem::new(
                Reason::Unavailable,
                "the database is unavailable".into(),
            ))
        }
    }
}

/// A checkout's lifecycle events, as server-sent events.
///
/// Every event so far, then each new one as it happens, until the saga's last event: after
/// `compensated` or `failed`, and for a completed checkout after the `step` event of its
/// confirmation, which follows `completed` (so the stream names every step the saga ran). Each event is named by its kind (`started`,
/// `step`, `completed`, `compensated`, `failed`, `stuck`), carries the lifecycle stream's
/// sequence as its `id`, and its `data` is a `CheckoutEvent` (JSON). A comment line keeps the
/// connection alive every 15 s.
#[utoipa::path(
    get,
    path = "/checkouts/{id}/events",
    operation_id = "checkout_events",
    tag = "checkouts",
    params(("id" = Uuid, Path, description = "The checkout's saga id (as in `Location`)")),
    responses(
        (status = 200, description = "The lifecycle events, each `data` a `CheckoutEvent`",
            body = CheckoutEventStream, content_type = "text/event-stream"),
        (status = 400, description = "Not a checkout id", body = Problem400,
            content_type = "application/problem+json"),
        (status = 404, description = "No gateway accepted it and no saga of that id is known",
            body = Problem404, content_type = "application/problem+json"),
        (status = 503, description = "The broker or the database is unavailable",
            body = Problem503, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    )
)]
pub async fn events(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let saga_id = match parse_id(&id) {
        Ok(id) => id,
        Err(problem) => return problem.into_response(),
    };
    let messages = match follow(&state, saga_id).await {
        Ok((pending, messages)) => messages_or_unknown(&state, saga_id, pending, messages).await,
        Err(problem) => Err(problem),
    };
    let messages = match messages {
        Ok(messages) => messages,
        Err(problem) => return problem.into_response(),
    };
    Sse::new(sse_stream(messages, state.shutdown.clone()))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// The events of a saga, unless it has none and no gateway accepted it (then `404`, rather
/// than a stream that waits for ever). An accepted saga that has not started is followed.
async fn messages_or_unknown(
    state: &AppState,
    saga_id: Uuid,
    pending: u64,
    messages: async_nats::jetstream::consumer::pull::Ordered,
) -> Result<async_nats::jetstream::consumer::pull::Ordered, Problem> {
    if pending == 0 {
        accepted_trace(state, saga_id).await?;
    }
    Ok(messages)
}

fn sse_stream(
    messages: async_nats::jetstream::consumer::pull::Ordered,
    shutdown: tokio_util::sync::CancellationToken,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold((messages, false), move |(mut messages, ended)| {
        let shutdown = shutdown.clone();
        async move {
            if ended {
                return None;
            }
            loop {
                // An open event stream must not hold the gateway's graceful shutdown.
                let next = tokio::select! {
                    next = messages.next() => next,
                    _ = shutdown.cancelled() => return None,
                };
                let message = match next? {
                    Ok(message) => message,
                    Err(err) => {
                        tracing::warn!(error = %err, "lifecycle stream failed; ending the events");
                        return None;
                    }
                };
                let Ok(event) = serde_json::from_slice::<LifecycleEvent>(&message.payload) else {
                    continue;
                };
                let event = CheckoutEvent::from(event);
                let last = event.is_last();
                let data = serde_json::to_string(&event).unwrap_or_default();
                let mut sse = Event::default().event(event.name()).data(data);
                if let Ok(info) = message.info() {
                    sse = sse.id(info.stream_sequence.to_string());
                }
                return Some((Ok(sse), (messages, last)));
            }
        }
    })
}

/// A checkout id in the one form the gateway writes (hyphenated, as in `Location` and the
/// document's `format: uuid`); the braced, URN and unhyphenated forms are refused.
fn parse_id(id: &str) -> Result<Uuid, Problem> {
    let hyphenated = id.len() == uuid::fmt::Hyphenated::LENGTH;
    match Uuid::parse_str(id) {
        Ok(saga_id) if hyphenated => Ok(saga_id),
        _ => Err(Problem::new(
            Reason::InvalidId,
            format!("{id:?} is not a checkout id (a UUID)"),
        )
        .field(Some("id".into()))),
    }
}

fn broker_down(error: &str) -> Problem {
    tracing::error!(%error, "reading lifecycle events failed");
    Problem::new(Reason::Unavailable, "the broker is unavailable".into())
}
