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
//! ([`checkout_shared::saga_view`]).

use crate::AppState;
use crate::problem::Problem;
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

/// Handles `GET /checkouts/{id}`.
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
        return Problem::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "No such checkout (yet)",
            format!("no lifecycle event for {saga_id}: not started yet, rejected, or unknown"),
        )
        .into_response();
    }
    let body = serde_json::to_string(&SagaView::fold(saga_id, &events)).unwrap_or_default();
    ([("content-type", "application/json")], body).into_response()
}

/// Handles `GET /checkouts/{id}/events`: every lifecycle event so far, then each new one, as
/// server-sent events named by kind, until the saga ends (or the gateway shuts down).
pub async fn events(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let saga_id = match parse_id(&id) {
        Ok(id) => id,
        Err(problem) => return problem.into_response(),
    };
    let messages = match follow(&state, saga_id).await {
        Ok((_, messages)) => messages,
        Err(problem) => return problem.into_response(),
    };
    Sse::new(sse_stream(messages, state.shutdown.clone()))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
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
                let last = event.kind.is_terminal();
                let data = serde_json::to_string(&event).unwrap_or_default();
                let mut sse = Event::default().event(event.kind.as_str()).data(data);
                if let Ok(info) = message.info() {
                    sse = sse.id(info.stream_sequence.to_string());
                }
                return Some((Ok(sse), (messages, last)));
            }
        }
    })
}

fn parse_id(id: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(id).map_err(|_| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_id",
            "Invalid checkout id",
            format!("{id:?} is not a checkout id (a UUID)"),
        )
        .field(Some("id".into()))
    })
}

fn broker_down(error: &str) -> Problem {
    tracing::error!(%error, "reading lifecycle events failed");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "Try again",
        "the broker is unavailable".into(),
    )
}
