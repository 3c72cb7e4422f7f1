//! The broker as a hop of the trace: nats-server's message tracing (2.11 and later), turned
//! into spans of service `nats-server`.
//!
//! ```text
//!  send(): a traced share of messages gets `Nats-Trace-Dest: checkout.trace.nats`
//!  nats-server ──trace event (JSON: server, request headers, in / js / eg events)──▶
//!  `checkout nats-trace-bridge` ──▶ span `nats-server <subject>` under the producer's span
//! ```
//!
//! Which messages are traced is decided by their trace id (the same for every message of a
//! trace), so a saga's hops are all shown or none. The share is set once by the binary
//! ([`set_share`]); library code reads no environment.

use async_nats::HeaderMap;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue, global};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// The header that asks nats-server to trace a message, and where to send the trace.
pub const TRACE_DEST: &str = "Nats-Trace-Dest";
/// The subject the trace events go to, which the bridge subscribes to.
pub const TRACE_SUBJECT: &str = "checkout.trace.nats";

/// The share of traces whose messages are traced by the broker, as `f64` bits (0 by default).
static SHARE: AtomicU64 = AtomicU64::new(0);

/// Sets the share (0 to 1) of traces whose messages nats-server traces.
pub fn set_share(share: f64) {
    SHARE.store(share.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
}

/// Whether the trace `trace_id` is in the traced share: by its id's low 64 bits, the same in
/// every process.
pub fn traced(trace_id: TraceId, share: f64) -> bool {
    let bytes = trace_id.to_bytes();
    let mut low = [0u8; 8];
    low.copy_from_slice(&bytes[8..]);
    share >= 1.0 || (u64::from_be_bytes(low) as f64) < share * u64::MAX as f64
}

/// Asks nats-server to trace this message when its trace (from its `traceparent`) is in the
/// share set by [`set_share`].
pub fn mark(headers: &mut HeaderMap) {
    let share = f64::from_bits(SHARE.load(Ordering::Relaxed));
    if share <= 0.0 {
        return;
    }
    let parent = headers
        .get("traceparent")
        .and_then(|v| parse_traceparent(v.as_str()));
    if parent.is_some_and(|sc| traced(sc.trace_id(), share)) {
        headers.insert(TRACE_DEST, TRACE_SUBJECT);
    }
}

/// The sampled span context of a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`);
/// `None` for anything else, an unsampled one included.
pub fn parse_traceparent(value: &str) -> Option<SpanContext> {
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00" || parts.next().is_some() {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let sc = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    );
    (sc.is_valid() && sc.is_sampled()).then_some(sc)
}

/// One trace event of nats-server, the fields the bridge reads.
#[derive(Debug, Clone, Deserialize)]
pub struct MsgTrace {
    /// The server that traced it.
    pub server: ServerInfo,
    /// The message as it came in: its headers and size.
    pub request: Request,
    /// What happened to it, in order: `in`, then `js` (stored), `eg` (sent on), ...
    #[serde(default)]
    pub events: Vec<Event>,
}

/// The server of a trace event.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerInfo {
    /// Its name.
    pub name: String,
    /// Its version.
    #[serde(default)]
    pub ver: String,
}

/// The traced message.
#[derive(Debug, Clone, Deserialize)]
pub struct Request {
    /// Its headers, each with its values.
    #[serde(default)]
    pub header: HashMap<String, Vec<String>>,
    /// Its size in bytes.
    #[serde(default)]
    pub msgsize: u64,
}

/// One event of a trace.
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    /// `in`, `js`, `eg`, `sm`, `sp`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When (RFC 3339, the server's clock).
    pub ts: String,
    /// For `in`: the subject it came in on.
    #[serde(default)]
    pub subj: Option<String>,
    /// For `in` and `eg`: the client connection's name.
    #[serde(default)]
    pub name: Option<String>,
    /// For `in`: the account.
    #[serde(default)]
    pub acc: Option<String>,
    /// For `js`: the stream it was stored in.
    #[serde(default)]
    pub stream: Option<String>,
    /// For `js`, `eg`: why it went no further, if it did not.
    #[serde(default)]
    pub error: Option<String>,
}

/// Why a trace event is not a span.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Unusable {
    /// Not the JSON of a trace event.
    #[error("not a nats-server trace event: {0}")]
    NotJson(String),
    /// No `in` event, so no subject and no start.
    #[error("no `in` event")]
    NoIngress,
    /// A timestamp that does not parse.
    #[error("bad timestamp {0:?}")]
    BadTime(String),
    /// The message carried no sampled `traceparent`: no trace to hang the span in.
    #[error("no sampled traceparent")]
    NoParent,
}

/// A span to emit for one trace event.
#[derive(Debug, Clone, PartialEq)]
pub struct HopSpan {
    /// `nats-server <subject>`.
    pub name: String,
    /// The producer's context (from the message's `traceparent`).
    pub parent: opentelemetry::trace::SpanContext,
    /// The `in` event.
    pub start: SystemTime,
    /// The last event.
    pub end: SystemTime,
    /// Subject, stream, server, client, account, size, events.
    pub attributes: Vec<KeyValue>,
    /// Why it went no further, if an event says so.
    pub error: Option<String>,
}

fn time_of(ts: &str) -> Result<SystemTime, Unusable> {
    chrono::DateTime::parse_from_rfc3339(ts)
        .map(|t| SystemTime::from(t.with_timezone(&chrono::Utc)))
        .map_err(|_| Unusable::BadTime(ts.to_owned()))
}

/// The span of the trace event `json`.
pub fn hop_span(json: &[u8]) -> Result<HopSpan, Unusable> {
    let trace: MsgTrace =
        serde_json::from_slice(json).map_err(|e| Unusable::NotJson(e.to_string()))?;
    let ingress = trace
        .events
        .iter()
        .find(|e| e.kind == "in")
        .ok_or(Unusable::NoIngress)?;
    let header = |name: &str| {
        trace
            .request
            .header
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, values)| values.first())
    };
    let parent = header("traceparent")
        .and_then(|v| parse_traceparent(v))
        .ok_or(Unusable::NoParent)?;
    let start = time_of(&ingress.ts)?;
    let mut end = start;
    for event in &trace.events {
        end = end.max(time_of(&event.ts)?);
    }
    let subject = ingress.subj.clone().unwrap_or_default();
    let kinds: Vec<&str> = trace.events.iter().map(|e| e.kind.as_str()).collect();
    let mut attributes = vec![
        KeyValue::new("messaging.system", "nats"),
        KeyValue::new("messaging.destination.name", subject.clone()),
        KeyValue::new("nats.server.name", trace.server.name.clone()),
        KeyValue::new("nats.server.version", trace.server.ver.clone()),
        KeyValue::new("nats.trace.events", kinds.join(",")),
        KeyValue::new(
            "messaging.message.body.size",
            i64::try_from(trace.request.msgsize).unwrap_or(i64::MAX),
        ),
    ];
    if let Some(stream) = trace.events.iter().find_map(|e| e.stream.clone()) {
        attributes.push(KeyValue::new("messaging.nats.stream", stream));
    }
    if let Some(client) = ingress.name.clone().filter(|n| !n.is_empty()) {
        attributes.push(KeyValue::new("nats.client.name", client));
    }
    if let Some(account) = ingress.acc.clone() {
        attributes.push(KeyValue::new("nats.account", account));
    }
    if let Some(id) = header("Nats-Msg-Id") {
        attributes.push(KeyValue::new("messaging.message.id", id.clone()));
    }
    let error = trace.events.iter().find_map(|e| e.error.clone());
    Ok(HopSpan {
        name: format!("nats-server {subject}"),
        parent,
        start,
        end,
        attributes,
        error,
    })
}

/// Emits `hop` (a span of this process's service, `nats-server` for the bridge).
pub fn emit(hop: HopSpan) {
    use opentelemetry::trace::Span as _;
    let tracer = global::tracer("checkout-saga");
    let parent = Context::new().with_remote_span_context(hop.parent);
    let mut span = tracer
        .span_builder(hop.name)
        .with_kind(SpanKind::Internal)
        .with_start_time(hop.start)
        .with_attributes(hop.attributes)
        .start_with_context(&tracer, &parent);
    if let Some(reason) = hop.error {
        span.set_status(opentelemetry::trace::Status::error(reason));
    }
    span.end_with_timestamp(hop.end);
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str = r#"{"server":{"name":"n1","ver":"2.15.1"},
      "request":{"header":{"traceparent":["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"],
        "Nats-Trace-Dest":["checkout.trace.nats"],"Nats-Msg-Id":["s.payment.do"]},"msgsize":321},
      "hops":0,
      "events":[{"type":"in","ts":"2026-12-04T17:00:00.000100Z","kind":0,"cid":7,"name":"orchestrator","acc":"$G","subj":"checkout.cmd.payment.charge"},
                {"type":"js","ts":"2026-12-04T17:00:00.000900Z","stream":"CHECKOUT_COMMANDS","subject":"checkout.cmd.payment.charge"}]}"#;

    #[test]
    fn a_trace_event_becomes_a_span_under_the_producer_from_ingress_to_its_last_event() {
        let hop = hop_span(EVENT.as_bytes()).expect("a span");
        assert_eq!(hop.name, "nats-server checkout.cmd.payment.charge");
        assert_eq!(hop.parent.span_id().to_string(), "00f067aa0ba902b7");
        let took = hop.end.duration_since(hop.start).expect("ordered");
        assert_eq!(took.as_micros(), 800);
        let attr = |k: &str| {
            hop.attributes
                .iter()
                .find(|kv| kv.key.as_str() == k)
                .map(|kv| kv.value.to_string())
        };
        assert_eq!(
            attr("messaging.nats.stream").as_deref(),
            Some("CHECKOUT_COMMANDS")
        );
        assert_eq!(attr("nats.server.name").as_deref(), Some("n1"));
        assert_eq!(attr("nats.trace.events").as_deref(), Some("in,js"));
        assert_eq!(
            attr("messaging.message.id").as_deref(),
            Some("s.payment.do")
        );
    }

    #[test]
    fn bad_events_are_refused_with_a_reason_never_a_panic() {
        assert!(matches!(hop_span(b"{"), Err(Unusable::NotJson(_))));
        let no_parent = EVENT.replace("traceparent", "other");
        assert_eq!(hop_span(no_parent.as_bytes()), Err(Unusable::NoParent));
        let no_in = EVENT.replace(r#""type":"in""#, r#""type":"xx""#);
        assert_eq!(hop_span(no_in.as_bytes()), Err(Unusable::NoIngress));
        let bad_time = EVENT.replace("2026-12-04T17:00:00.000900Z", "yesterday");
        assert_eq!(
            hop_span(bad_time.as_bytes()),
            Err(Unusable::BadTime("yesterday".into()))
        );
    }

    #[test]
    fn the_traced_share_is_decided_by_the_trace_id() {
        let low = TraceId::from_hex("00000000000000000000000000000001").expect("hex");
        let high = TraceId::from_hex("0000000000000000ffffffffffffff00").expect("hex");
        assert!(traced(low, 0.01) && !traced(high, 0.5) && traced(high, 1.0));
        assert!(!traced(low, 0.0));
    }
}
