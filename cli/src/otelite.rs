//! A client of otelite's REST API (the `otelite` crate, 0.1.156, pinned in
//! `scripts/ensure-deps.sh`: `otelite serve` answers on
//! `127.0.0.1:3000` by default and takes OTLP on 4317 (gRPC) and 4318 (HTTP), on the same
//! address as its UI; `OTELITE_OTLP_GRPC_PORT` / `OTELITE_OTLP_HTTP_PORT` move them).
//!
//! Used to decide whether trace links may point at otelite (a link only once otelite holds the
//! trace) and by the end-to-end test that reads traces, logs and metrics back.
//!
//! Its web UI is a single page whose routes are `#<view>` only (`#traces`, `#logs`,
//! `#metrics`): it has no address for one trace, so a link to a trace is the traces view plus
//! the trace's JSON at `/api/traces/<trace id>`.

use anyhow::Context as _;
use serde::Deserialize;
use std::collections::HashMap;
use std::time::Duration;

/// Where `otelite serve` answers unless told otherwise.
pub const DEFAULT_URL: &str = "http://127.0.0.1:3000";
/// The command that installs it.
pub const INSTALL: &str = "cargo install otelite --locked --version 0.1.156";

/// What `GET /api/health` answers.
#[derive(Debug, Clone, Deserialize)]
pub struct Health {
    /// `healthy` when it serves.
    pub status: String,
    /// otelite's version.
    pub version: String,
    /// Its OTLP/gRPC port.
    pub otlp_grpc_port: u16,
    /// Its OTLP/HTTP port.
    pub otlp_http_port: u16,
}

/// One span as `GET /api/traces/<id>` returns it (the fields this project reads).
#[derive(Debug, Clone, Deserialize)]
pub struct Span {
    /// Hex span id.
    pub span_id: String,
    /// Hex trace id.
    pub trace_id: String,
    /// Hex parent span id; absent or empty for a root.
    #[serde(default)]
    pub parent_span_id: Option<String>,
    /// Span name.
    pub name: String,
    /// Start, Unix nanoseconds.
    pub start_time: i64,
    /// End, Unix nanoseconds.
    pub end_time: i64,
    /// Attributes, values as text.
    #[serde(default)]
    pub attributes: HashMap<String, String>,
    /// The resource of the process that sent it.
    #[serde(default)]
    pub resource: Option<Resource>,
}

/// A span's resource, as otelite returns it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Resource {
    /// Resource attributes (`service.name`, ...), values as text.
    #[serde(default)]
    pub attributes: HashMap<String, String>,
}

impl Span {
    /// The service that sent it (`service.name`), empty when otelite does not say.
    pub fn service(&self) -> &str {
        self.resource
            .as_ref()
            .and_then(|r| r.attributes.get("service.name"))
            .map_or("", String::as_str)
    }

    /// The parent, with otelite's empty string for "none" read as none.
    pub fn parent(&self) -> Option<&str> {
        self.parent_span_id.as_deref().filter(|p| !p.is_empty())
    }
}

#[derive(Debug, Deserialize)]
struct TraceDetail {
    spans: Vec<Span>,
}

/// An otelite server.
#[derive(Debug, Clone)]
pub struct Otelite {
    base: String,
    http: reqwest::Client,
}

impl Otelite {
    /// A client of the server at `base` (e.g. `http://127.0.0.1:3000`).
    pub fn new(base: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            // Loopback answers in milliseconds; a silent port must not hold a command up.
            .timeout(Duration::from_secs(3))
            .build()
            .context("building an HTTP client")?;
        Ok(Otelite {
            base: base.trim_end_matches('/').to_owned(),
            http,
        })
    }

    /// Its base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The traces view of its UI.
    pub fn ui_url(&self) -> String {
        format!("{}/#traces", self.base)
    }

    /// The JSON of one trace.
    pub fn trace_url(&self, trace_id: &str) -> String {
        format!("{}/api/traces/{trace_id}", self.base)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Option<bytes::Bytes>> {
        let url = format!("{}{path}", self.base);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        anyhow::ensure!(
            response.status().is_success(),
            "GET {url}: {}",
            response.status()
        );
        Ok(Some(response.bytes().await?))
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
    ) -> anyhow::Result<Option<T>> {
        match self.get(path).await? {
            Some(body) => Ok(Some(
                serde_json::from_slice(&body).with_context(|| format!("reading {path}"))?,
            )),
            None => Ok(None),
        }
    }

    /// Whether otelite answers, and how.
    pub async fn health(&self) -> anyhow::Result<Health> {
        let health: Health = self
            .get_json("/api/health")
            .await?
            .context("no /api/health: not otelite")?;
        anyhow::ensure!(health.status == "healthy", "otelite is {}", health.status);
        Ok(health)
    }

    /// The spans of one trace; `None` when otelite has none of it.
    pub async fn trace(&self, trace_id: &str) -> anyhow::Result<Option<Vec<Span>>> {
        let detail: Option<TraceDetail> = self.get_json(&format!("/api/traces/{trace_id}")).await?;
        Ok(detail.map(|d| d.spans))
    }

    /// Polls until otelite holds a span named `name` in `trace_id` (spans arrive in batches,
    /// after the saga ends), or `limit` passes.
    pub async fn wait_for_span(
        &self,
        trace_id: &str,
        name: &str,
        limit: Duration,
    ) -> anyhow::Result<Option<Vec<Span>>> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let spans = self.trace(trace_id).await?;
            if spans
                .as_ref()
                .is_some_and(|s| s.iter().any(|s| s.name == name))
            {
                return Ok(spans);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(spans);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The log records of one trace (`GET /api/traces/<id>/logs`), as JSON objects.
    pub async fn trace_logs(&self, trace_id: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        #[derive(Deserialize)]
        struct Logs {
            logs: Vec<serde_json::Value>,
        }
        let logs: Option<Logs> = self
            .get_json(&format!("/api/traces/{trace_id}/logs?limit=1000"))
            .await?;
        Ok(logs.map(|l| l.logs).unwrap_or_default())
    }

    /// The names of every metric received (`GET /api/metrics/names`).
    pub async fn metric_names(&self) -> anyhow::Result<Vec<String>> {
        Ok(self
            .get_json("/api/metrics/names")
            .await?
            .unwrap_or_default())
    }

    /// The data points of one metric (`GET /api/metrics?name=`), as JSON objects.
    pub async fn metric(&self, name: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        Ok(self
            .get_json(&format!("/api/metrics?name={name}&limit=1000"))
            .await?
            .unwrap_or_default())
    }
}
