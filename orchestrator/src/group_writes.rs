//! Saga writes by group commit: the starts and transitions of many sagas, each still
//! conditional on its own version, written by one statement and one commit
//! ([`checkout_shared::group_commit`]).
//!
//! A batch that fails as a whole (one bad row, a deadlock with another orchestrator) is
//! written again one saga at a time, so that each caller gets its own answer: a failure is
//! only ever a failure of the saga that caused it.

use crate::machine::LogEntry;
use crate::store::{SagaRow, Write};
use checkout_shared::group_commit::GroupCommit;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;
use std::collections::HashSet;
use uuid::Uuid;

/// Sagas written per statement at most.
const MAX_BATCH: usize = 128;

type Answer = Result<bool, sqlx::Error>;

/// The two write queues of a store.
#[derive(Debug, Clone)]
pub struct GroupWrites {
    inserts: GroupCommit<(Uuid, Value), Answer>,
    saves: GroupCommit<Value, Answer>,
}

impl GroupWrites {
    /// Starts the queues' tasks (inside the Tokio runtime).
    pub fn start(pool: PgPool) -> Self {
        let for_inserts = pool.clone();
        GroupWrites {
            inserts: GroupCommit::start(MAX_BATCH, move |items| {
                insert_all(for_inserts.clone(), items)
            }),
            saves: GroupCommit::start(MAX_BATCH, move |items| {
                each_or_alone(pool.clone(), items, SAVE)
            }),
        }
    }

    /// Inserts a new saga and its log; false (nothing written) if it already exists.
    pub async fn insert(&self, row: &SagaRow, write: &Write) -> Answer {
        let item = insert_item(row, write);
        self.inserts
            .submit((row.saga_id, item))
            .await
            // Only while the runtime shuts down: the pool is closing too.
            .unwrap_or_else(|_| Err(sqlx::Error::PoolClosed))
    }

    /// Writes a transition over `expected_version`; false (nothing written) if another
    /// transition committed since.
    pub async fn save(&self, expected_version: i64, row: &SagaRow, write: &Write) -> Answer {
        let item = save_item(expected_version, row, write);
        self.saves
            .submit(item)
            .await
            // Only while the runtime shuts down: the pool is closing too.
            .unwrap_or_else(|_| Err(sqlx::Error::PoolClosed))
    }
}

/// One saga per start at most in a statement: a duplicate of a start queued beside it is
/// answered "already exists" once the first is written (or was before), and fails with it if
/// the first failed, so that its message is retried too.
async fn insert_all(pool: PgPool, items: Vec<(Uuid, Value)>) -> Vec<Answer> {
    let mut first_of = std::collections::HashMap::new();
    let (unique, duplicate): (Vec<usize>, Vec<usize>) =
        (0..items.len()).partition(|&i| *first_of.entry(items[i].0).or_insert(i) == i);
    let firsts: Vec<Value> = unique.iter().map(|&i| items[i].1.clone()).collect();
    let mut written = each_or_alone(pool, firsts, INSERT).await.into_iter();
    let mut answers: Vec<Option<Answer>> = (0..items.len()).map(|_| None).collect();
    for i in unique {
        answers[i] = written.next();
    }
    for i in duplicate {
        let first = first_of[&items[i].0];
        answers[i] = Some(match &answers[first] {
            Some(Ok(_)) => Ok(false),
            _ => Err(sqlx::Error::Protocol(
                "the same saga's start in this batch failed".into(),
            )),
        });
    }
    answers
        .into_iter()
        .map(|a| a.unwrap_or(Err(sqlx::Error::WorkerCrashed)))
        .collect()
}

/// Runs `sql` over all items at once; if that fails, over each alone.
async fn each_or_alone(pool: PgPool, items: Vec<Value>, sql: &'static str) -> Vec<Answer> {
    if items.len() > 1 {
        match written(&pool, &items, sql).await {
            Ok(ns) => {
                return (1..=items.len() as i64)
                    .map(|n| Ok(ns.contains(&n)))
                    .collect();
            }
            Err(err) => {
                tracing::warn!(sagas = items.len(), error = %err, "group write failed; writing each saga alone");
            }
        }
    }
    let mut answers = Vec::with_capacity(items.len());
    for item in items {
        let one = std::slice::from_ref(&item);
        answers.push(written(&pool, one, sql).await.map(|ns| !ns.is_empty()));
    }
    answers
}

/// The positions (1-based) of the items the statement wrote.
async fn written(
    pool: &PgPool,
    items: &[Value],
    sql: &'static str,
) -> Result<HashSet<i64>, sqlx::Error> {
    let ns: Vec<i64> = sqlx::query_scalar(sql)
        .bind(Value::Array(items.to_vec()))
        .fetch_all(pool)
        .await?;
    Ok(ns.into_iter().collect())
}

fn timestamp(at: DateTime<Utc>) -> String {
    // Microseconds, as PostgreSQL stores them (and as the row read back will say).
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn log_json(log: &[LogEntry]) -> Value {
    Value::Array(
        log.iter()
            .map(|(step, event, detail)| {
                json!({ "step": step.map(|s| s.as_str()), "event": event, "detail": detail })
            })
            .collect(),
    )
}

fn insert_item(row: &SagaRow, write: &Write) -> Value {
    json!({
        "saga_id": row.saga_id,
        "status": row.state.status.as_str(),
        "state": row.state,
        "version": row.version,
        "trace_id": row.trace.trace_id.to_string(),
        "parent_span_id": row.trace.parent_span_id.map(|s| s.to_string()),
        "saga_span_id": row.trace.saga_span_id.to_string(),
        "sampled": row.trace.sampled,
        "step_span_id": row.step_span_id.to_string(),
        "step_started_at": timestamp(row.step_started_at),
        "deadline_at": write.deadline_at.map(timestamp),
        "started_at": timestamp(row.started_at),
        "log": log_json(&write.log),
    })
}

fn save_item(expected_version: i64, row: &SagaRow, write: &Write) -> Value {
    json!({
        "saga_id": row.saga_id,
        "expected": expected_version,
        "status": row.state.status.as_str(),
        "state": row.state,
        "version": row.version,
        "step_span_id": row.step_span_id.to_string(),
        "step_started_at": timestamp(row.step_started_at),
        "failed_span_id": row.failed_span_id.map(|s| s.to_string()),
        "pending": (!write.pending_spans.is_empty()).then_some(&write.pending_spans),
        "deadline_at": write.deadline_at.map(timestamp),
        "updated_at": timestamp(row.updated_at),
        "finished": !row.state.status.is_active(),
        "stuck_reason": row.stuck_reason,
        "log": log_json(&write.log),
    })
}

/// New sagas and their logs; an existing saga is left alone, and so is a checkout the door
/// refused (a second delivery gets the same refusal, not a saga). Each saga first claims its
/// id in `saga.checkout_ids`, as a refusal does: the unique key, not a look at the other
/// table, decides which of a saga and a refusal racing for one id gets it (claims in id
/// order, so two batches never deadlock). Returns the positions written.
const INSERT: &str = "\
WITH input AS ( \
  SELECT e.n, r.* FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS e(item, n), \
    jsonb_to_record(e.item) AS r(saga_id uuid, status text, state jsonb, version bigint, \
      trace_id text, parent_span_id text, saga_span_id text, sampled boolean, \
      step_span_id text, step_started_at timestamptz, deadline_at timestamptz, \
      started_at timestamptz, log jsonb)), \
claimed AS ( \
  INSERT INTO saga.checkout_ids (saga_id) SELECT saga_id FROM input ORDER BY saga_id \
  ON CONFLICT (saga_id) DO NOTHING RETURNING saga_id), \
ins AS ( \
  INSERT INTO saga.sagas (saga_id, status, state, version, trace_id, parent_span_id, \
    saga_span_id, sampled, step_span_id, step_started_at, deadline_at, started_at, updated_at) \
  SELECT saga_id, status, state, version, trace_id, parent_span_id, saga_span_id, sampled, \
    step_span_id, step_started_at, deadline_at, started_at, started_at \
  FROM input JOIN claimed USING (saga_id) \
  ORDER BY n ON CONFLICT (saga_id) DO NOTHING RETURNING saga_id), \
log AS ( \
  INSERT INTO saga.saga_log (saga_id, step, event, detail) \
  SELECT i.saga_id, l.step, l.event, l.detail FROM ins JOIN input i USING (saga_id), \
    ROWS FROM (jsonb_to_recordset(i.log) AS (step text, event text, detail text)) \
      WITH ORDINALITY AS l(step, event, detail, k) \
  ORDER BY i.n, l.k) \
SELECT i.n FROM ins JOIN input i USING (saga_id)";

/// Transitions, each written only over the version it was planned from, with their logs.
/// Returns the positions written. The rows are locked in saga-id order first, as every
/// statement that changes many sagas locks them, so that two never deadlock.
const SAVE: &str = "\
WITH input AS ( \
  SELECT e.n, r.* FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS e(item, n), \
    jsonb_to_record(e.item) AS r(saga_id uuid, expected bigint, status text, state jsonb, \
      version bigint, step_span_id text, step_started_at timestamptz, failed_span_id text, \
      pending jsonb, deadline_at timestamptz, updated_at timestamptz, finished boolean, \
      stuck_reason text, log jsonb)), \
locked AS ( \
  SELECT s.saga_id FROM saga.sagas s JOIN input i ON s.saga_id = i.saga_id \
    AND s.version = i.expected ORDER BY s.saga_id FOR UPDATE OF s), \
upd AS ( \
  UPDATE saga.sagas s SET status = i.status, state = i.state, version = i.version, \
    step_span_id = i.step_span_id, step_started_at = i.step_started_at, \
    failed_span_id = i.failed_span_id, \
    pending_spans = CASE WHEN i.pending IS NULL THEN s.pending_spans \
      ELSE coalesce(s.pending_spans, '{}'::jsonb) || jsonb_build_object(i.version::text, \
        jsonb_build_object('at', extract(epoch FROM now()), 'spans', i.pending)) END, \
    deadline_at = i.deadline_at, updated_at = i.updated_at, \
    finished_at = CASE WHEN i.finished THEN i.updated_at ELSE NULL END, \
    stuck_reason = i.stuck_reason \
  FROM input i, locked l \
  WHERE s.saga_id = l.saga_id AND i.saga_id = l.saga_id AND s.version = i.expected \
  RETURNING i.n, s.saga_id, i.log), \
log AS ( \
  INSERT INTO saga.saga_log (saga_id, step, event, detail) \
  SELECT upd.saga_id, l.step, l.event, l.detail FROM upd, \
    ROWS FROM (jsonb_to_recordset(upd.log) AS (step text, event text, detail text)) \
      WITH ORDINALITY AS l(step, event, detail, k) \
  ORDER BY upd.n, l.k) \
SELECT n FROM upd";
