//! The OTLP exporters of metrics and logs, next to the span exporter of
//! [`crate::telemetry`]. Each signal can be turned off with the standard
//! `OTEL_METRICS_EXPORTER=none` / `OTEL_LOGS_EXPORTER=none`.
//!
//! ```text
//!  Metrics (crate::metrics) ─▶ PeriodicReader (OTEL_METRIC_EXPORT_INTERVAL) ─▶ OTLP gRPC
//!  tracing events ─▶ OpenTelemetryTracingBridge ─▶ BatchLogProcessor ─────────▶ OTLP gRPC
//! ```

use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::{BatchConfigBuilder, BatchLogProcessor, SdkLoggerProvider};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use std::time::Duration;

/// Whether the standard `OTEL_<SIGNAL>_EXPORTER` variable leaves `signal` on.
fn enabled(variable: &str) -> bool {
    std::env::var(variable).map_or(true, |v| v != "none")
}

/// A meter provider exporting over OTLP gRPC, or `None` when metrics are off. Temporality
/// stays cumulative (the SDK's default), which is what Prometheus expects.
pub fn meter_provider(
    resource: &Resource,
    endpoint: Option<&str>,
) -> Result<Option<SdkMeterProvider>, opentelemetry_otlp::ExporterBuildError> {
    if !enabled("OTEL_METRICS_EXPORTER") {
        return Ok(None);
    }
    let mut exporter = opentelemetry_otlp::MetricExporter::builder().with_tonic();
    if let Some(endpoint) = endpoint {
        exporter = exporter.with_endpoint(endpoint.to_owned());
    }
    // The reader takes its interval from OTEL_METRIC_EXPORT_INTERVAL (60 s by default).
    let reader = PeriodicReader::builder(exporter.build()?).build();
    Ok(Some(
        SdkMeterProvider::builder()
            .with_resource(resource.clone())
            .with_reader(reader)
            .build(),
    ))
}

/// A logger provider exporting over OTLP gRPC, or `None` when logs are off.
pub fn logger_provider(
    resource: &Resource,
    endpoint: Option<&str>,
) -> Result<Option<SdkLoggerProvider>, opentelemetry_otlp::ExporterBuildError> {
    if !enabled("OTEL_LOGS_EXPORTER") {
        return Ok(None);
    }
    let mut exporter = opentelemetry_otlp::LogExporter::builder().with_tonic();
    if let Some(endpoint) = endpoint {
        exporter = exporter.with_endpoint(endpoint.to_owned());
    }
    // Like spans: the default queue (2,048) drops records under load, and its 1 s delay keeps
    // a saga's logs from the backend for longer than its spans.
    let batch = BatchConfigBuilder::default()
        .with_max_queue_size(65_536)
        .with_max_export_batch_size(1_024)
        .with_scheduled_delay(Duration::from_millis(200))
        .build();
    let processor = BatchLogProcessor::builder(exporter.build()?)
        .with_batch_config(batch)
        .build();
    Ok(Some(
        SdkLoggerProvider::builder()
            .with_resource(resource.clone())
            .with_log_processor(processor)
            .build(),
    ))
}

/// Whether a log record's target is the telemetry pipeline itself: those records must not be
/// exported through it (a failing export would log, and export that log, and fail again).
pub fn is_pipeline_target(target: &str) -> bool {
    ["opentelemetry", "tonic", "h2", "hyper", "tower", "reqwest"]
        .iter()
        .any(|prefix| target.starts_with(prefix))
}
