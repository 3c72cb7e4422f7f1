//! The OTLP exporters of metrics and logs, next to the span exporter of
//! [`crate::telemetry`]. Each signal can be turned off with the standard
//! `OTEL_METRICS_EXPORTER=none` / `OTEL_LOGS_EXPORTER=none`.
//!
//! ```text
//!  Metrics (crate::metrics) ─▶ PeriodicReader (OTEL_METRIC_EXPORT_INTERVAL) ─▶ OTLP gRPC
//!  tracing events ─▶ OpenTelemetryTracingBridge ─▶ EventTime ─▶ BatchLogProcessor ─▶ OTLP gRPC
//! ```
//!
//! The bridge sets only a record's observed time (the SDK's logger does, as it hands the
//! record to the processors); [`EventTime`] dates the record itself, so a receiver that reads
//! the event time (OTLP `time_unix_nano`, otelite's logs view) does not show 1970.

use opentelemetry::InstrumentationScope;
use opentelemetry::logs::LogRecord as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{
    BatchConfigBuilder, BatchLogProcessor, LogProcessor, SdkLogRecord, SdkLoggerProvider,
};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use std::time::{Duration, SystemTime};

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
            // Processors see a record in the order they were added: dated before it is queued.
            .with_log_processor(EventTime)
            .with_log_processor(processor)
            .build(),
    ))
}

/// Sets a log record's event time, when nothing did, to its observed time: the bridge emits
/// the record as the `tracing` event happens, so the two are the same instant. Ahead of the
/// batch processor, which exports the record as it finds it.
#[derive(Debug)]
pub struct EventTime;

impl LogProcessor for EventTime {
    fn emit(&self, record: &mut SdkLogRecord, _scope: &InstrumentationScope) {
        if record.timestamp().is_none() {
            let observed = record.observed_timestamp();
            record.set_timestamp(observed.unwrap_or_else(SystemTime::now));
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    /// Holds nothing to flush or release.
    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Whether a log record's target is the telemetry pipeline itself: those records must not be
/// exported through it (a failing export would log, and export that log, and fail again).
pub fn is_pipeline_target(target: &str) -> bool {
    ["opentelemetry", "tonic", "h2", "hyper", "tower", "reqwest"]
        .iter()
        .any(|prefix| target.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::logs::{Logger as _, LoggerProvider as _};
    use std::sync::{Arc, Mutex};

    /// A record's event time and observed time.
    type Times = (Option<SystemTime>, Option<SystemTime>);

    /// Keeps each record's times as the next processor sees them.
    #[derive(Debug, Default)]
    struct Seen(Arc<Mutex<Vec<Times>>>);

    impl LogProcessor for Seen {
        fn emit(&self, record: &mut SdkLogRecord, _scope: &InstrumentationScope) {
            let times = (record.timestamp(), record.observed_timestamp());
            self.0.lock().unwrap_or_else(|e| e.into_inner()).push(times);
        }

        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }

        fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
            Ok(())
        }
    }

    #[test]
    fn a_record_without_an_event_time_gets_its_observed_time_and_a_dated_one_keeps_its_own() {
        let seen = Seen::default();
        let times = seen.0.clone();
        let provider = SdkLoggerProvider::builder()
            .with_log_processor(EventTime)
            .with_log_processor(seen)
            .build();
        let logger = provider.logger("test");
        logger.emit(logger.create_log_record());
        let earlier = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut dated = logger.create_log_record();
        dated.set_timestamp(earlier);
        logger.emit(dated);
        let times = times.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert_eq!(times.len(), 2);
        let (event, observed) = times[0];
        assert!(observed.is_some(), "the logger sets the observed time");
        assert_eq!(event, observed, "dated when observed");
        assert_eq!(times[1].0, Some(earlier), "an event time given is kept");
    }
}
