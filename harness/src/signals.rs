//! Metrics and log records as the OTLP receiver keeps them, flattened from the protobuf
//! requests into plain values tests can query.
//!
//! ```text
//!  ExportMetricsServiceRequest ─ flatten_metrics ─▶ (series key ─▶ latest ReceivedPoint)
//!  ExportLogsServiceRequest    ─ flatten_logs    ─▶ Vec<ReceivedLog>
//! ```
//!
//! Exporters send cumulative points again and again; only the latest point of each series
//! (resource, metric, attributes) is kept, so a sum over series is the current total.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point::Value};
use serde::Serialize;

use crate::span::{attributes, hex, stringify};

/// One log record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReceivedLog {
    /// `service.name` of the process that wrote it.
    pub service: String,
    /// Every resource attribute of that process.
    pub resource: BTreeMap<String, String>,
    /// Trace id in lowercase hex, empty when written outside any span.
    pub trace_id: String,
    /// Span id in lowercase hex, empty when written outside any span.
    pub span_id: String,
    /// `INFO`, `WARN`, ...
    pub severity: String,
    /// The message.
    pub body: String,
    /// The event's fields.
    pub attributes: BTreeMap<String, String>,
}

/// The value of one data point.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum PointValue {
    /// A sum (counter or up-down counter).
    Sum {
        /// The cumulative value.
        value: f64,
        /// Counter (true) or up-down counter.
        monotonic: bool,
    },
    /// A gauge.
    Gauge(f64),
    /// An explicit-bucket histogram.
    Histogram {
        /// Recorded values.
        count: u64,
        /// Their sum.
        sum: f64,
        /// Upper bounds of the buckets.
        bounds: Vec<f64>,
        /// Counts per bucket (one more than the bounds).
        buckets: Vec<u64>,
    },
}

/// The latest point of one series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReceivedPoint {
    /// `service.name` of the process that sent it.
    pub service: String,
    /// Every resource attribute of that process.
    pub resource: BTreeMap<String, String>,
    /// Metric name.
    pub name: String,
    /// Its unit.
    pub unit: String,
    /// Its description.
    pub description: String,
    /// The point's attributes.
    pub attributes: BTreeMap<String, String>,
    /// When it was observed.
    pub time_unix_nano: u64,
    /// Its value.
    pub value: PointValue,
}

impl ReceivedPoint {
    /// The sum's or gauge's value, or the histogram's count.
    pub fn number(&self) -> f64 {
        match &self.value {
            PointValue::Sum { value, .. } | PointValue::Gauge(value) => *value,
            PointValue::Histogram { count, .. } => *count as f64,
        }
    }
}

/// Identifies a series: resource attributes, metric name and point attributes.
pub(crate) type SeriesKey = (String, String, String);

fn service_name(resource: &BTreeMap<String, String>) -> String {
    resource.get("service.name").cloned().unwrap_or_default()
}

fn number(value: Option<&Value>) -> f64 {
    match value {
        Some(Value::AsDouble(v)) => *v,
        Some(Value::AsInt(v)) => *v as f64,
        None => 0.0,
    }
}

/// The points of a metrics request, keyed by series.
pub(crate) fn flatten_metrics(
    request: ExportMetricsServiceRequest,
) -> Vec<(SeriesKey, ReceivedPoint)> {
    let mut out = Vec::new();
    for rm in request.resource_metrics {
        let resource = attributes(&rm.resource.map(|r| r.attributes).unwrap_or_default());
        let service = service_name(&resource);
        let resource_key = format!("{resource:?}");
        for metric in rm.scope_metrics.into_iter().flat_map(|sm| sm.metrics) {
            let point = |attrs: &[KeyValue], time_unix_nano: u64, value: PointValue| {
                let attributes = attributes(attrs);
                let key = (
                    resource_key.clone(),
                    metric.name.clone(),
                    format!("{attributes:?}"),
                );
                let point = ReceivedPoint {
                    service: service.clone(),
                    resource: resource.clone(),
                    name: metric.name.clone(),
                    unit: metric.unit.clone(),
                    description: metric.description.clone(),
                    attributes,
                    time_unix_nano,
                    value,
                };
                (key, point)
            };
            match &metric.data {
                Some(Data::Sum(sum)) => out.extend(sum.data_points.iter().map(|p| {
                    let value = PointValue::Sum {
                        value: number(p.value.as_ref()),
                        monotonic: sum.is_monotonic,
                    };
                    point(&p.attributes, p.time_unix_nano, value)
                })),
                Some(Data::Gauge(gauge)) => out.extend(gauge.data_points.iter().map(|p| {
                    let value = PointValue::Gauge(number(p.value.as_ref()));
                    point(&p.attributes, p.time_unix_nano, value)
                })),
                Some(Data::Histogram(h)) => out.extend(h.data_points.iter().map(|p| {
                    let value = PointValue::Histogram {
                        count: p.count,
                        sum: p.sum.unwrap_or_default(),
                        bounds: p.explicit_bounds.clone(),
                        buckets: p.bucket_counts.clone(),
                    };
                    point(&p.attributes, p.time_unix_nano, value)
                })),
                // Not emitted by this project; ignored rather than rejected.
                _ => {}
            }
        }
    }
    out
}

/// The records of a logs request.
pub(crate) fn flatten_logs(request: ExportLogsServiceRequest) -> Vec<ReceivedLog> {
    let mut out = Vec::new();
    for rl in request.resource_logs {
        let resource = attributes(&rl.resource.map(|r| r.attributes).unwrap_or_default());
        let service = service_name(&resource);
        for record in rl.scope_logs.into_iter().flat_map(|sl| sl.log_records) {
            out.push(ReceivedLog {
                service: service.clone(),
                resource: resource.clone(),
                trace_id: hex(&record.trace_id),
                span_id: hex(&record.span_id),
                severity: record.severity_text,
                body: record.body.as_ref().map(stringify).unwrap_or_default(),
                attributes: attributes(&record.attributes),
            });
        }
    }
    out
}
