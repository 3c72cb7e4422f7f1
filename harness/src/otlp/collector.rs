//! What the receiver stores, and the gRPC services that fill it: spans (or only their count
//! per service, for a benchmark), log records and the latest point of each metric series.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::LogsService;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::MetricsService;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::{Request, Response, Status};

use crate::signals::{ReceivedLog, ReceivedPoint, SeriesKey, flatten_logs, flatten_metrics};
use crate::span::{ReceivedSpan, flatten};

/// Spans received so far, shared between the gRPC handler and the owner.
#[derive(Debug)]
pub(super) struct Store {
    pub(super) spans: Vec<ReceivedSpan>,
    pub(super) capacity: usize,
    pub(super) dropped: u64,
    /// Log records, in arrival order (bounded by `capacity` too).
    pub(super) logs: Vec<ReceivedLog>,
    /// The latest point of each metric series.
    pub(super) metrics: BTreeMap<SeriesKey, ReceivedPoint>,
    /// Whether spans are kept at all; a benchmark only counts them, so that the receiver's
    /// own CPU and memory stay small and flat however long it runs.
    pub(super) keep: bool,
    /// Spans received per `service.name`, kept or not.
    pub(super) counts: BTreeMap<String, u64>,
}

/// The gRPC service implementation; cheap to clone into tonic.
#[derive(Debug, Clone)]
pub(super) struct Collector {
    pub(super) store: Arc<Mutex<Store>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let request = request.into_inner();
        let mut store = lock(&self.store);
        count(&mut store.counts, &request);
        if !store.keep {
            return Ok(Response::new(ExportTraceServiceResponse::default()));
        }
        drop(store);
        let spans = flatten(request);
        let mut store = lock(&self.store);
        let room = store.capacity.saturating_sub(store.spans.len());
        let overflow = spans.len().saturating_sub(room);
        store.dropped += overflow as u64;
        store.spans.extend(spans.into_iter().take(room));
        // Spans over the cap are dropped silently towards the exporter: reporting a partial
        // success would only make it log warnings; the owner sees the count via `dropped()`.
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let points = flatten_metrics(request.into_inner());
        let mut store = lock(&self.store);
        for (key, point) in points {
            // Batches can arrive out of order; a cumulative point never goes back in time.
            let newer = store
                .metrics
                .get(&key)
                .is_none_or(|old| old.time_unix_nano <= point.time_unix_nano);
            if newer {
                store.metrics.insert(key, point);
            }
        }
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Collector {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        if !lock(&self.store).keep {
            // A counting receiver (the benchmark's) keeps nothing, or a long run would hold
            // every log record in memory.
            return Ok(Response::new(ExportLogsServiceResponse::default()));
        }
        let logs = flatten_logs(request.into_inner());
        let mut store = lock(&self.store);
        let room = store.capacity.saturating_sub(store.logs.len());
        store.dropped += logs.len().saturating_sub(room) as u64;
        store.logs.extend(logs.into_iter().take(room));
        Ok(Response::new(ExportLogsServiceResponse::default()))
    }
}

/// Adds the spans of one export request to the per-service counts, without converting them.
pub(super) fn count(counts: &mut BTreeMap<String, u64>, request: &ExportTraceServiceRequest) {
    for resource_spans in &request.resource_spans {
        let spans: usize = resource_spans
            .scope_spans
            .iter()
            .map(|scope| scope.spans.len())
            .sum();
        if spans == 0 {
            continue;
        }
        let service = crate::span::service_name(resource_spans.resource.as_ref());
        *counts.entry(service).or_default() += spans as u64;
    }
}

/// Locks the store, ignoring poisoning: the store is only ever appended to or replaced, so a
/// panic elsewhere cannot leave it inconsistent, and a receiver must keep receiving.
pub(super) fn lock(store: &Mutex<Store>) -> MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(PoisonError::into_inner)
}
