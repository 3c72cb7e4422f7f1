//! Trace links that never point at nothing: otelite's when otelite answers and holds the trace,
//! Jaeger's when asked for and its query service answers, otherwise no link at all (the trace
//! id, and the demo's printed tree, stay).

use crate::otelite::{self, Otelite};
use clap::{Args, ValueEnum};
use std::time::Duration;

/// Where Jaeger's UI answers under `docker compose up`.
pub const DEFAULT_JAEGER_URL: &str = "http://localhost:16686";

/// Which trace UI links point at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TraceUi {
    /// otelite if it answers, else Jaeger if it answers, else no link.
    Auto,
    /// otelite only.
    Otelite,
    /// Jaeger only.
    Jaeger,
    /// No link.
    None,
}

/// Options of the commands that print trace links.
#[derive(Debug, Clone, Args)]
pub struct TraceUiArgs {
    /// Where trace links point: auto (otelite, then Jaeger, whichever answers), otelite,
    /// jaeger, or none.
    #[arg(long, env = "TRACE_UI", value_enum, default_value = "auto")]
    pub trace_ui: TraceUi,
    /// otelite's UI and REST API.
    #[arg(long, env = "OTELITE_URL", default_value = otelite::DEFAULT_URL)]
    pub otelite_url: String,
    /// Jaeger's UI and query API.
    #[arg(long, env = "JAEGER_URL", default_value = DEFAULT_JAEGER_URL)]
    pub jaeger_url: String,
}

/// The trace UI found.
#[derive(Debug, Clone)]
pub enum Links {
    /// otelite answers.
    Otelite(Otelite),
    /// Jaeger's query service answers at this base URL.
    Jaeger(String),
    /// No link, and why.
    Nowhere(String),
}

/// How long a link waits for otelite to hold the trace's spans.
const ARRIVAL: Duration = Duration::from_secs(5);

async fn jaeger_answers(base: &str) -> bool {
    let Ok(http) = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
    else {
        return false;
    };
    // The query service's own API: a port that merely accepts connections is not Jaeger.
    let url = format!("{}/api/services", base.trim_end_matches('/'));
    matches!(http.get(url).send().await, Ok(r) if r.status().is_success())
}

impl TraceUiArgs {
    /// Probes the UIs that this choice allows.
    pub async fn resolve(&self) -> Links {
        let want_otelite = matches!(self.trace_ui, TraceUi::Auto | TraceUi::Otelite);
        let want_jaeger = matches!(self.trace_ui, TraceUi::Auto | TraceUi::Jaeger);
        if self.trace_ui == TraceUi::None {
            return Links::Nowhere("trace links are off (--trace-ui none)".into());
        }
        if want_otelite
            && let Ok(client) = Otelite::new(&self.otelite_url)
            && client.health().await.is_ok()
        {
            return Links::Otelite(client);
        }
        if want_jaeger && jaeger_answers(&self.jaeger_url).await {
            return Links::Jaeger(self.jaeger_url.trim_end_matches('/').to_owned());
        }
        let mut tried = Vec::new();
        if want_otelite {
            tried.push(format!("otelite at {}", self.otelite_url));
        }
        if want_jaeger {
            tried.push(format!("Jaeger at {}", self.jaeger_url));
        }
        Links::Nowhere(format!("no trace UI answers ({})", tried.join(", ")))
    }
}

/// Where one trace can be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceLink {
    /// The page to open.
    pub url: String,
    /// More lines to print under it (e.g. otelite's per-trace JSON).
    pub notes: Vec<String>,
}

impl Links {
    /// The link of an ended saga's trace `trace_id`, or why there is none. For otelite, only
    /// once it holds a span of the trace: spans may have gone elsewhere (another
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub async fn link(&self, trace_id: &str) -> Result<TraceLink, String> {
        // The saga span is emitted when the saga ends: the rest have arrived by then.
        self.link_once(trace_id, "saga checkout").await
    }

    /// The link of a saga's trace while it runs: its "started" span is out from its start.
    pub async fn link_running(&self, trace_id: &str) -> Result<TraceLink, String> {
        self.link_once(trace_id, "saga checkout started").await
    }

    /// The link of `trace_id`, for otelite once it holds a span named `span` (bounded).
    async fn link_once(&self, trace_id: &str, span: &str) -> Result<TraceLink, String> {
        match self {
            Links::Otelite(otelite) => match otelite.wait_for_span(trace_id, span, ARRIVAL).await {
                Ok(Some(spans)) if !spans.is_empty() => Ok(TraceLink {
                    url: otelite.ui_url(),
                    notes: vec![
                        "(otelite: paste the trace id into the Trace ID filter)".to_owned(),
                        format!("json  {}", otelite.trace_url(trace_id)),
                    ],
                }),
                Ok(_) => Err(format!(
                    "otelite at {} has no span of this trace: its spans went elsewhere \
                         (OTEL_EXPORTER_OTLP_ENDPOINT?)",
                    otelite.base()
                )),
                Err(err) => Err(format!("otelite at {}: {err:#}", otelite.base())),
            },
            Links::Jaeger(base) => Ok(TraceLink {
                url: format!("{base}/trace/{trace_id}"),
                notes: vec![],
            }),
            Links::Nowhere(why) => Err(why.clone()),
        }
    }

    /// The lines to print under a trace id: `open <url>` and notes, or why there is no link.
    pub async fn lines(&self, trace_id: &str) -> Vec<String> {
        match self.link(trace_id).await {
            Ok(link) => std::iter::once(format!("open  {}", link.url))
                .chain(link.notes)
                .collect(),
            Err(why) => vec![format!("link  none: {why}")],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// An HTTP server on a free loopback port that answers every request with `status`.
    async fn answering(status: &'static str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = [0u8; 2048];
                let _ = socket.read(&mut request).await;
                let reply = format!("HTTP/1.1 {status}\r\ncontent-length: 2\r\n\r\n{{}}");
                let _ = socket.write_all(reply.as_bytes()).await;
            }
        });
        base
    }

    fn args(trace_ui: TraceUi, otelite_url: &str, jaeger_url: &str) -> TraceUiArgs {
        TraceUiArgs {
            trace_ui,
            otelite_url: otelite_url.into(),
            jaeger_url: jaeger_url.into(),
        }
    }

    #[tokio::test]
    async fn jaeger_is_linked_only_when_its_query_api_answers() {
        let jaeger = answering("200 OK").await;
        let dead = "http://127.0.0.1:9";
        let links = args(TraceUi::Auto, dead, &jaeger).resolve().await;
        let link = links.link("abc").await.unwrap();
        assert_eq!(link.url, format!("{jaeger}/trace/abc"));

        let not_jaeger = answering("404 Not Found").await;
        let links = args(TraceUi::Jaeger, dead, &not_jaeger).resolve().await;
        assert!(matches!(links, Links::Nowhere(_)), "{links:?}");
    }

    #[tokio::test]
    async fn nothing_answering_or_none_asked_gives_no_link_and_says_why() {
        let dead = "http://127.0.0.1:9";
        let why = args(TraceUi::Auto, dead, dead)
            .resolve()
            .await
            .link("abc")
            .await;
        assert_eq!(
            why,
            Err(format!(
                "no trace UI answers (otelite at {dead}, Jaeger at {dead})"
            ))
        );
        // A port that answers HTTP but is not otelite is not taken for it.
        let other = answering("200 OK").await;
        let links = args(TraceUi::Otelite, &other, dead).resolve().await;
        assert!(matches!(links, Links::Nowhere(_)), "{links:?}");
        let off = args(TraceUi::None, &other, &other).resolve().await;
        assert!(matches!(off, Links::Nowhere(_)));
    }
}
