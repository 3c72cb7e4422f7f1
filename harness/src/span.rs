//! The flattened span model the receiver stores, and its conversion from OTLP protobuf.
//!
//! OTLP nests spans under resource and scope and encodes ids as bytes and attributes as typed
//! unions; assertions and the demo's terminal output want one flat, owned, string-typed record
//! per span instead, so the conversion happens once, on receipt.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::{self as proto, status::StatusCode};
use serde::Serialize;

/// The resource attribute that names the emitting service.
const SERVICE_NAME_KEY: &str = "service.name";

/// The role of a span, mirroring OTLP's `SpanKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum SpanKind {
    /// Work inside one service.
    Internal,
    /// Handling of a synchronous incoming request.
    Server,
    /// An outgoing synchronous request.
    Client,
    /// Publishing a message (e.g. to NATS).
    Producer,
    /// Handling a received message.
    Consumer,
    /// The exporter did not say, or sent a value this version does not know.
    Unspecified,
}

impl SpanKind {
    /// Maps OTLP's numeric kind; unknown numbers become `Unspecified` rather than an error
    /// because a receiver must not reject spans from newer exporters.
    fn from_proto(kind: i32) -> SpanKind {
        match proto::span::SpanKind::try_from(kind) {
            Ok(proto::span::SpanKind::Internal) => SpanKind::Internal,
            Ok(proto::span::SpanKind::Server) => SpanKind::Server,
            Ok(proto::span::SpanKind::Client) => SpanKind::Client,
            Ok(proto::span::SpanKind::Producer) => SpanKind::Producer,
            Ok(proto::span::SpanKind::Consumer) => SpanKind::Consumer,
            Ok(proto::span::SpanKind::Unspecified) | Err(_) => SpanKind::Unspecified,
        }
    }
}

/// One received span, flattened out of its OTLP resource and scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReceivedSpan {
    /// Trace id as 32 lowercase hex characters.
    pub trace_id: String,
    /// Span id as 16 lowercase hex characters.
    pub span_id: String,
    /// Parent span id as 16 hex characters; `None` for a root span.
    pub parent_span_id: Option<String>,
    /// Span name.
    pub name: String,
    /// Span kind.
    pub kind: SpanKind,
    /// The `service.name` resource attribute, or empty if the exporter sent none.
    pub service_name: String,
    /// Span attributes with every value stringified: strings raw, integers in decimal, booleans
    /// as `true`/`false`, bytes as hex, arrays and maps in a JSON-like form.
    pub attributes: BTreeMap<String, String>,
    /// Whether the span status code is `ERROR`.
    pub error: bool,
    /// The status message (usually only set on errors).
    pub status_message: String,
    /// Start time in nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
    /// End time in nanoseconds since the Unix epoch.
    pub end_unix_nanos: u64,
    /// Links as `(trace_id, span_id)` hex pairs, e.g. from a consumer to the producer span.
    pub links: Vec<(String, String)>,
    /// Events recorded on the span (e.g. `price_mismatch`), in order.
    pub events: Vec<SpanEvent>,
}

/// One event of a span, its attributes stringified like the span's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpanEvent {
    /// The event's name.
    pub name: String,
    /// Its attributes.
    pub attributes: BTreeMap<String, String>,
}

impl ReceivedSpan {
    /// Duration in nanoseconds; zero if the end precedes the start (clock skew between hosts).
    pub fn duration_nanos(&self) -> u64 {
        self.end_unix_nanos.saturating_sub(self.start_unix_nanos)
    }

    /// Looks up an attribute value.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// The `service.name` of a resource, empty when it has none.
pub(crate) fn service_name(
    resource: Option<&opentelemetry_proto::tonic::resource::v1::Resource>,
) -> String {
    resource
        .and_then(|resource| {
            resource
                .attributes
                .iter()
                .find(|kv| kv.key == SERVICE_NAME_KEY)
        })
        .and_then(|kv| kv.value.as_ref())
        .map(stringify)
        .unwrap_or_default()
}

/// Flattens an export request into one [`ReceivedSpan`] per span, in request order.
pub(crate) fn flatten(request: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for resource_spans in request.resource_spans {
        let service_name = service_name(resource_spans.resource.as_ref());
        for scope_spans in resource_spans.scope_spans {
            out.extend(
                scope_spans
                    .spans
                    .into_iter()
                    .map(|span| convert(span, &service_name)),
            );
        }
    }
    out
}

fn convert(span: proto::Span, service_name: &str) -> ReceivedSpan {
    let (error, status_message) = match span.status {
        Some(status) => (status.code == StatusCode::Error as i32, status.message),
        None => (false, String::new()),
    };
    ReceivedSpan {
        trace_id: hex(&span.trace_id),
        span_id: hex(&span.span_id),
        // OTLP marks a root by an empty parent id; some exporters send eight zero bytes instead.
        parent_span_id: (!span.parent_span_id.iter().all(|byte| *byte == 0))
            .then(|| hex(&span.parent_span_id)),
        name: span.name,
        kind: SpanKind::from_proto(span.kind),
        service_name: service_name.to_owned(),
        attributes: attributes(&span.attributes),
        error,
        status_message,
        start_unix_nanos: span.start_time_unix_nano,
        end_unix_nanos: span.end_time_unix_nano,
        links: span
            .links
            .iter()
            .map(|link| (hex(&link.trace_id), hex(&link.span_id)))
            .collect(),
        events: span
            .events
            .iter()
            .map(|event| SpanEvent {
                name: event.name.clone(),
                attributes: attributes(&event.attributes),
            })
            .collect(),
    }
}

pub(crate) fn attributes(key_values: &[KeyValue]) -> BTreeMap<String, String> {
    key_values
        .iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map(stringify).unwrap_or_default(),
            )
        })
        .collect()
}

/// Renders any attribute value as a string, so tests can compare attributes without caring how
/// an exporter chose to type them.
pub(crate) fn stringify(value: &AnyValue) -> String {
    match &value.value {
        None => String::new(),
        Some(Value::StringValue(text)) => text.clone(),
        Some(Value::BoolValue(flag)) => flag.to_string(),
        Some(Value::IntValue(number)) => number.to_string(),
        Some(Value::DoubleValue(number)) => number.to_string(),
        Some(Value::BytesValue(bytes)) => hex(bytes),
        Some(Value::ArrayValue(array)) => {
            let items: Vec<String> = array.values.iter().map(stringify).collect();
            format!("[{}]", items.join(", "))
        }
        Some(Value::KvlistValue(list)) => {
            let items: Vec<String> = list
                .values
                .iter()
                .map(|kv| {
                    format!(
                        "{}: {}",
                        kv.key,
                        kv.value.as_ref().map(stringify).unwrap_or_default()
                    )
                })
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        // Only meaningful for the profiling signal; a trace receiver ignores it per the spec.
        Some(Value::StringValueStrindex(_)) => String::new(),
    }
}

/// Lowercase hex, the form trace and span ids take in every OpenTelemetry UI and log.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{byte:02x}");
    }
    out
}
