//! Telemetry set-up: OTLP export of traces, metrics and logs, W3C propagation, structured logs
//! that carry trace ids.
//!
//! Every `tracing` event goes to standard error (text or JSON) and, through the OpenTelemetry
//! log bridge, out over OTLP. The bridge takes the trace and span ids from the OpenTelemetry
//! context that is current when the event is written: tracing-opentelemetry activates a
//! span's context when the span is entered, and code that logs about a span emitted later
//! (the orchestrator's saga and step spans) attaches that span's context itself.
//!
//! Export is configured by the standard `OTEL_*` variables, which the OpenTelemetry SDK reads
//! itself (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_TRACES_SAMPLER`, `OTEL_RESOURCE_ATTRIBUTES`,
//! ...); the binary passes the service name and whether to export at all.
//!
//! Two additions to the stock SDK:
//! - [`with_preset_ids`] lets the orchestrator emit a span whose ids were chosen (and stored)
//!   long before, possibly by another process: the SDK's `SpanBuilder::span_id` is ignored by
//!   `opentelemetry_sdk` 0.33, so the ids are handed to the id generator instead.
//! - [`SpanFlusher`] exports every finished span before a message that names it leaves the
//!   process, so that a process killed right after sending cannot leave a child whose parent
//!   was never exported. Concurrent callers share one flush (group commit).

pub use crate::flusher::{Flushed, SpanFlusher};
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry::{KeyValue, global};
use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, IdGenerator, RandomIdGenerator, SdkTracerProvider,
};
use std::cell::Cell;
use std::time::Duration;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How logs are written to standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for production.
    Json,
    /// Human-readable lines, for a terminal.
    Text,
}

/// What a service needs to set up its telemetry.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// `service.name` unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` say otherwise.
    pub service_name: String,
    /// Whether to export over OTLP at all (`OTEL_TRACES_EXPORTER=none` turns it off); metrics
    /// and logs can also be turned off alone (`OTEL_METRICS_EXPORTER`, `OTEL_LOGS_EXPORTER`).
    pub export: bool,
    /// Log format.
    pub log_format: LogFormat,
    /// Default log filter when `RUST_LOG` is unset.
    pub default_filter: String,
    /// The OTLP endpoint; `None` leaves it to `OTEL_EXPORTER_OTLP_ENDPOINT` (default
    /// `http://localhost:4317`).
    pub endpoint: Option<String>,
}

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built.
    #[error("building the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    /// A global subscriber was already installed.
    #[error("installing the log subscriber: {0}")]
    Subscriber(#[from] tracing_subscriber::util::TryInitError),
}

/// The running telemetry of one process; call [`Telemetry::shutdown`] before exiting.
pub struct Telemetry {
    provider: SdkTracerProvider,
    meters: Option<SdkMeterProvider>,
    loggers: Option<SdkLoggerProvider>,
    flusher: SpanFlusher,
}

/// Sets up export, propagation and logging. Must run inside the Tokio runtime, because the
/// gRPC exporter binds its connection to the runtime it is built in.
pub fn init(config: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    crate::propagation::install_propagators();
    let resource = resource(config);
    let provider = build_provider(config, &resource)?;
    global::set_tracer_provider(provider.clone());
    let endpoint = config.endpoint.as_deref();
    let (meters, loggers) = if config.export {
        (
            crate::otlp::meter_provider(&resource, endpoint)?,
            crate::otlp::logger_provider(&resource, endpoint)?,
        )
    } else {
        (None, None)
    };
    if let Some(meters) = &meters {
        global::set_meter_provider(meters.clone());
    }
    // Bind the instruments now: built before the provider is set, they would stay no-ops.
    crate::metrics::get();
    let logs = loggers.as_ref().map(|loggers| {
        OpenTelemetryTracingBridge::new(loggers).with_filter(filter_fn(|meta| {
            !crate::otlp::is_pipeline_target(meta.target())
        }))
    });
    let tracer = provider.tracer("checkout-saga");
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(&config.default_filter));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match config.log_format {
        LogFormat::Json => fmt
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .boxed(),
        LogFormat::Text => fmt.compact().boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .with(logs)
        .try_init()?;
    let flusher = SpanFlusher::start(config.export.then(|| provider.clone()));
    Ok(Telemetry {
        provider,
        meters,
        loggers,
        flusher,
    })
}

fn resource(config: &TelemetryConfig) -> Resource {
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(config.service_name.clone());
    }
    resource
        .with_attributes([KeyValue::new("service.namespace", "checkout-saga")])
        .build()
}

fn build_provider(
    config: &TelemetryConfig,
    resource: &Resource,
) -> Result<SdkTracerProvider, TelemetryError> {
    let mut builder = SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_id_generator(PresetIdGenerator::default());
    if config.export {
        use opentelemetry_otlp::WithExportConfig;
        let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
        if let Some(endpoint) = &config.endpoint {
            exporter = exporter.with_endpoint(endpoint.clone());
        }
        let exporter = exporter.build()?;
        // A checkout makes about twenty spans; the default queue of 2,048 would drop spans
        // under load, and the default 5 s delay would hold them long after the saga ended.
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(65_536)
            .with_max_export_batch_size(1_024)
            .with_scheduled_delay(Duration::from_millis(200))
            .build();
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch)
            .build();
        builder = builder.with_span_processor(crate::span_groups::GroupedExport::new(processor));
    }
    Ok(builder.build())
}

impl Telemetry {
    /// A handle that exports finished spans on demand.
    pub fn flusher(&self) -> SpanFlusher {
        self.flusher.clone()
    }

    /// Exports every span, log record and metric still buffered and stops the exporters.
    /// Logs go last, so that whatever the other shutdowns log is not lost.
    pub async fn shutdown(self) {
        let Telemetry {
            provider,
            meters,
            loggers,
            ..
        } = self;
        let result = tokio::task::spawn_blocking(move || {
            let mut errors = Vec::new();
            errors.extend(provider.shutdown().err().map(|e| format!("spans: {e}")));
            if let Some(meters) = meters {
                errors.extend(meters.shutdown().err().map(|e| format!("metrics: {e}")));
            }
            if let Some(loggers) = loggers {
                errors.extend(loggers.shutdown().err().map(|e| format!("logs: {e}")));
            }
            errors
        })
        .await;
        for err in result.unwrap_or_default() {
            eprintln!("telemetry shutdown: {err}");
        }
    }
}

thread_local! {
    static PRESET_TRACE_ID: Cell<Option<TraceId>> = const { Cell::new(None) };
    static PRESET_SPAN_ID: Cell<Option<SpanId>> = const { Cell::new(None) };
}

/// Random ids, unless [`with_preset_ids`] has chosen the next ones on this thread.
#[derive(Debug, Default)]
struct PresetIdGenerator(RandomIdGenerator);

impl IdGenerator for PresetIdGenerator {
    fn new_trace_id(&self) -> TraceId {
        PRESET_TRACE_ID
            .with(Cell::take)
            .unwrap_or_else(|| self.0.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        PRESET_SPAN_ID
            .with(Cell::take)
            .unwrap_or_else(|| self.0.new_span_id())
    }
}

/// Runs `start` (which must start exactly one span, synchronously) so that the span gets
/// `span_id`, and `trace_id` if it has no parent.
pub fn with_preset_ids<R>(trace_id: TraceId, span_id: SpanId, start: impl FnOnce() -> R) -> R {
    PRESET_TRACE_ID.with(|c| c.set(Some(trace_id)));
    PRESET_SPAN_ID.with(|c| c.set(Some(span_id)));
    let started = start();
    PRESET_TRACE_ID.with(|c| c.set(None));
    PRESET_SPAN_ID.with(|c| c.set(None));
    started
}

/// A fresh random span id, for a span that will be emitted later.
pub fn new_span_id() -> SpanId {
    RandomIdGenerator::default().new_span_id()
}

/// A fresh random trace id, for a saga that arrived without a trace.
pub fn new_trace_id() -> TraceId {
    RandomIdGenerator::default().new_trace_id()
}
