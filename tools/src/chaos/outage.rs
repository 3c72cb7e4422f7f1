//! One worker's table made unusable for longer than a command's whole delivery budget, then
//! restored, through a direct admin connection (never through the proxies, so that the
//! network faults cannot keep the table broken).
//!
//! ```text
//!  t0            every undo write on the table fails (a trigger raises)
//!  t0+L-R        the table is renamed away as well: every action fails too
//!  t0+L          renamed back, trigger dropped
//! ```
//!
//! Undo writes fail for the whole window, so undos started early in it (releases after a
//! decline, refunds after a refused order) outlive their deliveries while actions keep
//! producing compensations: the situation in which a failure to act must never become an
//! outcome. The rename at the end breaks the actions as well, without starving the undos of
//! sagas to undo for the whole window.

use checkout_shared::Step;
use sqlx::{Connection as _, PgConnection};
use std::time::Duration;
use tokio::time::Instant;

/// A step's table, with the condition that singles out its undo writes. The step gives the
/// worker kind (`step.as_str()`), its name in the saga log (the same) and its schema.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// The step whose worker owns the table.
    pub step: Step,
    /// The table both its action and its undo write, in the step's schema.
    pub table: &'static str,
    /// A trigger `WHEN` condition true for undo writes only.
    undo_write: &'static str,
}

/// The tables, one per step with an undo.
pub const TARGETS: [Target; 3] = [
    Target {
        step: Step::Inventory,
        table: "reservations",
        undo_write: "NEW.state <> 'held'",
    },
    Target {
        step: Step::Payment,
        table: "ledger",
        undo_write: "NEW.kind = 'refund'",
    },
    Target {
        step: Step::Order,
        table: "orders",
        undo_write: "NEW.status <> 'created'",
    },
];

/// What the outage did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct OutageReport {
    /// The worker kind whose table was broken.
    pub worker: String,
    /// The table.
    pub table: String,
    /// Seconds from breaking to restoring.
    pub seconds: f64,
    /// Seconds of it with the table renamed away.
    pub renamed_seconds: f64,
    /// Undos of that step started while undo writes failed.
    pub undos_started_during: i64,
    /// Whether it was restored (if not, the run fails: the system cannot recover).
    pub restored: bool,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

/// How long any admin statement may keep trying (the cluster may be down for a restart).
const ADMIN_PATIENCE: Duration = Duration::from_secs(120);

/// Breaks `target`'s table for `length` (renamed for the last `renamed` of it), restores it.
pub async fn run(
    db_url: &str,
    target: Target,
    length: Duration,
    renamed: Duration,
) -> OutageReport {
    let mut report = OutageReport {
        worker: target.step.as_str().to_owned(),
        table: format!("{}.{}", target.step.schema(), target.table),
        ..OutageReport::default()
    };
    let begin = Instant::now();
    let (s, t) = (target.step.schema(), target.table);
    let break_undos = format!(
        "CREATE OR REPLACE FUNCTION public.chaos_unusable() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'chaos: % is unusable', TG_TABLE_NAME \
         USING ERRCODE = '55000'; END $$; \
         CREATE TRIGGER chaos_unusable BEFORE INSERT OR UPDATE ON {s}.{t} FOR EACH ROW \
         WHEN ({}) EXECUTE FUNCTION public.chaos_unusable()",
        target.undo_write
    );
    let started_at = match admin(db_url, &break_undos).await {
        Ok(at) => at,
        Err(err) => {
            report.error = Some(format!("breaking {}: {err}", report.table));
            return report;
        }
    };
    tokio::time::sleep(length.saturating_sub(renamed)).await;
    let rename_began = Instant::now();
    if let Err(err) = admin(db_url, &format!("ALTER TABLE {s}.{t} RENAME TO {t}_chaos")).await {
        report.error = Some(format!("renaming {}: {err}", report.table));
    }
    tokio::time::sleep(renamed.saturating_sub(rename_began.elapsed())).await;
    // Idempotent, so that a retry after a lost reply (the cluster killed meanwhile) is safe.
    let restore = format!(
        "DO $$ BEGIN \
           IF to_regclass('{s}.{t}_chaos') IS NOT NULL THEN \
             ALTER TABLE {s}.{t}_chaos RENAME TO {t}; \
           END IF; \
         END $$; \
         DROP TRIGGER IF EXISTS chaos_unusable ON {s}.{t}"
    );
    let ended_at = match admin(db_url, &restore).await {
        Ok(at) => at,
        Err(err) => {
            report.error = Some(format!("restoring {}: {err}", report.table));
            return report;
        }
    };
    report.restored = true;
    report.seconds = begin.elapsed().as_secs_f64();
    report.renamed_seconds = rename_began.elapsed().as_secs_f64();
    report.undos_started_during = undos_between(db_url, target.step, started_at, ended_at)
        .await
        .unwrap_or(-1);
    report
}

/// Runs `sql` in one transaction on a fresh direct connection, retrying (bounded) through
/// cluster restarts and lock waits; returns the database's clock when it committed.
async fn admin(db_url: &str, sql: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    let deadline = Instant::now() + ADMIN_PATIENCE;
    let mut last = None;
    while Instant::now() < deadline {
        match admin_once(db_url, sql).await {
            Ok(at) => return Ok(at),
            Err(err) => last = Some(err),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt within {ADMIN_PATIENCE:?}")))
}

async fn admin_once(db_url: &str, sql: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    let mut conn =
        tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(db_url)).await??;
    let mut tx = conn.begin().await?;
    // A short lock wait: DDL queued behind a long transaction would block every worker
    // query on the table behind it.
    sqlx::raw_sql("SET LOCAL lock_timeout = '2s'")
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut *tx)
        .await?;
    let at = sqlx::query_scalar("SELECT now()")
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(at)
}

async fn undos_between(
    db_url: &str,
    step: Step,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<i64> {
    let mut conn = PgConnection::connect(db_url).await?;
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM saga.saga_log \
         WHERE step = $1 AND event = 'undo_started' AND at BETWEEN $2 AND $3",
    )
    .bind(step.as_str())
    .bind(from)
    .bind(to)
    .fetch_one(&mut conn)
    .await?)
}
