//! Operators' commands: list `stuck` sagas, `retry` one (`show` is in `show.rs`).

use crate::common::{DbArgs, NatsArgs, TimingArgs};
use crate::databases::{SagaDbArgs, redact};
use anyhow::Context as _;
use checkout_orchestrator::machine::{Input, SagaStatus};
use checkout_orchestrator::{Executor, store};
use checkout_shared::telemetry::SpanFlusher;
use clap::Args;
use sqlx::PgPool;
use std::process::ExitCode;
use uuid::Uuid;

/// The saga store, the only schema these commands read.
async fn pool(db: &DbArgs, saga_db: &SagaDbArgs) -> anyhow::Result<PgPool> {
    let url = saga_db.url(db);
    PgPool::connect(url)
        .await
        .with_context(|| format!("connecting to the saga store at {}", redact(url)))
}

/// Options of `checkout stuck`.
#[derive(Debug, Args)]
pub struct StuckArgs {
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    saga_db: SagaDbArgs,
}

/// `checkout stuck`.
pub async fn stuck(args: StuckArgs) -> anyhow::Result<ExitCode> {
    let pool = pool(&args.db, &args.saga_db).await?;
    let rows = store::stuck(&pool).await?;
    if rows.is_empty() {
        println!("no stuck sagas");
    }
    let flagged = rows.len();
    for row in rows {
        println!(
            "{}  undo waiting since {}  {}",
            row.saga_id,
            row.step_started_at.format("%Y-%m-%d %H:%M:%S"),
            row.stuck_reason.unwrap_or_default()
        );
    }
    if flagged > 0 {
        println!("their undos are still being retried; `checkout retry <saga id>` sends one now");
    }
    Ok(ExitCode::SUCCESS)
}

/// Options of `checkout retry`.
#[derive(Debug, Args)]
pub struct RetryArgs {
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    saga_db: SagaDbArgs,
    #[command(flatten)]
    nats: NatsArgs,
    /// The deployed orchestrators' timing: the undo's next deadline is written by it.
    #[command(flatten)]
    timing: TimingArgs,
    /// The stuck saga.
    saga_id: Uuid,
}

/// `checkout retry <id>`: sends a stuck saga's undo now, afresh. The saga's own retries go on
/// regardless; this only saves the wait for the next one.
pub async fn retry(args: RetryArgs) -> anyhow::Result<ExitCode> {
    let pool = pool(&args.db, &args.saga_db).await?;
    match store::get(&pool, args.saga_id).await? {
        None => {
            println!("no saga {}", args.saga_id);
            return Ok(ExitCode::FAILURE);
        }
        Some(row) if row.state.status != SagaStatus::Stuck => {
            println!(
                "{} is {}, not stuck: nothing to retry",
                args.saga_id,
                row.state.status.as_str()
            );
            return Ok(ExitCode::FAILURE);
        }
        Some(_) => {}
    }
    let nats =
        checkout_shared::connect::connect(&args.nats.nats_url, "checkout-retry", false).await?;
    let timing = args.timing.timing()?;
    // The undo is sent under the saga's stored step span: its trace stays the checkout's.
    checkout_shared::propagation::install_propagators();
    let (executor, _exported) = Executor::new(pool, nats.clone(), SpanFlusher::disabled(), timing);
    let status = executor.apply(args.saga_id, Input::OperatorRetry).await?;
    nats.flush().await?;
    println!(
        "{}: undo sent again ({}); follow it with `checkout watch {}`",
        args.saga_id,
        status.map_or("unknown", SagaStatus::as_str),
        args.saga_id
    );
    Ok(ExitCode::SUCCESS)
}

/// Options of `checkout provision`.
#[derive(Debug, Args)]
pub struct ProvisionArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// Stream replicas (3 on a three-node cluster).
    #[arg(long, env = "STREAM_REPLICAS", default_value_t = 1)]
    replicas: usize,
}

/// `checkout provision`: creates or updates every stream and consumer of
/// `nats/jetstream.json`, with the identity it is given (the administrator's, when identities
/// are on).
pub async fn provision(args: ProvisionArgs) -> anyhow::Result<ExitCode> {
    let nats =
        checkout_shared::connect::connect(&args.nats.nats_url, "checkout-provision", false).await?;
    let js = checkout_shared::connect::jetstream(nats.clone());
    checkout_shared::streams::provision_as_admin(&js, args.replicas).await?;
    nats.flush().await?;
    println!("streams and consumers provisioned");
    Ok(ExitCode::SUCCESS)
}
