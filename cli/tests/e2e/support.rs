//! The end-to-end harness: a private nats-server, a fresh database, the real `checkout`
//! binaries as processes, and one OTLP receiver for the whole test binary, to which every
//! process (and the tests' own client) exports its spans.

use checkout_cli::client::Client;
use checkout_cli::common::{pulling, wait_until};
use checkout_harness::{NatsServer, OtlpReceiver, ReceivedSpan, Service, TestDb};
use checkout_shared::messages::CheckoutRequested;
use checkout_shared::streams::EVENTS_CONSUMER;
use checkout_shared::telemetry::{self, LogFormat, SpanFlusher, Telemetry, TelemetryConfig};
use sqlx::PgPool;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

struct Shared {
    runtime: tokio::runtime::Runtime,
    receiver: OtlpReceiver,
    _telemetry: Telemetry,
    flusher: SpanFlusher,
}

static SHARED: OnceLock<Shared> = OnceLock::new();

/// The receiver and client telemetry shared by every test, on a runtime that outlives them.
fn shared() -> &'static Shared {
    // Built on a thread of its own: the tests' runtimes cannot block on another runtime.
    SHARED.get_or_init(|| {
        std::thread::spawn(init_shared)
            .join()
            .expect("shared harness")
    })
}

fn init_shared() -> Shared {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (receiver, telemetry) = runtime.block_on(async {
        let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
        let telemetry = telemetry::init(&TelemetryConfig {
            service_name: "checkout-client".into(),
            export: true,
            log_format: LogFormat::Text,
            default_filter: "warn".into(),
            endpoint: Some(receiver.endpoint()),
        })
        .expect("telemetry");
        (receiver, telemetry)
    });
    let flusher = telemetry.flusher();
    Shared {
        runtime,
        receiver,
        _telemetry: telemetry,
        flusher,
    }
}

/// Exports the test process's own finished spans (a caller's span, say) now.
pub async fn flush_client_spans() {
    assert!(shared().flusher.flush().await, "client spans exported");
}

/// Every span received so far.
pub fn receiver() -> &'static OtlpReceiver {
    &shared().receiver
}

/// Waits until `trace_id` has a span named `name` (bounded), then returns the trace.
pub async fn trace_with(trace_id: &str, name: &str) -> Vec<ReceivedSpan> {
    let found = shared()
        .runtime
        .spawn({
            let (trace_id, name) = (trace_id.to_owned(), name.to_owned());
            async move {
                receiver()
                    .wait_for(Duration::from_secs(20), |spans| {
                        spans
                            .iter()
                            .any(|s| s.trace_id == trace_id && s.name == name)
                    })
                    .await
            }
        })
        .await
        .unwrap_or(false);
    assert!(found, "no span {name:?} in trace {trace_id}");
    // Let stragglers from the other services arrive.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    receiver().trace(trace_id)
}

/// How a stack is configured.
#[derive(Debug, Clone)]
pub struct Options {
    /// Stock seeded by the inventory worker.
    pub seed_stock: String,
    /// Extra environment for one service: (service, name, value).
    pub env: Vec<(&'static str, &'static str, String)>,
    /// Whether to run the HTTP gateway too.
    pub gateway: bool,
    /// Where the services export over OTLP, instead of the shared receiver (e.g. otelite).
    pub otlp_endpoint: Option<String>,
    /// Whether the broker speaks TLS only (a throw-away CA from `scripts/make-certs`): every
    /// service then verifies it with `NATS_TLS_CA`.
    pub tls: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            // Prices chosen so that the amounts the tests state are the sums of their lines
            // (two mugs and a tee are 4,500; four tees 1,200).
            seed_stock: "SKU-MUG=1000@2100,SKU-TEE=1000@300,SKU-RARE=3@5000".into(),
            env: vec![],
            gateway: false,
            otlp_endpoint: None,
            tls: false,
        }
    }
}

/// One system under test.
pub struct Stack {
    /// The private broker. It requires the identities of `nats/auth/users.conf` (the
    /// harness's default): each service connects as itself, the administrator provisions,
    /// and the tests' own connections are the administrator's.
    pub nats: NatsServer,
    /// The certificates, when the broker speaks TLS only.
    pub tls: Option<crate::tls::Certificates>,
    /// The system's database.
    pub pool: PgPool,
    db: Option<TestDb>,
    services: Vec<Service>,
    logs: tempfile::TempDir,
    /// Where the gateway listens, when it runs.
    pub gateway: Option<SocketAddr>,
}

/// Every service: a worker per row of the step table, then the orchestrator.
fn services() -> Vec<(&'static str, Vec<&'static str>)> {
    checkout_shared::steps::worker_kinds()
        .map(|kind| (kind, vec!["worker", kind]))
        .chain([("orchestrator", vec!["orchestrator"])])
        .collect()
}

impl Stack {
    /// Starts a broker, a database and the services, and waits until they consume.
    pub async fn start(options: Options) -> Stack {
        let endpoint = options
            .otlp_endpoint
            .clone()
            .unwrap_or_else(|| shared().receiver.endpoint());
        let tls = options.tls.then(crate::tls::Certificates::make);
        let nats = match &tls {
            Some(tls) => tls.start_broker().await,
            None => NatsServer::start_async().await.expect("nats-server"),
        };
        let db = TestDb::create().await.expect("database");
        let pool = PgPool::connect(&db.url()).await.expect("pool");
        let logs = tempfile::tempdir().expect("log dir");
        let mut stack = Stack {
            nats,
            tls,
            pool,
            db: Some(db),
            services: vec![],
            logs,
            gateway: None,
        };
        let tls_env: Vec<(String, String)> = stack
            .tls
            .iter()
            .map(|tls| ("NATS_TLS_CA".to_owned(), tls.ca()))
            .collect();
        crate::identities::provision(&stack.nats, &tls_env).await;
        for (name, args) in services() {
            let mut envs = vec![
                ("NATS_URL".to_owned(), stack.nats.url()),
                ("DATABASE_URL".to_owned(), stack.db_url()),
                ("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), endpoint.clone()),
                ("OTEL_SERVICE_NAME".to_owned(), name.to_owned()),
                ("LOG_FORMAT".to_owned(), "json".to_owned()),
                ("SEED_STOCK".to_owned(), options.seed_stock.clone()),
            ];
            envs.extend(stack.nats.service_env(name).expect("an identity"));
            envs.extend(tls_env.iter().cloned());
            for (service, key, value) in &options.env {
                if *service == name {
                    envs.push(((*key).to_owned(), value.clone()));
                }
            }
            let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
            let exe = PathBuf::from(env!("CARGO_BIN_EXE_checkout"));
            let service =
                Service::spawn(name, &exe, &args, &envs, stack.logs.path()).expect("spawn");
            stack.services.push(service);
            if name == "inventory" {
                // The orchestrator validates SKUs against the catalog inventory publishes.
                stack.wait_pulling("inventory").await;
            }
        }
        for durable in checkout_shared::steps::worker_kinds().chain([EVENTS_CONSUMER]) {
            stack.wait_pulling(durable).await;
        }
        if options.gateway {
            stack.gateway = Some(stack.spawn_gateway("gateway").await);
        }
        stack
    }

    /// Starts a gateway process named `name` on a free port and waits until it is ready.
    pub async fn spawn_gateway(&mut self, name: &str) -> SocketAddr {
        self.spawn_gateway_with(name, &[]).await
    }

    /// [`Stack::spawn_gateway`] with extra environment (its limits, say).
    pub async fn spawn_gateway_with(&mut self, name: &str, extra: &[(&str, &str)]) -> SocketAddr {
        let addr = SocketAddr::from(([127, 0, 0, 1], checkout_harness::free_port()));
        let mut envs = vec![
            ("NATS_URL".to_owned(), self.nats.url()),
            ("DATABASE_URL".to_owned(), self.db_url()),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
                shared().receiver.endpoint(),
            ),
            ("OTEL_SERVICE_NAME".to_owned(), "gateway".to_owned()),
            ("LOG_FORMAT".to_owned(), "json".to_owned()),
            ("GATEWAY_LISTEN".to_owned(), addr.to_string()),
        ];
        envs.extend(self.nats.service_env("gateway").expect("an identity"));
        envs.extend(
            self.tls
                .iter()
                .map(|tls| ("NATS_TLS_CA".to_owned(), tls.ca())),
        );
        envs.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let exe = PathBuf::from(env!("CARGO_BIN_EXE_checkout"));
        let args = vec!["gateway".to_owned()];
        let service = Service::spawn(name, &exe, &args, &envs, self.logs.path()).expect("spawn");
        self.services.push(service);
        self.wait_ready(addr).await;
        addr
    }

    /// Waits until the gateway at `addr` answers `GET /readyz` with 200.
    pub async fn wait_ready(&self, addr: SocketAddr) {
        let ready = wait_until(Duration::from_secs(60), || async move {
            tokio::net::TcpStream::connect(addr).await.is_ok()
                && crate::http::request(addr, "GET", "/readyz", &[], b"")
                    .await
                    .status
                    == 200
        })
        .await;
        assert!(
            ready,
            "gateway at {addr} is not ready; logs:\n{}",
            self.logs()
        );
    }

    /// A connection to the broker as the administrator (over TLS when it speaks TLS only).
    pub async fn admin_client(&self) -> async_nats::Client {
        match &self.tls {
            Some(tls) => tls.connect(&self.nats).await,
            None => self
                .nats
                .admin_client()
                .await
                .expect("nats as the administrator"),
        }
    }

    /// The system's database URL.
    pub fn db_url(&self) -> String {
        self.db.as_ref().map(TestDb::url).unwrap_or_default()
    }

    /// Waits until some process pulls from `durable`.
    pub async fn wait_pulling(&self, durable: &str) {
        let client = self.admin_client().await;
        let js = async_nats::jetstream::new(client);
        let ok = wait_until(Duration::from_secs(60), || pulling(&js, durable)).await;
        assert!(ok, "{durable} is not consuming; logs:\n{}", self.logs());
    }

    /// Runs the real `checkout` binary with `args` against this stack (its broker and database,
    /// plus `envs`), and returns its standard output; panics with its output if it fails. It
    /// runs as the administrator (the operators' commands), unless `envs` say otherwise.
    pub async fn run_checkout(&self, args: &[&str], envs: &[(&str, String)]) -> String {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_checkout"));
        command
            .args(args)
            .env("NATS_URL", self.nats.url())
            .env("DATABASE_URL", self.db_url())
            .envs(self.nats.passwords().admin_env())
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .kill_on_drop(true);
        let output = tokio::time::timeout(Duration::from_secs(90), command.output())
            .await
            .expect("checkout finished within 90 s")
            .expect("checkout ran");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "checkout {args:?} failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    /// A client of this stack (the administrator), exporting spans to the shared receiver.
    pub async fn client(&self) -> Client {
        Client::connect(&self.nats.admin_url(), shared().flusher.clone())
            .await
            .expect("client")
    }

    /// One of the services.
    pub fn service(&mut self, name: &str) -> &mut Service {
        self.services
            .iter_mut()
            .find(|s| s.name() == name)
            .expect("service")
    }

    /// Publishes a checkout and waits for its end; returns (outcome, trace id).
    pub async fn checkout(&self, client: &Client, request: &CheckoutRequested) -> (String, String) {
        let events = client.follow(request.checkout_id);
        let trace_id = client.publish(request).await.expect("publish");
        let last = client
            .wait(request.checkout_id, events, Duration::from_secs(60), |_| {})
            .await;
        let outcome = last
            .map(|e| e.kind.as_str().to_owned())
            .unwrap_or_else(|| "timed_out".into());
        (outcome, trace_id)
    }

    /// The services' logs so far.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for service in &self.services {
            let text = std::fs::read_to_string(service.log_path()).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            out.push_str(&format!("--- {} ---\n", service.name()));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Every line every service has logged so far.
    pub fn all_logs(&self) -> String {
        self.services
            .iter()
            .map(|s| std::fs::read_to_string(s.log_path()).unwrap_or_default())
            .collect()
    }

    /// Stops every service with SIGTERM (each must exit 0) and drops the database.
    pub async fn stop(mut self) {
        for mut service in self.services.drain(..).rev() {
            let name = service.name().to_owned();
            let code =
                tokio::task::spawn_blocking(move || service.terminate(Duration::from_secs(20)))
                    .await
                    .expect("join")
                    .expect("terminate");
            assert_eq!(code, Some(0), "{name} did not exit cleanly on SIGTERM");
        }
        self.pool.close().await;
        if let Some(db) = self.db.take() {
            db.drop_db().await.expect("drop database");
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.services.is_empty() {
            eprintln!("service logs:\n{}", self.logs());
        }
    }
}

pub use crate::stack_data::request;
