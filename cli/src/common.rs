//! Options and set-up shared by every subcommand, and the waits for a service to consume that
//! the tools (`checkout-tools`) and the end-to-end tests share.

use checkout_shared::streams::Topology;
use checkout_shared::telemetry::{self, LogFormat, Telemetry, TelemetryConfig};
use clap::{Args, ValueEnum};
use std::time::Duration;

/// The NATS default on every machine that runs this project.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
/// The PostgreSQL default: database `checkout` on the local server, over loopback without TLS.
/// Without `sslmode` the driver prefers TLS wherever the server offers it, which on loopback
/// protects nothing and cost a third of the benchmark's throughput (docs/performance.md); a
/// database on another host is given with `sslmode=verify-full` (README, "Security").
pub const DEFAULT_DATABASE_URL: &str =
    "postgres://postgres@127.0.0.1:5432/checkout?sslmode=disable";

/// Where NATS is.
#[derive(Debug, Clone, Args)]
pub struct NatsArgs {
    /// NATS server URL.
    #[arg(long, env = "NATS_URL", default_value = DEFAULT_NATS_URL)]
    pub nats_url: String,
}

/// Who this process is to NATS (every command; from the environment or flags, never from
/// code). With identities on (`nats/auth/`), a service runs with `NATS_PROVISION=false` and the
/// administrator provisions streams and consumers (`checkout provision`).
#[derive(Debug, Clone, Args)]
pub struct NatsAccessArgs {
    /// NATS user (with --nats-password).
    #[arg(long, env = "NATS_USER", global = true)]
    pub nats_user: Option<String>,
    /// NATS password of --nats-user.
    #[arg(long, env = "NATS_PASSWORD", global = true, hide_env_values = true)]
    pub nats_password: Option<String>,
    /// A NATS credentials file (JWT and nkey seed).
    #[arg(long, env = "NATS_CREDS", global = true)]
    pub nats_creds: Option<std::path::PathBuf>,
    /// A file holding this identity's nkey seed.
    #[arg(long, env = "NATS_NKEY_SEED_FILE", global = true)]
    pub nats_nkey_seed_file: Option<std::path::PathBuf>,
    /// A CA certificate (PEM) to verify the NATS server's with; TLS is then required.
    #[arg(long, env = "NATS_TLS_CA", global = true)]
    pub nats_tls_ca: Option<std::path::PathBuf>,
    /// Whether this process creates and updates streams and consumers (false: it only binds
    /// to them, as a service whose identity may not provision must).
    #[arg(long, env = "NATS_PROVISION", global = true, default_value_t = true,
          action = clap::ArgAction::Set)]
    pub nats_provision: bool,
}

impl NatsAccessArgs {
    /// Makes these settings the process's access to NATS (before any connection).
    pub fn install(&self) -> anyhow::Result<()> {
        use checkout_shared::access::{Access, Identity};
        let identity = match (
            &self.nats_user,
            &self.nats_password,
            &self.nats_creds,
            &self.nats_nkey_seed_file,
        ) {
            (None, None, None, None) => Identity::Anonymous,
            (Some(user), Some(password), None, None) => Identity::UserPassword {
                user: user.clone(),
                password: password.clone(),
            },
            (None, None, Some(creds), None) => Identity::Creds(creds.clone()),
            (None, None, None, Some(seed)) => Identity::NkeySeedFile(seed.clone()),
            _ => anyhow::bail!(
                "give one NATS identity: NATS_USER with NATS_PASSWORD, NATS_CREDS, or \
                 NATS_NKEY_SEED_FILE"
            ),
        };
        checkout_shared::access::set(Access {
            identity,
            provisions: self.nats_provision,
            tls_ca: self.nats_tls_ca.clone(),
        });
        Ok(())
    }
}

/// Where PostgreSQL is: the URL every schema uses unless its own says otherwise
/// (`crate::databases`).
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// PostgreSQL URL: every schema's, unless its own URL (below) says otherwise. Over TLS
    /// with the server verified: append ?sslmode=verify-full&sslrootcert=<CA file>.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
}

/// Log format flag.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    /// One JSON object per line.
    Json,
    /// Human-readable.
    Text,
}

/// Logging and tracing options.
#[derive(Debug, Clone, Args)]
pub struct TelemetryArgs {
    /// Log format on standard error.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormatArg,
    /// Span exporter: `otlp` (to OTEL_EXPORTER_OTLP_ENDPOINT, default localhost:4317) or `none`.
    #[arg(long, env = "OTEL_TRACES_EXPORTER", default_value = "otlp")]
    pub traces_exporter: String,
    /// Share (0 to 1) of traces whose messages nats-server (2.11 or later) traces to
    /// `checkout.trace.nats`, which `checkout nats-trace-bridge` turns into spans: 1 in a
    /// demo, a small share in production (each traced message costs the broker a trace event).
    #[arg(long, env = "NATS_TRACE_SHARE", default_value_t = 0.0)]
    pub nats_trace_share: f64,
}

impl TelemetryArgs {
    /// Sets up telemetry for a process whose default `service.name` is `service`.
    pub fn init(&self, service: &str, default_filter: &str) -> anyhow::Result<Telemetry> {
        let config = TelemetryConfig {
            service_name: service.to_owned(),
            export: self.traces_exporter != "none",
            log_format: match self.log_format {
                LogFormatArg::Json => LogFormat::Json,
                LogFormatArg::Text => LogFormat::Text,
            },
            default_filter: default_filter.to_owned(),
            endpoint: None,
        };
        checkout_shared::broker_trace::set_share(self.nats_trace_share);
        Ok(telemetry::init(&config)?)
    }
}

/// The log filter of services: info, with the telemetry pipeline's own chatter quiet.
pub const SERVICE_FILTER: &str = "info,opentelemetry_sdk=error,opentelemetry-otlp=error,h2=warn,tonic=warn,async_nats=warn,sqlx=warn";
/// The log filter of client commands: warnings only, so their output stays readable.
pub const CLIENT_FILTER: &str =
    "warn,opentelemetry_sdk=off,opentelemetry-otlp=off,opentelemetry_otlp=off,h2=warn,tonic=warn";

/// Telemetry of a command that drives a private stack: its spans go to that stack's receiver.
pub fn client_telemetry(endpoint: String) -> anyhow::Result<Telemetry> {
    Ok(telemetry::init(&TelemetryConfig {
        service_name: "checkout-client".into(),
        export: true,
        log_format: LogFormat::Text,
        default_filter: CLIENT_FILTER.into(),
        endpoint: Some(endpoint),
    })?)
}

/// The orchestrator's deadlines and bounds: the orchestrators' own, and `checkout retry`'s,
/// which writes a stuck undo's next deadline as they would.
#[derive(Debug, Clone, Args)]
pub struct TimingArgs {
    /// Seconds a command waits for its reply before it is re-sent (doubling each time).
    #[arg(long, env = "STEP_TIMEOUT_SECS", default_value_t = 10.0)]
    pub step_timeout_secs: f64,
    /// The longest wait for one reply, in seconds, however many re-sends.
    #[arg(long, env = "MAX_STEP_TIMEOUT_SECS", default_value_t = 60.0)]
    pub max_step_timeout_secs: f64,
    /// Sends of an action before the saga undoes it. An undo is re-sent until it succeeds,
    /// at most every --max-step-timeout-secs.
    #[arg(long, env = "STEP_MAX_ATTEMPTS", default_value_t = 5)]
    pub step_max_attempts: u32,
    /// Seconds an undo may go without success before its saga is flagged stuck (listed by
    /// `checkout stuck`); its retries go on.
    #[arg(long, env = "STUCK_AFTER_SECS", default_value_t = 300.0)]
    pub stuck_after_secs: f64,
}

impl TimingArgs {
    /// The timing, or which option is not a duration.
    pub fn timing(&self) -> anyhow::Result<checkout_orchestrator::Timing> {
        let secs = |name: &str, value: f64| {
            std::time::Duration::try_from_secs_f64(value)
                .map_err(|_| anyhow::anyhow!("--{name} must be a number of seconds, got {value}"))
        };
        Ok(checkout_orchestrator::Timing {
            step_timeout: secs("step-timeout-secs", self.step_timeout_secs)?,
            max_step_timeout: secs("max-step-timeout-secs", self.max_step_timeout_secs)?,
            max_attempts: self.step_max_attempts.max(1),
            stuck_after: secs("stuck-after-secs", self.stuck_after_secs)?,
        })
    }
}

/// Whether some process is pulling from `durable` (its consumer has waiting pull requests).
pub async fn pulling(js: &async_nats::jetstream::Context, durable: &str) -> bool {
    let Ok(topology) = Topology::load() else {
        return false;
    };
    let Ok(def) = topology.consumer(durable) else {
        return false;
    };
    let consumer = js
        .get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
            &def.durable,
            &def.stream,
        )
        .await;
    match consumer {
        Ok(consumer) => consumer
            .get_info()
            .await
            .map(|i| i.num_waiting > 0)
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Polls `check` every 200 ms until it holds or `limit` passes.
pub async fn wait_until<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}
