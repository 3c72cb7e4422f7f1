//! `checkout orchestrator`, `checkout worker <kind>` (a kind per row of the step table) and
//! `checkout gateway`: the long-running services.

use crate::common::{DbArgs, NatsArgs, SERVICE_FILTER, TelemetryArgs, TimingArgs};
use crate::databases::{GatewayDbArgs, SAGA_SCHEMA, SagaDbArgs, WorkerDbArgs};
use crate::health::{self, HealthArgs};
use checkout_orchestrator::OrchestratorConfig;
use checkout_shared::retention::Retention;
use checkout_shared::telemetry::SpanFlusher;
use checkout_shared::{Step, shutdown};
use checkout_workers::inventory::StockSeed;
use checkout_workers::{Faults, WorkerConfig};
use clap::Args;
use std::process::ExitCode;
use std::time::Duration;

/// Options of the orchestrator.
#[derive(Debug, Args)]
pub struct OrchestratorArgs {
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    saga_db: SagaDbArgs,
    #[command(flatten)]
    health: HealthArgs,
    #[command(flatten)]
    telemetry: TelemetryArgs,
    /// Messages handled at once per consumer.
    #[arg(long, env = "ORCHESTRATOR_CONCURRENCY", default_value_t = 64)]
    concurrency: usize,
    /// Database connections. A transition is one short statement, so a few connections keep
    /// up with many sagas; more only add backends competing for the cores
    /// (docs/performance.md).
    #[arg(long, env = "ORCHESTRATOR_DB_CONNECTIONS", default_value_t = 8)]
    db_connections: u32,
    #[command(flatten)]
    timing: TimingArgs,
    /// Seconds an ended saga (completed, compensated or failed, with nothing left to wait
    /// for) and its log, and a refused checkout, are kept before the pruner deletes them.
    /// Keep it well above how long a client may retry a checkout (an Idempotency-Key) and
    /// above the gateway's idempotency retention.
    #[arg(long, env = "RETENTION_SECS", default_value_t = DEFAULT_RETENTION_SECS)]
    retention_secs: u64,
    /// Seconds between the pruner's passes (at most half the retention, at least 1).
    #[arg(long, env = "RETENTION_INTERVAL_SECS", default_value_t = DEFAULT_RETENTION_INTERVAL_SECS)]
    retention_interval_secs: u64,
    /// Stream replicas (3 on a three-node cluster).
    #[arg(long, env = "STREAM_REPLICAS", default_value_t = 1)]
    replicas: usize,
    /// Export spans before each message that names them is sent, so a killed process leaves
    /// no child without its parent (costs an export round trip per message, shared by
    /// concurrent messages).
    #[arg(long, env = "TRACE_FLUSH_BEFORE_SEND", default_value_t = true, action = clap::ArgAction::Set)]
    trace_flush_before_send: bool,
}

/// The worker kinds: one per row of the step table (`checkout_shared::steps::STEPS`).
fn kinds() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(checkout_shared::steps::worker_kinds())
}

/// Options of a worker.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Which worker to run: one per step (inventory, payment, order, notification).
    #[arg(value_parser = kinds())]
    kind: String,
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    worker_db: WorkerDbArgs,
    #[command(flatten)]
    health: HealthArgs,
    #[command(flatten)]
    telemetry: TelemetryArgs,
    /// Messages handled at once.
    #[arg(long, env = "WORKER_CONCURRENCY", default_value_t = 32)]
    concurrency: usize,
    /// Database connections. An action is one statement, so a few connections keep up with
    /// the messages in hand; more only add backends competing for the cores
    /// (docs/performance.md).
    #[arg(long, env = "WORKER_DB_CONNECTIONS", default_value_t = 4)]
    db_connections: u32,
    /// Fraction of charges declined (payment), chosen deterministically by saga id.
    #[arg(long, env = "PAYMENT_DECLINE_RATE", default_value_t = 0.0)]
    decline_rate: f64,
    /// Fraction of order creations refused (order), chosen deterministically by saga id.
    #[arg(long, env = "ORDER_FAIL_RATE", default_value_t = 0.0)]
    order_fail_rate: f64,
    /// Milliseconds added to every action and undo.
    #[arg(long, env = "WORKER_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,
    /// Milliseconds the simulated payment gateway takes per charge (payment).
    #[arg(long, env = "PAYMENT_GATEWAY_LATENCY_MS", default_value_t = 0)]
    gateway_latency_ms: u64,
    /// The codes of the declines --decline-rate injects, with weights (payment):
    /// `card_declined=2,insufficient_funds=1,expired_card=1`.
    #[arg(long, env = "PAYMENT_DECLINE_MIX", default_value = "card_declined")]
    decline_mix: String,
    /// Fraction of confirmation attempts that fail (notification), by saga id and attempt.
    #[arg(long, env = "NOTIFICATION_FAIL_RATE", default_value_t = 0.0)]
    notification_fail_rate: f64,
    /// Attempts at one confirmation before it is given up (notification).
    #[arg(long, env = "NOTIFICATION_ATTEMPTS", default_value_t = 3)]
    notification_attempts: u32,
    /// Milliseconds after the first failed attempt, doubling (notification).
    #[arg(long, env = "NOTIFICATION_BACKOFF_MS", default_value_t = 50)]
    notification_backoff_ms: u64,
    /// Milliseconds the simulated mail service takes per attempt (notification).
    #[arg(long, env = "NOTIFICATION_LATENCY_MS", default_value_t = 0)]
    notification_latency_ms: u64,
    /// Stock created at start-up for SKUs that do not exist yet (inventory), with catalog
    /// prices: `SKU=QTY[@PRICE_CENTS[:CURRENCY]],...` (price 1000, currency EUR if omitted).
    #[arg(
        long,
        env = "SEED_STOCK",
        default_value = "SKU-MUG=100000@1299,SKU-TEE=100000@2499,SKU-CAP=100000@1799,SKU-RARE=3@9999"
    )]
    seed_stock: String,
    /// Seconds a processed-message record (the stored reply of an action) is kept before the
    /// pruner deletes it. A command delivered again after that still acts once: the business
    /// tables refuse a second effect. Keep it well above how long a command may be re-sent.
    #[arg(long, env = "RETENTION_SECS", default_value_t = DEFAULT_RETENTION_SECS)]
    retention_secs: u64,
    /// Seconds between the pruner's passes (at most half the retention, at least 1).
    #[arg(long, env = "RETENTION_INTERVAL_SECS", default_value_t = DEFAULT_RETENTION_INTERVAL_SECS)]
    retention_interval_secs: u64,
    /// Stream replicas (3 on a three-node cluster).
    #[arg(long, env = "STREAM_REPLICAS", default_value_t = 1)]
    replicas: usize,
    /// Export spans before each message that names them is sent, so a killed process leaves
    /// no child without its parent (costs an export round trip per message, shared by
    /// concurrent messages).
    #[arg(long, env = "TRACE_FLUSH_BEFORE_SEND", default_value_t = true, action = clap::ArgAction::Set)]
    trace_flush_before_send: bool,
}

/// Options of the HTTP gateway.
#[derive(Debug, Args)]
pub struct GatewayArgs {
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    gateway_db: GatewayDbArgs,
    #[command(flatten)]
    telemetry: TelemetryArgs,
    /// Address to serve HTTP on.
    #[arg(long, env = "GATEWAY_LISTEN", default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// Database connections (idempotency keys).
    #[arg(long, env = "GATEWAY_DB_CONNECTIONS", default_value_t = 8)]
    db_connections: u32,
    /// Seconds an Idempotency-Key is remembered (its cart's hash, for the 409 on another
    /// cart); a key used again after that is a new request for the same saga id.
    #[arg(long, env = "IDEMPOTENCY_RETENTION_SECS", default_value_t = 86_400)]
    idempotency_retention_secs: u64,
    /// Seconds between the pruner's passes (at most half the retention, at least 1).
    #[arg(long, env = "RETENTION_INTERVAL_SECS", default_value_t = DEFAULT_RETENTION_INTERVAL_SECS)]
    retention_interval_secs: u64,
    /// Stream replicas (3 on a three-node cluster).
    #[arg(long, env = "STREAM_REPLICAS", default_value_t = 1)]
    replicas: usize,
    /// Export spans before each message that names them is sent (see the orchestrator).
    #[arg(long, env = "TRACE_FLUSH_BEFORE_SEND", default_value_t = true, action = clap::ArgAction::Set)]
    trace_flush_before_send: bool,
    /// Checkouts this gateway handles at once; one more is answered 429 with Retry-After.
    #[arg(long, env = "GATEWAY_MAX_CONCURRENT", default_value_t = 256)]
    max_concurrent: usize,
    /// Messages waiting in the work queues (requests, commands, replies: about the sagas in
    /// flight) above which a checkout is answered 503 with Retry-After.
    #[arg(long, env = "GATEWAY_MAX_BACKLOG", default_value_t = 5_000)]
    max_backlog: u64,
    /// Milliseconds a checkout's publish may wait for the broker's acknowledgement before it
    /// is answered 503 with Retry-After.
    #[arg(long, env = "GATEWAY_PUBLISH_TIMEOUT_MS", default_value_t = 2_000)]
    publish_timeout_ms: u64,
}

/// Runs the HTTP gateway until SIGTERM or Ctrl-C.
pub async fn gateway(args: GatewayArgs) -> anyhow::Result<ExitCode> {
    let telemetry = args.telemetry.init("gateway", SERVICE_FILTER)?;
    let config = checkout_gateway::GatewayConfig {
        listen: args.listen,
        database_url: args.gateway_db.url(&args.db).to_owned(),
        nats_url: args.nats.nats_url,
        max_connections: args.db_connections,
        replicas: args.replicas,
        idempotency_retention: retention(
            args.idempotency_retention_secs,
            args.retention_interval_secs,
        ),
        limits: checkout_gateway::Limits {
            max_concurrent: args.max_concurrent,
            max_backlog: args.max_backlog,
            publish_timeout: Duration::from_millis(args.publish_timeout_ms),
        },
    };
    let result = checkout_gateway::run(
        config,
        flusher(&telemetry, args.trace_flush_before_send),
        shutdown::on_signals(),
    )
    .await;
    finish(telemetry, result.map_err(anyhow::Error::from)).await
}

/// Runs the orchestrator until SIGTERM or Ctrl-C.
pub async fn orchestrator(args: OrchestratorArgs) -> anyhow::Result<ExitCode> {
    let telemetry = args.telemetry.init("orchestrator", SERVICE_FILTER)?;
    let shutdown = shutdown::on_signals();
    let db_url = args.saga_db.url(&args.db);
    let nats_url = &args.nats.nats_url;
    health::serve(
        &args.health,
        nats_url,
        db_url,
        SAGA_SCHEMA,
        shutdown.clone(),
    )
    .await?;
    let config = OrchestratorConfig {
        database_url: db_url.to_owned(),
        nats_url: nats_url.clone(),
        concurrency: args.concurrency,
        max_connections: args.db_connections,
        replicas: args.replicas,
        timing: args.timing.timing()?,
        retention: retention(args.retention_secs, args.retention_interval_secs),
    };
    let result = checkout_orchestrator::run(
        config,
        flusher(&telemetry, args.trace_flush_before_send),
        shutdown,
    )
    .await;
    finish(telemetry, result.map_err(anyhow::Error::from)).await
}

/// Runs a worker until SIGTERM or Ctrl-C.
pub async fn worker(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let kind: Step = args.kind.parse()?;
    let telemetry = args.telemetry.init(kind.as_str(), SERVICE_FILTER)?;
    let shutdown = shutdown::on_signals();
    let db_url = args.worker_db.url(kind, &args.db);
    let nats_url = &args.nats.nats_url;
    health::serve(
        &args.health,
        nats_url,
        db_url,
        kind.schema(),
        shutdown.clone(),
    )
    .await?;
    let config = WorkerConfig {
        kind,
        database_url: db_url.to_owned(),
        nats_url: nats_url.clone(),
        concurrency: args.concurrency,
        max_connections: args.db_connections,
        replicas: args.replicas,
        faults: Faults {
            decline_rate: args.decline_rate,
            order_fail_rate: args.order_fail_rate,
            latency: Duration::from_millis(args.latency_ms),
            gateway_latency: Duration::from_millis(args.gateway_latency_ms),
            decline_mix: checkout_workers::card_gateway::parse_mix(&args.decline_mix)
                .map_err(anyhow::Error::msg)?,
            notification_fail_rate: args.notification_fail_rate,
            notification_attempts: args.notification_attempts,
            notification_backoff: Duration::from_millis(args.notification_backoff_ms),
            notification_latency: Duration::from_millis(args.notification_latency_ms),
        },
        seed_stock: parse_stock(&args.seed_stock)?,
        consumer: None,
        retention: retention(args.retention_secs, args.retention_interval_secs),
    };
    let result = checkout_workers::run(
        config,
        flusher(&telemetry, args.trace_flush_before_send),
        shutdown,
    )
    .await;
    finish(telemetry, result.map_err(anyhow::Error::from)).await
}

/// The default retention of ended sagas and processed messages: a week.
pub const DEFAULT_RETENTION_SECS: u64 = checkout_shared::retention::DEFAULT_KEEP.as_secs();
/// The default pause between two pruning passes.
pub const DEFAULT_RETENTION_INTERVAL_SECS: u64 =
    checkout_shared::retention::DEFAULT_INTERVAL.as_secs();

fn retention(keep_secs: u64, interval_secs: u64) -> Retention {
    Retention {
        keep: Duration::from_secs(keep_secs),
        interval: Duration::from_secs(interval_secs),
    }
}

fn flusher(telemetry: &checkout_shared::telemetry::Telemetry, enabled: bool) -> SpanFlusher {
    if enabled {
        telemetry.flusher()
    } else {
        SpanFlusher::disabled()
    }
}

async fn finish(
    telemetry: checkout_shared::telemetry::Telemetry,
    result: anyhow::Result<()>,
) -> anyhow::Result<ExitCode> {
    if let Err(err) = &result {
        tracing::error!(error = %err, "service failed");
    }
    telemetry.shutdown().await;
    result.map(|()| ExitCode::SUCCESS)
}

/// The price of a seeded SKU whose spec names none.
pub const DEFAULT_PRICE_CENTS: i64 = 1000;
/// The currency of a seeded SKU whose spec names none.
pub const DEFAULT_CURRENCY: &str = "EUR";

/// Parses `SKU=QTY[@PRICE_CENTS[:CURRENCY]],...`.
pub fn parse_stock(spec: &str) -> anyhow::Result<Vec<StockSeed>> {
    spec.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (sku, rest) = part
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("stock {part:?} is not SKU=QTY[@PRICE[:CUR]]"))?;
            let (qty, price) = rest.split_once('@').unwrap_or((rest, ""));
            let (price, currency) = price.split_once(':').unwrap_or((price, DEFAULT_CURRENCY));
            Ok(StockSeed {
                sku: sku.trim().to_owned(),
                quantity: qty.trim().parse()?,
                price_cents: match price.trim() {
                    "" => DEFAULT_PRICE_CENTS,
                    price => price.parse()?,
                },
                currency: currency.trim().to_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stock_specs_parse_and_bad_ones_are_named() {
        let seed = |sku: &str, quantity, price_cents, currency: &str| StockSeed {
            sku: sku.into(),
            quantity,
            price_cents,
            currency: currency.into(),
        };
        assert_eq!(
            parse_stock("A=1, B=20@250,C=3@99:USD,").unwrap(),
            vec![
                seed("A", 1, DEFAULT_PRICE_CENTS, "EUR"),
                seed("B", 20, 250, "EUR"),
                seed("C", 3, 99, "USD")
            ]
        );
        assert!(parse_stock("A=1@x").is_err());
        assert!(parse_stock("A").unwrap_err().to_string().contains("\"A\""));
    }
}
