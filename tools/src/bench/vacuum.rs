//! A stand-in for autovacuum when the server runs without it (this project's build machines
//! turn it off): every saga updates its row several times and retention deletes rows, so
//! without vacuuming the tables bloat, and a soak would measure the bloat instead of the
//! system. A deployment runs PostgreSQL with autovacuum on, as it is by default.

use sqlx::{ConnectOptions, PgConnection, PgPool};
use std::time::Duration;
use tokio::task::JoinHandle;

/// How often the stand-in vacuums the benchmark's database.
pub const EVERY: Duration = Duration::from_secs(10);

/// Starts vacuuming `pg`'s database every [`EVERY`] if the server's autovacuum is off;
/// `None` when autovacuum is on (nothing to stand in for).
pub async fn stand_in_if_off(pg: &PgPool) -> anyhow::Result<Option<JoinHandle<()>>> {
    let autovacuum: String = sqlx::query_scalar("SHOW autovacuum").fetch_one(pg).await?;
    if autovacuum == "on" {
        return Ok(None);
    }
    // Its own connection, with slow-statement logging off: a VACUUM takes seconds by nature.
    let options = (*pg.connect_options())
        .clone()
        .log_slow_statements(log::LevelFilter::Off, Duration::ZERO);
    Ok(Some(tokio::spawn(async move {
        let mut every = tokio::time::interval(EVERY);
        every.tick().await;
        let mut conn: Option<PgConnection> = None;
        loop {
            every.tick().await;
            if conn.is_none() {
                conn = options.connect().await.ok();
            }
            let Some(open) = conn.as_mut() else {
                continue;
            };
            // VACUUM cannot run in a transaction: the simple protocol sends it alone.
            if let Err(err) = sqlx::raw_sql("VACUUM (ANALYZE)").execute(open).await {
                eprintln!("bench: vacuum failed: {err}");
                conn = None;
            }
        }
    })))
}
