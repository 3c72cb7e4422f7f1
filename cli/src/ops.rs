//! Operators' commands: `show` one saga, list `stuck` sagas, `retry` one.

use crate::common::{DbArgs, NatsArgs};
use anyhow::Context as _;
use checkout_orchestrator::machine::{Input, Status};
use checkout_orchestrator::{Executor, Timing, store};
use checkout_shared::telemetry::SpanFlusher;
use clap::Args;
use sqlx::PgPool;
use std::process::ExitCode;
use std::time::Duration;
use uuid::Uuid;

async fn pool(db: &DbArgs) -> anyhow::Result<PgPool> {
    PgPool::connect(&db.database_url)
        .await
        .with_context(|| format!("connecting to {}", db.database_url))
}

/// Options of `checkout show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    db: DbArgs,
    /// The saga.
    saga_id: Uuid,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `checkout show <id>`.
pub async fn show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let pool = pool(&args.db).await?;
    let Some(row) = store::get(&pool, args.saga_id).await? else {
        println!("no saga {}", args.saga_id);
        return Ok(ExitCode::FAILURE);
    };
    let log = store::log(&pool, args.saga_id).await?;
    if args.json {
        let out = serde_json::json!({
            "saga_id": row.saga_id, "status": row.state.status.as_str(),
            "trace_id": row.trace.trace_id.to_string(), "version": row.version,
            "failure": row.state.failure, "stuck_reason": row.stuck_reason,
            "data": row.state.data, "log": log,
        });
        println!("{out}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("saga     {}", row.saga_id);
    println!(
        "status   {}  (version {})",
        row.state.status.as_str(),
        row.version
    );
    println!("trace    {}", row.trace.trace_id);
    if let Some(failure) = &row.state.failure {
        println!("failure  {failure}");
    }
    if let Some(reason) = &row.stuck_reason {
        println!("stuck    {reason}");
    }
    println!("log:");
    for entry in log {
        println!(
            "  {}  {:<14} {:<18} {}",
            entry.at.format("%H:%M:%S%.3f"),
            entry.event,
            entry.step.unwrap_or_default(),
            entry.detail.unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Options of `checkout stuck`.
#[derive(Debug, Args)]
pub struct StuckArgs {
    #[command(flatten)]
    db: DbArgs,
}

/// `checkout stuck`.
pub async fn stuck(args: StuckArgs) -> anyhow::Result<ExitCode> {
    let pool = pool(&args.db).await?;
    let rows = store::stuck(&pool).await?;
    if rows.is_empty() {
        println!("no stuck sagas");
    }
    for row in rows {
        println!(
            "{}  since {}  {}",
            row.saga_id,
            row.updated_at.format("%Y-%m-%d %H:%M:%S"),
            row.stuck_reason.unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Options of `checkout retry`.
#[derive(Debug, Args)]
pub struct RetryArgs {
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    nats: NatsArgs,
    /// The stuck saga.
    saga_id: Uuid,
}

/// `checkout retry <id>`: sends a stuck saga's undo now, afresh. The saga's own retries go on
/// regardless; this only saves the wait for the next one.
pub async fn retry(args: RetryArgs) -> anyhow::Result<ExitCode> {
    let pool = pool(&args.db).await?;
    match store::get(&pool, args.saga_id).await? {
        None => {
            println!("no saga {}", args.saga_id);
            return Ok(ExitCode::FAILURE);
        }
        Some(row) if row.state.status != Status::Stuck => {
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
    let timing = Timing {
        step_timeout: Duration::from_secs(10),
        max_step_timeout: Duration::from_secs(60),
        max_attempts: 5,
        stuck_after: Duration::from_secs(300),
    };
    // The undo is sent under the saga's stored step span: its trace stays the checkout's.
    checkout_shared::propagation::install_propagators();
    let (executor, _exported) = Executor::new(pool, nats.clone(), SpanFlusher::disabled(), timing);
    let status = executor.apply(args.saga_id, Input::OperatorRetry).await?;
    nats.flush().await?;
    println!(
        "{}: undo sent again ({}); follow it with `checkout watch {}`",
        args.saga_id,
        status.map_or("unknown", Status::as_str),
        args.saga_id
    );
    Ok(ExitCode::SUCCESS)
}
