//! A local stack for the demo: use what already runs (NATS, an OTLP collector, the services)
//! and start what does not, then stop exactly what was started.
//!
//! A nats-server the demo starts requires identities, as every private broker does: the
//! passwords are made for the run, kept in this process and handed to nats-server and each
//! service through their environment, and die with them. The demo provisions as the
//! administrator; each service it starts connects as itself with `NATS_PROVISION=false`.

use checkout_cli::common::{pulling, wait_until};
use checkout_cli::databases::redact;
use checkout_harness::otelite::{self, OtelitePorts, OteliteProcess};
use checkout_harness::{NatsServer, OtlpReceiver, Passwords, Service};
use checkout_shared::streams::EVENTS_CONSUMER;
use checkout_shared::subjects;
use futures::StreamExt;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// The standard OTLP/gRPC port.
const OTLP_PORT: u16 = 4317;
/// The standard OTLP/HTTP port, otelite's other OTLP port when it takes the standard gRPC one.
const OTLP_HTTP_PORT: u16 = 4318;
/// How long otelite may take to answer after it starts.
const OTELITE_START: Duration = Duration::from_secs(30);

/// What the demo found or started.
pub struct LocalStack {
    /// The NATS URL in use, fit to print (no credentials of the demo's).
    pub nats_url: String,
    /// How the demo's own connections log in: the administrator's credentials in the URL on
    /// the broker it started; the configured URL as given on one that already ran.
    admin_url: String,
    /// The identities of the broker the demo started (none on one that already ran, whose
    /// services' credentials, if any, come from the caller's environment).
    identities: Option<Passwords>,
    /// The demo's own span receiver, when no collector was listening and otelite could not be
    /// started.
    pub receiver: Option<OtlpReceiver>,
    /// The otelite the demo started, when nothing listened on the OTLP port.
    pub otelite: Option<OteliteProcess>,
    nats_server: Option<NatsServer>,
    services: Vec<Service>,
    log_dir: PathBuf,
}

fn listening(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

impl LocalStack {
    /// Finds or starts NATS, the databases, a span receiver and the four services.
    /// `databases` is the services' database environment (`DATABASE_URL` and each owner's
    /// `<SCHEMA>_DATABASE_URL`); each database named there is created if it does not exist.
    ///
    /// When nothing listens at the OTLP endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`, default
    /// `127.0.0.1:4317`), it starts otelite there, with its UI at `otelite_url`'s port, so that
    /// the services' spans, logs and metrics and the trace links all find it; without otelite,
    /// it receives the spans itself.
    pub async fn up(
        nats_url: &str,
        databases: &[(String, String)],
        otelite_url: &str,
        say: &impl Fn(String),
    ) -> anyhow::Result<Self> {
        let mut shown_url = checkout_shared::connect::redacted(nats_url);
        let mut admin_url = nats_url.to_owned();
        let nats_server = match checkout_shared::connect::connect(nats_url, "checkout-demo", false)
            .await
        {
            Ok(client) => {
                say(format!("nats         using {shown_url}"));
                drop(client);
                None
            }
            Err(_) => {
                let server = NatsServer::start_async().await?;
                shown_url = server.url();
                admin_url = server.admin_url();
                say(format!(
                    "nats         none at the configured URL (or it refused the demo); started a \
                     private nats-server at {shown_url}, requiring identities: passwords made \
                     for this run, each service connects as itself"
                ));
                Some(server)
            }
        };
        let identities = nats_server.as_ref().map(|s| s.passwords().clone());
        let mut urls: Vec<&str> = databases.iter().map(|(_, url)| url.as_str()).collect();
        urls.sort_unstable();
        urls.dedup();
        for url in urls {
            ensure_database(url).await?;
            say(format!("postgres     using {}", redact(url)));
        }
        let configured = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok();
        let otlp_port = match configured.as_deref() {
            None => Some(OTLP_PORT),
            Some(endpoint) => loopback_port(endpoint),
        };
        // Something to start only where the services send, on this machine, and nothing is.
        let vacant = otlp_port.filter(|port| !listening(*port));
        let otelite = match (vacant, loopback_port(otelite_url)) {
            (Some(grpc), Some(ui)) => {
                let http = if grpc == OTLP_PORT {
                    OTLP_HTTP_PORT
                } else {
                    checkout_harness::free_port()
                };
                start_otelite(OtelitePorts { ui, grpc, http }, say).await
            }
            _ => None,
        };
        let receiver = match (vacant, &otelite) {
            (Some(_), Some(otelite)) => {
                say(format!(
                    "traces       nothing on :{}; started otelite (pid {}) at {}, its storage in \
                     {}: every service sends its traces, logs and metrics there",
                    otlp_port.unwrap_or(OTLP_PORT),
                    otelite.pid().unwrap_or(0),
                    otelite.ui_url(),
                    otelite.dir().display()
                ));
                None
            }
            (Some(port), None) => {
                let receiver =
                    OtlpReceiver::start_on(SocketAddr::from(([127, 0, 0, 1], port))).await?;
                say(format!(
                    "traces       no collector on :{port}; the demo receives the spans itself and prints each trace"
                ));
                Some(receiver)
            }
            (None, _) => {
                let endpoint =
                    configured.unwrap_or_else(|| format!("the collector on :{OTLP_PORT}"));
                say(format!("traces       exporting over OTLP to {endpoint}"));
                None
            }
        };
        let log_dir = std::env::temp_dir().join(format!("checkout-demo-{}", std::process::id()));
        std::fs::create_dir_all(&log_dir)?;
        let mut stack = LocalStack {
            nats_url: shown_url,
            admin_url,
            identities,
            receiver,
            otelite,
            nats_server,
            services: Vec::new(),
            log_dir,
        };
        stack.start_missing_services(databases, say).await?;
        Ok(stack)
    }

    async fn start_missing_services(
        &mut self,
        databases: &[(String, String)],
        say: &impl Fn(String),
    ) -> anyhow::Result<()> {
        let client =
            checkout_shared::connect::connect(&self.admin_url, "checkout-demo", false).await?;
        let js = checkout_shared::connect::jetstream(client);
        // The administrator's job, done before any service starts (theirs may not).
        checkout_shared::streams::provision(&js, 1).await?;
        let exe = crate::product::checkout_bin()?;
        // Every worker kind of the step table (its consumer is named after it), then the
        // orchestrator.
        let wanted = checkout_shared::steps::worker_kinds()
            .map(|kind| (kind, vec!["worker", kind], kind))
            .chain([("orchestrator", vec!["orchestrator"], EVENTS_CONSUMER)]);
        for (name, args, durable) in wanted {
            if pulling(&js, durable).await {
                say(format!(
                    "{name:<13}already running (its consumer has waiting pulls)"
                ));
                continue;
            }
            let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
            let mut envs = vec![
                ("NATS_URL".to_owned(), self.service_url()),
                ("OTEL_SERVICE_NAME".to_owned(), name.to_owned()),
                ("LOG_FORMAT".to_owned(), "json".to_owned()),
                // Every message of the demo traced by the broker (nats-server 2.11 or later;
                // an older one ignores the header), for the bridge started below.
                ("NATS_TRACE_SHARE".to_owned(), "1".to_owned()),
            ];
            envs.extend(databases.iter().cloned());
            envs.extend(self.identity_env(name)?);
            let service = Service::spawn(name, &exe, &args, &envs, &self.log_dir)?;
            say(format!(
                "{name:<13}started (pid {}), log {}",
                service.pid().unwrap_or(0),
                service.log_path().display()
            ));
            self.services.push(service);
        }
        if !self.services.is_empty() {
            // The broker's hops as spans, from nats-server's trace events.
            let mut envs = vec![
                ("NATS_URL".to_owned(), self.service_url()),
                ("LOG_FORMAT".to_owned(), "json".to_owned()),
            ];
            envs.extend(self.identity_env("tracebridge")?);
            let args = vec!["nats-trace-bridge".to_owned()];
            let bridge = Service::spawn("nats-bridge", &exe, &args, &envs, &self.log_dir)?;
            say(format!(
                "{:<13}started (pid {}): nats-server's trace events become spans",
                "nats-bridge",
                bridge.pid().unwrap_or(0)
            ));
            self.services.push(bridge);
        }
        for durable in checkout_shared::steps::worker_kinds().chain([EVENTS_CONSUMER]) {
            let ready = wait_until(Duration::from_secs(60), || pulling(&js, durable)).await;
            anyhow::ensure!(
                ready,
                "{durable} did not start within 60 s; see the logs in {}",
                self.log_dir.display()
            );
        }
        Ok(())
    }

    /// How the demo's own connections log in (the administrator on the broker it started:
    /// its client also reads the rejections, which no caller's identity may). Never print it.
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// The URL the services take: the private broker's (each with its identity beside it),
    /// or the configured one as given (credentials included, if it has any).
    fn service_url(&self) -> String {
        match &self.identities {
            Some(_) => self.nats_url.clone(),
            None => self.admin_url.clone(),
        }
    }

    /// `identity`'s credentials on the broker the demo started; nothing on one that already
    /// ran (the services then inherit the caller's environment).
    fn identity_env(&self, identity: &str) -> anyhow::Result<Vec<(String, String)>> {
        match &self.identities {
            Some(passwords) => passwords.service_env(identity),
            None => Ok(Vec::new()),
        }
    }

    /// Where to look at the traces, when no trace UI was found (`no_ui`).
    pub fn trace_hint(&self, no_ui: bool) -> String {
        if !no_ui {
            return String::new();
        }
        let ui = "To browse the traces in a UI: `cargo install otelite --locked && otelite serve` \
             (UI and API on http://127.0.0.1:3000, OTLP on :4317/:4318), or `docker compose up` \
             and --trace-ui jaeger; then run the demo again.";
        if self.receiver.is_some() {
            ui.to_owned()
        } else {
            format!(
                "The spans went to the collector on :4317, which has no UI this demo found. {ui}"
            )
        }
    }

    /// Stops the services it started (SIGTERM, then SIGKILL after 15 s) and its nats-server.
    pub async fn down(&mut self) -> Vec<(String, Option<i32>)> {
        // Last started first: the orchestrator stops before the workers whose replies it awaits.
        let services = std::mem::take(&mut self.services);
        let codes =
            checkout_harness::process::terminate_all(services, Duration::from_secs(15)).await;
        if let Some(receiver) = self.receiver.take() {
            receiver.shutdown().await;
        }
        self.nats_server.take();
        codes
    }
}

/// Starts otelite on its usual ports with its storage in a temporary directory, and waits
/// until it answers; `None` (with the reason said) when it is not installed, its UI port is
/// taken, or it does not come up.
async fn start_otelite(ports: OtelitePorts, say: &impl Fn(String)) -> Option<OteliteProcess> {
    let Some(bin) = otelite::find_bin() else {
        say(format!(
            "otelite      not installed, so no trace UI to start (install it: {})",
            otelite::INSTALL
        ));
        return None;
    };
    if listening(ports.ui) {
        say(format!(
            "otelite      not started: its UI port {} is taken (by a UI whose OTLP port is not \
             where the services send?)",
            ports.ui
        ));
        return None;
    }
    let dir = std::env::temp_dir().join(format!("checkout-demo-otelite-{}", std::process::id()));
    let mut process = match OteliteProcess::start(&bin, ports, dir) {
        Ok(process) => process,
        Err(err) => {
            say(format!("otelite      could not be started: {err:#}"));
            return None;
        }
    };
    let api = checkout_cli::otelite::Otelite::new(&process.ui_url()).ok()?;
    let answered = wait_until(OTELITE_START, || {
        let api = api.clone();
        async move { api.health().await.is_ok() }
    })
    .await;
    if answered && process.is_running() {
        return Some(process);
    }
    say(format!(
        "otelite      did not answer within {} s; its log:\n{}",
        OTELITE_START.as_secs(),
        process.log()
    ));
    // Stopped, its directory removed: nothing is left behind by a start that failed.
    let _ = process.terminate(Duration::from_secs(5));
    None
}

/// The port of `url` (`http://127.0.0.1:4317`, `localhost:3000/`) when its host is this
/// machine's loopback; `None` for another host or no port.
fn loopback_port(url: &str) -> Option<u16> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next()?;
    let (host, port) = authority.rsplit_once(':')?;
    let loopback = matches!(host, "127.0.0.1" | "localhost" | "[::1]");
    loopback.then(|| port.parse().ok()).flatten()
}

/// Creates the database of `url` if it does not exist.
pub async fn ensure_database(url: &str) -> anyhow::Result<()> {
    let options = PgConnectOptions::from_str(url)?;
    let name = options.get_database().unwrap_or("checkout").to_owned();
    let admin = options.clone().database("postgres");
    let mut conn = admin.connect().await.map_err(|e| {
        anyhow::anyhow!(
            "PostgreSQL is not reachable at {}: {e}\nstart it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n(or install it: apt-get update && apt-get install -y postgresql)",
            redact(url)
        )
    })?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        let create = format!("CREATE DATABASE \"{}\"", name.replace('"', ""));
        if let Err(err) = sqlx::query(sqlx::AssertSqlSafe(create))
            .execute(&mut conn)
            .await
        {
            // Another process may have created it meanwhile.
            tracing::debug!(error = %err, "create database");
        }
    }
    conn.close().await?;
    Ok(())
}

/// The reason of the next rejected checkout.
pub async fn rejected_reasons(
    nats: &async_nats::Client,
) -> anyhow::Result<impl std::future::Future<Output = Option<String>>> {
    let mut sub = nats.subscribe(subjects::REJECTED).await?;
    Ok(async move {
        let message = sub.next().await?;
        message
            .headers
            .as_ref()
            .and_then(|h| h.get(checkout_shared::envelope::REASON))
            .map(|v| v.as_str().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::loopback_port;

    #[test]
    fn only_a_loopback_url_with_a_port_names_a_port_to_start_on() {
        assert_eq!(loopback_port("http://127.0.0.1:4317"), Some(4317));
        assert_eq!(loopback_port("http://localhost:3000/"), Some(3000));
        assert_eq!(loopback_port("https://[::1]:14317/v1"), Some(14317));
        assert_eq!(loopback_port("127.0.0.1:4318"), Some(4318));
        assert_eq!(loopback_port("http://collector:4317"), None);
        assert_eq!(loopback_port("http://127.0.0.1"), None);
        assert_eq!(loopback_port("http://127.0.0.1:notaport"), None);
    }
}
