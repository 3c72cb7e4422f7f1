//! An in-process OTLP/gRPC receiver that keeps every span and log record, and the latest point
//! of every metric series, in memory.
//!
//! Tests and `checkout-tools chaos` point the services' OTLP exporters here and then assert on
//! the complete traces, the logs and the metrics; `checkout-tools demo` listens on the standard
//! port 4317 and renders them. A real
//! collector would add a dependency and a process for no gain.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::LogsServiceServer;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::MetricsServiceServer;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;

mod collector;

use crate::signals::{ReceivedLog, ReceivedPoint};
use crate::span::ReceivedSpan;
use collector::{Collector, Store, lock};

/// Default cap on stored spans. Roughly a gigabyte at worst, which bounds memory on long chaos
/// runs while being far above what any single run is expected to produce.
pub const DEFAULT_MAX_SPANS: usize = 2_000_000;

/// Largest accepted export request. Tonic's 4 MiB default is enough for normal batches, but a
/// retrying exporter flushing a backlog after an outage can send more, and rejecting it would
/// look like lost spans.
const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

/// How often [`OtlpReceiver::wait_for`] re-checks its predicate.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How long [`OtlpReceiver::shutdown`] lets open exporter connections finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// A running OTLP/gRPC receiver of traces, metrics and logs.
///
/// The server runs on a task of the Tokio runtime that started it and stops when the receiver
/// is dropped or [`OtlpReceiver::shutdown`] is called.
#[derive(Debug)]
pub struct OtlpReceiver {
    addr: SocketAddr,
    store: Arc<Mutex<Store>>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl OtlpReceiver {
    /// Starts a receiver on a free port of 127.0.0.1.
    pub async fn start() -> anyhow::Result<OtlpReceiver> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
    }

    /// Starts a receiver on `addr`, e.g. `127.0.0.1:4317` so unconfigured exporters find it.
    /// Port 0 picks a free port; [`OtlpReceiver::endpoint`] reports the real one.
    pub async fn start_on(addr: SocketAddr) -> anyhow::Result<OtlpReceiver> {
        Self::listen(addr, true).await
    }

    /// Starts a receiver on a free port of 127.0.0.1 that only counts spans per service
    /// ([`OtlpReceiver::counts`]) and keeps none, for benchmarks and soak runs.
    pub async fn start_counting() -> anyhow::Result<OtlpReceiver> {
        Self::listen(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), false).await
    }

    async fn listen(addr: SocketAddr, keep: bool) -> anyhow::Result<OtlpReceiver> {
        let listener = TcpListener::bind(addr).await.with_context(|| {
            format!("binding the OTLP receiver to {addr} (is another collector running there?)")
        })?;
        let addr = listener
            .local_addr()
            .context("reading the OTLP receiver address")?;
        let store = Arc::new(Mutex::new(Store {
            spans: Vec::new(),
            capacity: DEFAULT_MAX_SPANS,
            dropped: 0,
            logs: Vec::new(),
            metrics: BTreeMap::new(),
            keep,
            counts: BTreeMap::new(),
        }));
        let collector = Collector {
            store: Arc::clone(&store),
        };
        let service =
            TraceServiceServer::new(collector.clone()).max_decoding_message_size(MAX_REQUEST_BYTES);
        let metrics = MetricsServiceServer::new(collector.clone())
            .max_decoding_message_size(MAX_REQUEST_BYTES);
        let logs = LogsServiceServer::new(collector).max_decoding_message_size(MAX_REQUEST_BYTES);
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let result = tonic::transport::Server::builder()
                .add_service(service)
                .add_service(metrics)
                .add_service(logs)
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                    // A dropped sender means the receiver is gone: stop as well.
                    let _ = stopped.await;
                })
                .await;
            if let Err(err) = result {
                eprintln!("OTLP receiver on {addr} stopped with an error: {err}");
            }
        });
        Ok(OtlpReceiver {
            addr,
            store,
            stop: Some(stop),
            server: Some(server),
        })
    }

    /// The URL to configure as the OTLP gRPC endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address the receiver listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A copy of every stored span, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        lock(&self.store).spans.clone()
    }

    /// A copy of the stored spans of one trace (`trace_id` in lowercase hex), in arrival order.
    pub fn trace(&self, trace_id: &str) -> Vec<ReceivedSpan> {
        lock(&self.store)
            .spans
            .iter()
            .filter(|span| span.trace_id == trace_id)
            .cloned()
            .collect()
    }

    /// Polls every 50 ms until `pred` holds for the stored spans or `timeout` passes; returns
    /// whether it held. The predicate runs under the store lock, so it should be quick and must
    /// not call back into the receiver.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&lock(&self.store).spans) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Every log record of one trace (`trace_id` in lowercase hex), in arrival order.
    pub fn logs_of_trace(&self, trace_id: &str) -> Vec<ReceivedLog> {
        lock(&self.store)
            .logs
            .iter()
            .filter(|log| log.trace_id == trace_id)
            .cloned()
            .collect()
    }

    /// Every stored log record, in arrival order.
    pub fn logs(&self) -> Vec<ReceivedLog> {
        lock(&self.store).logs.clone()
    }

    /// The latest point of every series of the metric `name`.
    pub fn metric(&self, name: &str) -> Vec<ReceivedPoint> {
        lock(&self.store)
            .metrics
            .values()
            .filter(|point| point.name == name)
            .cloned()
            .collect()
    }

    /// Polls every 50 ms until `pred` holds for this receiver or `timeout` passes; returns
    /// whether it held. For logs and metrics, which [`OtlpReceiver::wait_for`] does not see.
    pub async fn wait_until(&self, timeout: Duration, pred: impl Fn(&Self) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Forgets everything stored and resets the dropped counter, e.g. between chaos rounds.
    pub fn clear(&self) {
        let mut store = lock(&self.store);
        store.spans = Vec::new();
        store.logs = Vec::new();
        store.metrics = BTreeMap::new();
        store.dropped = 0;
    }

    /// Spans received per `service.name` since the start or the last
    /// [`OtlpReceiver::reset_counts`], whether they were kept or not.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        lock(&self.store).counts.clone()
    }

    /// Spans received in all, as counted by [`OtlpReceiver::counts`].
    pub fn count(&self) -> u64 {
        lock(&self.store).counts.values().sum()
    }

    /// Whether spans and log records are kept from now on (a counting receiver keeps none
    /// until told to, e.g. for one run whose spans are read afterwards).
    pub fn keep_spans(&self, keep: bool) {
        lock(&self.store).keep = keep;
    }

    /// Starts counting from zero (stored spans are left alone).
    pub fn reset_counts(&self) {
        lock(&self.store).counts.clear();
    }

    /// How many spans and log records were discarded because the store was full.
    pub fn dropped(&self) -> u64 {
        lock(&self.store).dropped
    }

    /// Changes the maximum number of stored spans (default [`DEFAULT_MAX_SPANS`]). Spans already
    /// stored are kept even if they exceed the new cap.
    pub fn set_capacity(&self, max_spans: usize) {
        lock(&self.store).capacity = max_spans;
    }

    /// Stops the server, giving connected exporters a moment to finish their requests, and
    /// waits until the port is released.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut server) = self.server.take() {
            // Exporters keep idle HTTP/2 connections open, which would hold a graceful shutdown
            // forever; after the grace period the task is aborted instead.
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut server)
                .await
                .is_err()
            {
                server.abort();
                let _ = server.await;
            }
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Drop cannot wait for a graceful stop, so abort: that closes the listener at once.
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}
