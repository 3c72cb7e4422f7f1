//! Messaging spans per the OpenTelemetry messaging conventions, and a traced JetStream publish.
//!
//! A producer span `publish <subject>` is started under the caller's context and its context
//! travels in the message headers; the consumer's `process <subject>` span is its child.
//! The producer span is ended and exported *before* the message is sent (see
//! [`crate::telemetry::SpanFlusher`]): a span that a message names as its parent must exist
//! even if the sender is killed the moment after.

use crate::ack_retry::{AckRetry, send_until_acked};
use crate::flusher::{FLUSH_WAIT, Flushed, SpanFlusher};
use crate::{envelope, propagation};
use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue, global};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// `messaging.system` for every span here.
pub const SYSTEM: &str = "nats";

/// A message ready to publish: subject, headers (envelope already written), JSON body.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Where it goes.
    pub subject: String,
    /// The de-duplication id (`Nats-Msg-Id`).
    pub msg_id: String,
    /// Headers, to which the trace context is added.
    pub headers: HeaderMap,
    /// The JSON body.
    pub payload: Bytes,
}

/// Starts and ends a PRODUCER span under `parent`, writing its context into `headers`.
/// Returns the context of the producer span.
pub fn stamp_producer_span(
    parent: &Context,
    subject: &str,
    msg_id: &str,
    headers: &mut HeaderMap,
    extra: Vec<KeyValue>,
) -> Context {
    let tracer = global::tracer("checkout-saga");
    let mut attributes = vec![
        KeyValue::new("messaging.system", SYSTEM),
        KeyValue::new("messaging.destination.name", subject.to_owned()),
        KeyValue::new("messaging.operation.type", "send"),
        KeyValue::new("messaging.operation.name", "publish"),
        KeyValue::new("messaging.message.id", msg_id.to_owned()),
    ];
    attributes.extend(extra);
    let span = tracer
        .span_builder(format!("publish {subject}"))
        .with_kind(SpanKind::Producer)
        .with_attributes(attributes)
        .start_with_context(&tracer, parent);
    let cx = parent.with_span(span);
    propagation::inject(&cx, headers);
    cx.span().end();
    cx
}

/// A copy of a message set aside on `subject` (the dead letters, the rejections): its headers
/// and body, with the reason in `Saga-Reason`, the subject it came from, and `msg_id` as its
/// de-duplication id, so setting the same message aside twice stores it once. It is kept for
/// days, so its secrets are not ([`crate::redact`]).
pub fn set_aside(
    subject: String,
    msg_id: String,
    origin_subject: &str,
    headers: Option<&HeaderMap>,
    payload: Bytes,
    reason: &str,
) -> Outgoing {
    let mut headers = headers.cloned().unwrap_or_default();
    headers.insert(envelope::MSG_ID, msg_id.as_str());
    headers.insert(envelope::REASON, reason);
    headers.insert(envelope::ORIGIN_SUBJECT, origin_subject);
    let (payload, withheld) = crate::redact::for_keeping(payload);
    if let Some(note) = withheld {
        headers.insert(crate::redact::WITHHELD, note.as_str());
    }
    Outgoing {
        subject,
        msg_id,
        headers,
        payload,
    }
}

/// A message's dead letter on `checkout.dlq.<origin subject>`; `key` identifies the original
/// (its `Nats-Msg-Id`, or its stream and sequence).
pub fn dead_letter(
    origin_subject: &str,
    key: &str,
    headers: Option<&HeaderMap>,
    payload: Bytes,
    reason: &str,
) -> Outgoing {
    let subject = crate::subjects::dead_letter(origin_subject);
    set_aside(
        subject,
        format!("dlq.{key}"),
        origin_subject,
        headers,
        payload,
        reason,
    )
}

/// Why a publish did not reach the stream.
#[derive(Debug, thiserror::Error)]
pub enum PublishFailed {
    /// The server did not take the message.
    #[error("publishing to {subject}: {source}")]
    Publish {
        /// Where it was going.
        subject: String,
        /// Why.
        source: jetstream::context::PublishError,
    },
}

/// Publishes `msg` to JetStream under a producer span and waits for the stream's ack.
/// A duplicate (same `Nats-Msg-Id` within the window) counts as success.
///
/// The producer span is exported before the message leaves (so a consumer's span never
/// outlives its parent's export), which means it cannot carry the publish's outcome: a
/// publish that fails gets a `send failed` child span with error status instead, so that a
/// producer span without a consumer beneath it reads as what it is.
pub async fn publish(
    js: &jetstream::Context,
    flusher: &SpanFlusher,
    parent: &Context,
    mut msg: Outgoing,
    extra: Vec<KeyValue>,
) -> Result<(), PublishFailed> {
    let producer = stamp_producer_span(parent, &msg.subject, &msg.msg_id, &mut msg.headers, extra);
    if flusher.flush_within(FLUSH_WAIT).await == Flushed::NotYet {
        // Sent anyway (telemetry must not stop the business): were this process killed
        // before the flush ends, the consumer's span would lack its parent.
        tracing::warn!(subject = %msg.subject, "producer span not yet exported as the message leaves");
    }
    let (subject, msg_id) = (msg.subject.clone(), msg.msg_id.clone());
    let sent = send(js, msg).await;
    if let Err(err) = &sent {
        tracing::warn!(%subject, %msg_id, error = %err, "message not sent; it will be sent again");
        mark_unsent(&producer, &subject, &msg_id, err);
        // Out now: a process killed before its next flush must not leave the producer span
        // looking like a message that was delivered and never processed.
        flusher.flush().await;
    }
    sent
}

/// The name of the span that marks a publish that did not reach the stream.
pub const SEND_FAILED: &str = "send failed";

fn mark_unsent(producer: &Context, subject: &str, msg_id: &str, err: &PublishFailed) {
    let tracer = global::tracer("checkout-saga");
    let mut span = tracer
        .span_builder(format!("{SEND_FAILED} {subject}"))
        .with_kind(SpanKind::Internal)
        .with_attributes(vec![
            KeyValue::new("messaging.system", SYSTEM),
            KeyValue::new("messaging.destination.name", subject.to_owned()),
            KeyValue::new("messaging.message.id", msg_id.to_owned()),
            KeyValue::new("error.type", "publish_failed"),
        ])
        .start_with_context(&tracer, producer);
    use opentelemetry::trace::Span as _;
    span.set_status(opentelemetry::trace::Status::error(err.to_string()));
    span.end();
}

/// Publishes an already stamped message and waits for the stream's ack, sending it again
/// under the same `Nats-Msg-Id` while a cluster elects a stream leader (bounded: see
/// [`AckRetry::DEFAULT`]); the duplicate window makes a send that was stored after all count
/// once.
pub async fn send(js: &jetstream::Context, mut msg: Outgoing) -> Result<(), PublishFailed> {
    crate::broker_trace::mark(&mut msg.headers);
    let subject = msg.subject.clone();
    let (result, _attempts) = send_until_acked(AckRetry::DEFAULT, || {
        let publish = PublishMessage::build()
            .payload(msg.payload.clone())
            .headers(msg.headers.clone())
            .message_id(msg.msg_id.clone());
        async {
            match js.send_publish(msg.subject.clone(), publish).await {
                Ok(ack) => ack.await.map(drop),
                Err(e) => Err(e),
            }
        }
    })
    .await;
    crate::metrics::get().sent(&subject, result.is_ok());
    result.map_err(|source| PublishFailed::Publish { subject, source })
}

/// Where a JetStream message was stored and how long it waited there, from its metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// The stream that held it.
    pub stream: String,
    /// Its sequence in that stream.
    pub sequence: u64,
    /// From its storing (the server's clock) to now (this process's), in milliseconds: the
    /// time it waited in the stream for this delivery, redeliveries' waits included.
    pub waited_ms: f64,
}

impl Stored {
    /// What `message`'s metadata says; `None` for a message without JetStream metadata.
    pub fn of(message: &async_nats::jetstream::Message) -> Option<Stored> {
        let info = message.info().ok()?;
        let waited = async_nats::datetime::now() - info.published;
        Some(Stored {
            stream: info.stream.to_owned(),
            sequence: info.stream_sequence,
            // A clock behind the server's reads as no wait rather than a negative one.
            waited_ms: (waited.as_seconds_f64() * 1e3).max(0.0),
        })
    }
}

/// A CONSUMER span `process <subject>` whose parent is the producer span in `headers`, with
/// its delivery count (on redeliveries) and, from `stored`, the stream that held the message
/// and how long it waited there: so a slow step shows whether it waited on the broker's queue
/// or on the worker.
///
/// The parent is set before the span is entered, as tracing-opentelemetry requires; the
/// span's `trace_id` and `span_id` are recorded as fields so that every log line inside it
/// carries them.
pub fn consumer_span(
    subject: &str,
    headers: Option<&HeaderMap>,
    consumer: &str,
    msg_id: &str,
    delivered: i64,
    stored: Option<&Stored>,
) -> tracing::Span {
    let span = tracing::info_span!(
        "process",
        otel.name = %format!("process {subject}"),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        otel.status_message = tracing::field::Empty,
        messaging.system = SYSTEM,
        messaging.destination.name = %subject,
        messaging.operation.type = "process",
        messaging.consumer.group.name = %consumer,
        messaging.message.id = %msg_id,
        messaging.nats.delivery_count = tracing::field::Empty,
        messaging.nats.stream = tracing::field::Empty,
        messaging.nats.stream_sequence = tracing::field::Empty,
        messaging.nats.stream_wait_ms = tracing::field::Empty,
        saga.id = tracing::field::Empty,
        saga.step = tracing::field::Empty,
        saga.phase = tracing::field::Empty,
        saga.replayed = tracing::field::Empty,
        refusal.code = tracing::field::Empty,
        failure.code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    if delivered > 1 {
        span.record("messaging.nats.delivery_count", delivered);
    }
    if let Some(stored) = stored {
        span.record("messaging.nats.stream", stored.stream.as_str());
        span.record("messaging.nats.stream_sequence", stored.sequence);
        span.record("messaging.nats.stream_wait_ms", stored.waited_ms);
    }
    let _ = span.set_parent(propagation::extract(headers));
    record_ids(&span);
    span
}

/// Records the span's OpenTelemetry ids as `trace_id` and `span_id` fields.
pub fn record_ids(span: &tracing::Span) {
    let cx = span.context();
    let otel = cx.span();
    let sc = otel.span_context();
    if sc.is_valid() {
        span.record("trace_id", sc.trace_id().to_string());
        span.record("span_id", sc.span_id().to_string());
    }
}

/// Marks a tracing span as failed, with the reason as its status message.
pub fn mark_error(span: &tracing::Span, reason: &str) {
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_message", reason);
}
