//! The SERVER span of each request, per the HTTP semantic conventions, continuing the
//! caller's W3C `traceparent`, `tracestate` and `baggage`.
//!
//! The caller's context is extracted with the globally installed propagators (trace context
//! and baggage) and set as the span's parent *before* the span is entered, as
//! tracing-opentelemetry requires; without a valid `traceparent` the span starts a trace.
//! The SDK's parent-based sampler then keeps or drops the trace as the caller decided, and
//! the caller's `tracestate` is carried by the span's context into the NATS headers.

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::propagation::Extractor;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct HttpHeaders<'a>(&'a HeaderMap);

impl Extractor for HttpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The caller's trace context and baggage, from the request headers.
pub fn caller_context(headers: &HeaderMap) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&HttpHeaders(headers)))
}

/// Wraps a request in its server span, named `{method} {route}`.
pub async fn server_span(request: Request, next: Next) -> Response {
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let path = request.uri().path().to_owned();
    let name = match &route {
        Some(route) => format!("{method} {route}"),
        None => method.clone(),
    };
    let user_agent = request
        .headers()
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let span = tracing::info_span!(
        "http request",
        otel.name = %name,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = route.as_deref().unwrap_or(""),
        url.path = %path,
        url.scheme = "http",
        network.protocol.name = "http",
        user_agent.original = %user_agent,
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
        saga.id = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    let _ = span.set_parent(caller_context(request.headers()));
    checkout_shared::messaging::record_ids(&span);
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    // Per the conventions a 4xx is the caller's error, not the server's: only 5xx are errors.
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", status.as_str());
    }
    response
}
