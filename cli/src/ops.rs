//! Operators' commands: list `stuck` sagas, `retry` one (`show` is in `show.rs`).

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

/// `checkout retry <id>`: sends the stuck undo afresh and puts the saga back to compensating.
pub async fn retry(args: RetryArgs) -> anyhow::Result<ExitCode> {
    let pool = pool(&args.db).await?;
    let nats =
        checkout_shared::connect::connect(&args.nats.nats_url, "checkout-retry", false).await?;
    let timing = Timing {
        step_timeout: Duration::from_secs(10),
        max_step_timeout: Duration::from_secs(60),
        max_attempts: 5,
    };
    // The undo is sent under the saga's stored step span: its trace stays the checkout's.
    checkout_shared::propagation::install_propagators();
    let (executor, _exported) = Executor::new(pool, nats.clone(), SpanFlusher::disabled(), timing);

    match executor.apply(args.saga_id, Input::OperatorRetry).await? {
        Some(Status::Compensating) => {
            println!(
                "{} is compensating again; follow it with `checkout watch {}`",
                args.saga_id, args.saga_id
            );
            nats.flush().await?;
            Ok(ExitCode::SUCCESS)
        }
        Some(status) => {
            println!(
                "{} is {}, not stuck: nothing to retry",
                args.saga_id,
                status.as_str()
            );
            Ok(ExitCode::FAILURE)
        }
        None => {
            println!("no saga {}", args.saga_id);
            Ok(ExitCode::FAILURE)
        }
    }
}
