//! A private otelite for the tests that read traces back from a real one: its UI/API and
//! OTLP ports free ports of 127.0.0.1, its storage in a temporary directory.

use checkout_cli::otelite::{self, Otelite, Span};
use checkout_harness::{ReceivedSpan, Service, SpanKind, free_port};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The otelite binary: `OTELITE_BIN`, else on the PATH, else in `~/.cargo/bin`.
fn otelite_bin() -> PathBuf {
    let candidates = std::env::var_os("OTELITE_BIN")
        .map(PathBuf::from)
        .into_iter()
        .chain(std::env::var_os("PATH").into_iter().flat_map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("otelite"))
                .collect::<Vec<_>>()
        }))
        .chain(std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/otelite")));
    for candidate in candidates {
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "otelite is not installed; install it with: {} (scripts/ensure-deps.sh does it), \
         or set OTELITE_BIN",
        otelite::INSTALL
    );
}

/// A private otelite: its UI/API, OTLP/gRPC and OTLP/HTTP on free ports of 127.0.0.1, its
/// storage and home (where it writes its config on a first run) in a temporary directory.
pub struct PrivateOtelite {
    /// The otelite process.
    pub service: Service,
    /// Its REST API.
    pub api: Otelite,
    grpc_port: u16,
    _dir: tempfile::TempDir,
}

impl PrivateOtelite {
    /// Starts one and waits until it answers (bounded).
    pub async fn start() -> PrivateOtelite {
        let bin = otelite_bin();
        let dir = tempfile::tempdir().expect("temp dir");
        let (ui_port, grpc_port, http_port) = (free_port(), free_port(), free_port());
        let home = dir.path().to_string_lossy().into_owned();
        let args: Vec<String> = vec![
            "serve".into(),
            "--addr".into(),
            format!("127.0.0.1:{ui_port}"),
            "--storage-path".into(),
            format!("{home}/data"),
        ];
        let envs = vec![
            ("HOME".to_owned(), home.clone()),
            ("OTELITE_OTLP_GRPC_PORT".to_owned(), grpc_port.to_string()),
            ("OTELITE_OTLP_HTTP_PORT".to_owned(), http_port.to_string()),
        ];
        let service =
            Service::spawn("otelite", &bin, &args, &envs, dir.path()).expect("spawn otelite");
        let api = Otelite::new(&format!("http://127.0.0.1:{ui_port}")).expect("client");
        let mut health = None;
        for _ in 0..150 {
            if let Ok(h) = api.health().await {
                health = Some(h);
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let log = || std::fs::read_to_string(service.log_path()).unwrap_or_default();
        let health = health.unwrap_or_else(|| panic!("otelite did not answer in 30 s:\n{}", log()));
        assert_eq!(
            health.otlp_grpc_port, grpc_port,
            "otelite took its gRPC port from the env"
        );
        assert_eq!(health.otlp_http_port, http_port);
        PrivateOtelite {
            service,
            api,
            grpc_port,
            _dir: dir,
        }
    }

    /// Its OTLP/gRPC endpoint.
    pub fn otlp_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }
}

/// otelite's spans as the harness's, so that the harness's whole-trace check applies.
pub fn received(spans: &[Span]) -> Vec<ReceivedSpan> {
    spans
        .iter()
        .map(|s| ReceivedSpan {
            trace_id: s.trace_id.clone(),
            span_id: s.span_id.clone(),
            parent_span_id: s.parent().map(str::to_owned),
            name: s.name.clone(),
            kind: SpanKind::Unspecified,
            service_name: String::new(),
            attributes: s.attributes.clone().into_iter().collect::<BTreeMap<_, _>>(),
            error: false,
            status_message: String::new(),
            start_unix_nanos: u64::try_from(s.start_time).unwrap_or(0),
            end_unix_nanos: u64::try_from(s.end_time).unwrap_or(0),
            links: vec![],
            events: vec![],
        })
        .collect()
}
