//! The saga store in PostgreSQL: one row per saga (its state, version and span ids) and an
//! append-only log. A transition's writes (row and log) are one statement, conditional on the
//! version the transition was planned from (optimistic concurrency, no lock held between round
//! trips).

use crate::machine::{LogEntry, SagaState};
use crate::spans::{PlannedSpan, SagaTrace};
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

/// The log entries of a transition as three parallel arrays (step, event, detail), for
/// `unnest ... WITH ORDINALITY` in the statement that writes the transition.
type LogColumns<'a> = (Vec<Option<String>>, Vec<&'a str>, Vec<Option<String>>);

fn log_columns(log: &[LogEntry]) -> LogColumns<'_> {
    (
        log.iter().map(|(s, _, _)| s.map(|s| s.name())).collect(),
        log.iter().map(|(_, e, _)| *e).collect(),
        log.iter().map(|(_, _, d)| d.clone()).collect(),
    )
}

/// Inserts a new saga and its log in one statement; returns false (and writes nothing) if it
/// already exists.
pub async fn insert(pool: &PgPool, row: &SagaRow, write: &Write) -> Result<bool, sqlx::Error> {
    let (steps, events, details) = log_columns(&write.log);
    let inserted: i64 = sqlx::query_scalar(
        "WITH ins AS ( \
           INSERT INTO saga.sagas (saga_id, status, state, version, trace_id, parent_span_id, \
             saga_span_id, sampled, step_span_id, step_started_at, deadline_at, started_at, \
             updated_at) \
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) \
           ON CONFLICT (saga_id) DO NOTHING RETURNING saga_id), \
         log AS ( \
           INSERT INTO saga.saga_log (saga_id, step, event, detail) \
           SELECT ins.saga_id, l.step, l.event, l.detail \
           FROM ins, unnest($13::text[], $14::text[], $15::text[]) WITH ORDINALITY \
             AS l(step, event, detail, n) ORDER BY l.n) \
         SELECT count(*) FROM ins",
    )
    .bind(row.saga_id)
    .bind(row.state.status.as_str())
    .bind(sqlx::types::Json(&row.state))
    .bind(row.version)
    .bind(row.trace.trace_id.to_string())
    .bind(row.trace.parent_span_id.map(|s| s.to_string()))
    .bind(row.trace.saga_span_id.to_string())
    .bind(row.trace.sampled)
    .bind(row.step_span_id.to_string())
    .bind(row.step_started_at)
    .bind(write.deadline_at)
    .bind(row.started_at)
    .bind(steps)
    .bind(events)
    .bind(details)
    .fetch_one(pool)
    .await?;
    Ok(inserted == 1)
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

/// Writes a transition in one statement: the new row (version already incremented by the
/// caller) and its log, only if the row is still at `expected_version`, as read. Returns
/// false (nothing written) if another transition committed since: the caller re-reads.
pub async fn save(
    pool: &PgPool,
    expected_version: i64,
    row: &SagaRow,
    write: &Write,
) -> Result<bool, sqlx::Error> {
    let finished = !row.state.status.is_active();
    let (steps, events, details) = log_columns(&write.log);
    let updated: i64 = sqlx::query_scalar(
        "WITH upd AS ( \
           UPDATE saga.sagas SET status = $2, state = $3, version = $4, step_span_id = $5, \
             step_started_at = $6, failed_span_id = $7, \
             pending_spans = CASE WHEN $8::jsonb IS NULL THEN pending_spans \
                                  ELSE coalesce(pending_spans, '[]'::jsonb) || $8::jsonb END, \
             deadline_at = $9, updated_at = $10, \
             finished_at = CASE WHEN $11 THEN $10 ELSE NULL END, stuck_reason = $12 \
           WHERE saga_id = $1 AND version = $13 RETURNING saga_id), \
         log AS ( \
           INSERT INTO saga.saga_log (saga_id, step, event, detail) \
           SELECT upd.saga_id, l.step, l.event, l.detail \
           FROM upd, unnest($14::text[], $15::text[], $16::text[]) WITH ORDINALITY \
             AS l(step, event, detail, n) ORDER BY l.n) \
         SELECT count(*) FROM upd",
    )
    .bind(row.saga_id)
    .bind(row.state.status.as_str())
    .bind(sqlx::types::Json(&row.state))
    .bind(row.version)
    .bind(row.step_span_id.to_string())
    .bind(row.step_started_at)
    .bind(row.failed_span_id.map(|s| s.to_string()))
    .bind((!write.pending_spans.is_empty()).then_some(sqlx::types::Json(&write.pending_spans)))
    .bind(write.deadline_at)
    .bind(row.updated_at)
    .bind(finished)
    .bind(&row.stuck_reason)
    .bind(expected_version)
    .bind(steps)
    .bind(events)
    .bind(details)
    .fetch_one(pool)
    .await?;
    Ok(updated == 1)
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

/// Spans finished but not confirmed exported: `(saga_id, version, spans)`.
pub async fn pending_spans(
    pool: &PgPool,
) -> Result<Vec<(Uuid, i64, Vec<PlannedSpan>)>, sqlx::Error> {
    let rows: Vec<(Uuid, i64, sqlx::types::Json<Vec<PlannedSpan>>)> = sqlx::query_as(
        "SELECT saga_id, version, pending_spans FROM saga.sagas WHERE pending_spans IS NOT NULL",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, v, spans)| (id, v, spans.0))
        .collect())
}

/// Forgets pending spans whose export is confirmed, unless a later transition added more
/// (those stay, and are confirmed with that transition's version).
pub async fn clear_pending(pool: &PgPool, exported: &[(Uuid, i64)]) -> Result<(), sqlx::Error> {
    let ids: Vec<Uuid> = exported.iter().map(|(id, _)| *id).collect();
    let versions: Vec<i64> = exported.iter().map(|(_, v)| *v).collect();
    sqlx::query(
        "UPDATE saga.sagas s SET pending_spans = NULL FROM unnest($1::uuid[], $2::bigint[]) \
         AS e(saga_id, version) WHERE s.saga_id = e.saga_id AND s.version = e.version",
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
    /// The step, if any.
    pub step: Option<String>,
    /// What happened.
    pub event: String,
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

/// How many sagas are in each status.
pub async fn counts(pool: &PgPool) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT status, count(*) FROM saga.sagas GROUP BY status ORDER BY status")
        .fetch_all(pool)
        .await
}
