//! The saga store in PostgreSQL: one row per saga (its state, version and span ids) and an
//! append-only log. A transition's writes (row and log) are one statement, conditional on the
//! version the transition was planned from (optimistic concurrency, no lock held between round
//! trips), shared with other sagas' transitions by group commit ([`crate::group_writes`]).

use crate::machine::{LogEntry, SagaState};
use crate::spans::{PlannedSpan, SagaTrace};
use checkout_shared::LogEvent;
use chrono::{DateTime, Utc};
use opentelemetry::trace::{SpanId, TraceId};
use sqlx::{PgPool, Row};
use uuid::Uuid;

/// Applies the orchestrator's migrations (schema `saga`, with its own migration history).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.create_schema("saga");
    migrator.dangerous_set_table_name("saga._sqlx_migrations");
    migrator.run(pool).await
}

/// A saga as stored.
#[derive(Debug, Clone)]
pub struct SagaRow {
    /// Its id.
    pub saga_id: Uuid,
    /// Its machine state.
    pub state: SagaState,
    /// Incremented by every transition.
    pub version: i64,
    /// Its trace and saga span.
    pub trace: SagaTrace,
    /// The span of the step (or undo) in hand.
    pub step_span_id: SpanId,
    /// When that step began.
    pub step_started_at: DateTime<Utc>,
    /// The span of the step whose failure started the compensation.
    pub failed_span_id: Option<SpanId>,
    /// When the saga began.
    pub started_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Why it is stuck, if it is.
    pub stuck_reason: Option<String>,
}

/// What a transition writes besides the row's own fields.
#[derive(Debug, Default)]
pub struct Write {
    /// Log entries to append.
    pub log: Vec<LogEntry>,
    /// Spans finished by this transition, to emit.
    pub pending_spans: Vec<PlannedSpan>,
    /// When to time out the current command (none once the saga stops waiting).
    pub deadline_at: Option<DateTime<Utc>>,
}

/// The columns of a [`SagaRow`], as a literal so that queries stay static strings.
macro_rules! columns {
    () => {
        "saga_id, state, version, trace_id, parent_span_id, saga_span_id, sampled, \
         step_span_id, step_started_at, failed_span_id, started_at, updated_at, stuck_reason"
    };
}

fn span_id(text: &str) -> Result<SpanId, sqlx::Error> {
    SpanId::from_hex(text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn from_row(row: &sqlx::postgres::PgRow) -> Result<SagaRow, sqlx::Error> {
    let state: sqlx::types::Json<SagaState> = row.try_get("state")?;
    let trace_id: String = row.try_get("trace_id")?;
    let parent: Option<String> = row.try_get("parent_span_id")?;
    let failed: Option<String> = row.try_get("failed_span_id")?;
    Ok(SagaRow {
        saga_id: row.try_get("saga_id")?,
        state: state.0,
        version: row.try_get("version")?,
        trace: SagaTrace {
            trace_id: TraceId::from_hex(&trace_id).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            parent_span_id: parent.as_deref().map(span_id).transpose()?,
            saga_span_id: span_id(row.try_get("saga_span_id")?)?,
            sampled: row.try_get("sampled")?,
        },
        step_span_id: span_id(row.try_get("step_span_id")?)?,
        step_started_at: row.try_get("step_started_at")?,
        failed_span_id: failed.as_deref().map(span_id).transpose()?,
        started_at: row.try_get("started_at")?,
        updated_at: row.try_get("updated_at")?,
        stuck_reason: row.try_get("stuck_reason")?,
    })
}

/// Reads a saga without locking it, and whether its deadline has passed.
pub async fn read(pool: &PgPool, saga_id: Uuid) -> Result<Option<(SagaRow, bool)>, sqlx::Error> {
    let row = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        ", coalesce(deadline_at < now(), false) AS due FROM saga.sagas WHERE saga_id = $1"
    ))
    .bind(saga_id)
    .fetch_optional(pool)
    .await?;
    row.as_ref()
        .map(|r| Ok((from_row(r)?, r.try_get("due")?)))
        .transpose()
}

/// Sagas whose deadline has passed, oldest first: the active ones, and completed ones still
/// awaiting their fire-and-forget step (only those keep a deadline once ended).
pub async fn due(pool: &PgPool, limit: i64) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT saga_id FROM saga.sagas \
         WHERE deadline_at < now() ORDER BY deadline_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Every saga still waiting for a reply, for recovery after a restart.
pub async fn active(pool: &PgPool) -> Result<Vec<SagaRow>, sqlx::Error> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM saga.sagas WHERE status IN ('running', 'compensating', 'stuck')"
    ))
    .fetch_all(pool)
    .await?;
    rows.iter().map(from_row).collect()
}

/// One transition's pending spans as read: `(saga_id, version, spans)`.
type PendingRow = (Uuid, i64, sqlx::types::Json<Vec<PlannedSpan>>);

fn pending_entries(rows: Vec<PendingRow>) -> Vec<(Uuid, i64, Vec<PlannedSpan>)> {
    rows.into_iter()
        .map(|(id, version, spans)| (id, version, spans.0))
        .collect()
}

/// Spans finished but not confirmed exported: `(saga_id, version, spans)`, one entry per
/// transition that left some.
///
/// `pending_spans` holds them by the version that wrote them,
/// `{"<version>": {"at": <epoch seconds>, "spans": [...]}}`, so that confirming one
/// transition's export never forgets another's: a transition whose writer was told it failed
/// (its answer lost with the connection) was written but never emitted, and the next
/// transition's confirmation must leave it for the sweep.
pub async fn pending_spans(
    pool: &PgPool,
) -> Result<Vec<(Uuid, i64, Vec<PlannedSpan>)>, sqlx::Error> {
    let rows: Vec<PendingRow> = sqlx::query_as(
        "SELECT s.saga_id, e.key::bigint, e.value->'spans' \
         FROM saga.sagas s, jsonb_each(s.pending_spans) e WHERE s.pending_spans IS NOT NULL",
    )
    .fetch_all(pool)
    .await?;
    Ok(pending_entries(rows))
}

/// Pending spans of transitions written more than `min_age` ago, oldest first, at most
/// `limit` transitions.
pub async fn stale_pending_spans(
    pool: &PgPool,
    min_age: std::time::Duration,
    limit: i64,
) -> Result<Vec<(Uuid, i64, Vec<PlannedSpan>)>, sqlx::Error> {
    let rows: Vec<PendingRow> = sqlx::query_as(
        "SELECT s.saga_id, e.key::bigint, e.value->'spans' \
         FROM saga.sagas s, jsonb_each(s.pending_spans) e WHERE s.pending_spans IS NOT NULL \
           AND (e.value->>'at')::float8 < extract(epoch FROM now()) - $1 \
         ORDER BY (e.value->>'at')::float8 LIMIT $2",
    )
    .bind(min_age.as_secs_f64())
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(pending_entries(rows))
}

/// Forgets the pending spans of exactly these `(saga, version)` transitions: their export is
/// confirmed. Other transitions' spans stay, whether written before or after.
pub async fn clear_pending(pool: &PgPool, exported: &[(Uuid, i64)]) -> Result<(), sqlx::Error> {
    let ids: Vec<Uuid> = exported.iter().map(|(id, _)| *id).collect();
    let versions: Vec<i64> = exported.iter().map(|(_, v)| *v).collect();
    // Rows are locked in saga-id order, as group writes lock them: two statements that
    // each change many sagas then never wait on each other in a cycle (a deadlock, which
    // PostgreSQL would break only after its deadlock_timeout).
    sqlx::query(
        "WITH confirmed AS ( \
           SELECT saga_id, array_agg(version::text) AS versions \
           FROM unnest($1::uuid[], $2::bigint[]) AS e(saga_id, version) GROUP BY saga_id), \
         locked AS ( \
           SELECT s.saga_id, c.versions FROM saga.sagas s JOIN confirmed c USING (saga_id) \
           WHERE s.pending_spans IS NOT NULL ORDER BY s.saga_id FOR UPDATE OF s) \
         UPDATE saga.sagas s SET pending_spans = nullif(s.pending_spans - l.versions, '{}'::jsonb) \
         FROM locked l WHERE s.saga_id = l.saga_id",
    )
    .bind(ids)
    .bind(versions)
    .execute(pool)
    .await?;
    Ok(())
}

/// One saga, unlocked.
pub async fn get(pool: &PgPool, saga_id: Uuid) -> Result<Option<SagaRow>, sqlx::Error> {
    let row = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM saga.sagas WHERE saga_id = $1"
    ))
    .bind(saga_id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// Sagas flagged stuck (their undo is still being retried), oldest first.
pub async fn stuck(pool: &PgPool) -> Result<Vec<SagaRow>, sqlx::Error> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM saga.sagas WHERE status = 'stuck' ORDER BY updated_at"
    ))
    .fetch_all(pool)
    .await?;
    rows.iter().map(from_row).collect()
}

/// One entry of a saga's log.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct LogRow {
    /// The step, if any (as its name: a step a later release dropped still reads).
    pub step: Option<String>,
    /// What happened.
    #[sqlx(try_from = "String")]
    pub event: LogEvent,
    /// Detail.
    pub detail: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// A saga's log, in order.
pub async fn log(pool: &PgPool, saga_id: Uuid) -> Result<Vec<LogRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT step, event, detail, at FROM saga.saga_log WHERE saga_id = $1 ORDER BY id",
    )
    .bind(saga_id)
    .fetch_all(pool)
    .await
}
