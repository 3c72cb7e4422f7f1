//! `checkout show <saga id>`: the saga's timeline, read from its append-only log (each step and
//! undo with its start, duration, outcome and reason), its trace id and where to open it; or,
//! for a checkout the door refused, why (its reason code, the field at fault, the reason).

use crate::common::DbArgs;
use crate::databases::{SagaDbArgs, redact};
use crate::trace_links::TraceUiArgs;
use anyhow::Context as _;
use checkout_orchestrator::rejections::{self, RejectionRow};
use checkout_orchestrator::store::{self, LogRow};
use checkout_shared::LogEvent;
use chrono::{DateTime, Utc};
use clap::Args;
use serde::Serialize;
use sqlx::PgPool;
use std::process::ExitCode;
use uuid::Uuid;

/// Options of `checkout show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    saga_db: SagaDbArgs,
    #[command(flatten)]
    links: TraceUiArgs,
    /// The saga.
    saga_id: Uuid,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// One step or undo of a saga, as its log tells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// `do` or `undo`.
    pub phase: &'static str,
    /// The step (`payment.charge`).
    pub step: String,
    /// When it was sent.
    pub start: DateTime<Utc>,
    /// When it ended; none while it runs.
    pub end: Option<DateTime<Utc>>,
    /// `ok`, `failed`, `stuck`, or `running`.
    pub outcome: &'static str,
    /// Why it failed, or what went wrong on the way (re-sends, failed attempts).
    pub reason: Option<String>,
    /// How many times it was sent.
    pub attempts: u32,
}

impl Entry {
    /// Its duration in milliseconds, once it ended.
    pub fn millis(&self) -> Option<f64> {
        self.end
            .map(|end| (end - self.start).num_microseconds().unwrap_or(0) as f64 / 1e3)
    }
}

/// Folds a saga's log into its timeline: one entry per step or undo, in the order they began.
pub fn timeline(log: &[LogRow]) -> Vec<Entry> {
    let mut entries: Vec<Entry> = Vec::new();
    // The entry in hand: the saga runs one step or undo at a time.
    let mut open: Option<usize> = None;
    for row in log {
        let step = row.step.clone().unwrap_or_default();
        let begin = |entries: &mut Vec<Entry>, phase| {
            entries.push(Entry {
                phase,
                step: step.clone(),
                start: row.at,
                end: None,
                outcome: "running",
                reason: None,
                attempts: 1,
            });
            Some(entries.len() - 1)
        };
        match row.event {
            LogEvent::Started => open = begin(&mut entries, "do"),
            LogEvent::UndoStarted => open = begin(&mut entries, "undo"),
            // An operator's retry of a stuck undo sends it afresh: a new undo entry.
            LogEvent::Retried if open.is_none() => open = begin(&mut entries, "undo"),
            LogEvent::Retried | LogEvent::UndoFailed => {
                if let Some(entry) = open.map(|i| &mut entries[i]) {
                    entry.attempts += 1;
                    entry.reason = row.detail.clone();
                }
            }
            event @ (LogEvent::Succeeded
            | LogEvent::UndoFinished
            | LogEvent::Failed
            | LogEvent::Stuck) => {
                if let Some(entry) = open.take().map(|i| &mut entries[i]) {
                    entry.end = Some(row.at);
                    entry.outcome = match event {
                        LogEvent::Failed => "failed",
                        LogEvent::Stuck => "stuck",
                        _ => "ok",
                    };
                    if row.detail.is_some() {
                        entry.reason = row.detail.clone();
                    }
                }
            }
            LogEvent::Completed | LogEvent::Compensated => {}
        }
    }
    entries
}

/// `checkout show <id>`.
pub async fn show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    // The saga store holds the log and the door's refusals: nothing else is read.
    let url = args.saga_db.url(&args.db);
    let pool = PgPool::connect(url)
        .await
        .with_context(|| format!("connecting to the saga store at {}", redact(url)))?;
    let Some(row) = store::get(&pool, args.saga_id).await? else {
        if let Some(refused) = rejections::get(&pool, args.saga_id).await? {
            show_rejection(&refused, args.json);
            return Ok(ExitCode::SUCCESS);
        }
        println!("no saga {}", args.saga_id);
        return Ok(ExitCode::FAILURE);
    };
    let log = store::log(&pool, args.saga_id).await?;
    let entries = timeline(&log);
    let trace_id = row.trace.trace_id.to_string();
    // Where a saga that has not ended stands. A completed checkout whose confirmation is still
    // out has ended: its confirmation shows in the timeline, not as a `now`.
    let waiting = match row.state.waiting_for() {
        Some(at) if row.state.status.is_active() => Some(Waiting::of(
            &row,
            at,
            next_deadline(&pool, row.saga_id).await?,
        )),
        _ => None,
    };
    let links = args.links.resolve().await;
    let link = if row.state.status.is_active() {
        links.link_running(&trace_id).await
    } else {
        links.link(&trace_id).await
    };
    let ended = ended_at(&log);
    if args.json {
        let out = serde_json::json!({
            "saga_id": row.saga_id, "status": row.state.status.as_str(),
            "trace_id": trace_id, "trace_url": link.as_ref().ok().map(|l| &l.url),
            "version": row.version, "started_at": row.started_at, "ended_at": ended,
            "failure": row.state.failure, "stuck_reason": row.stuck_reason,
            "waiting_for": waiting, "data": row.state.data, "timeline": entries, "log": log,
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
    let took = ended.map(|end| format!("  took {:.1} ms", millis(row.started_at, end)));
    println!(
        "started  {}{}",
        row.started_at.format("%Y-%m-%d %H:%M:%S%.3f UTC"),
        took.unwrap_or_default()
    );
    if let Some(failure) = &row.state.failure {
        println!("failure  {failure}");
    }
    if let Some(reason) = &row.stuck_reason {
        println!("stuck    {reason}");
    }
    if let Some(waiting) = &waiting {
        println!("now      {}", waiting.describe(Utc::now()));
    }
    println!("trace    {trace_id}");
    match &link {
        Ok(link) => {
            println!("open     {}", link.url);
            for note in &link.notes {
                println!("         {note}");
            }
        }
        Err(why) => println!("link     none: {why}"),
    }
    println!("timeline:");
    for entry in &entries {
        println!("  {}", line(row.started_at, entry));
    }
    Ok(ExitCode::SUCCESS)
}

/// What a saga that has not ended (or a completed one whose follow-up is out) waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Waiting {
    /// How it stands (`running`, `compensating`, `stuck`, or `completed` for a follow-up).
    pub status: &'static str,
    /// The step in hand.
    pub step: String,
    /// `do` or `undo`.
    pub phase: &'static str,
    /// The command whose reply it waits for (`payment.refund`).
    pub command: String,
    /// The worker kind that answers it.
    pub worker: String,
    /// Whether the saga waits for it (a fire-and-forget step's does not).
    pub awaited: bool,
    /// When the step (or undo) began.
    pub since: DateTime<Utc>,
    /// Sends of the command so far.
    pub sends: u32,
    /// When it is sent again if no reply comes.
    pub next_send: Option<DateTime<Utc>>,
}

impl Waiting {
    /// What `row`, waiting at `at`, waits for; `deadline` is its row's next deadline.
    pub fn of(
        row: &store::SagaRow,
        at: checkout_shared::messages::StepRef,
        deadline: Option<DateTime<Utc>>,
    ) -> Waiting {
        let verb = at.step.verb(at.phase).unwrap_or("none");
        Waiting {
            status: row.state.status.as_str(),
            step: at.step.to_string(),
            phase: at.phase.as_str(),
            command: format!("{}.{verb}", at.step),
            worker: at.step.to_string(),
            awaited: !at.step.is_follow_up(),
            since: row.step_started_at,
            sends: row.state.attempts.saturating_add(1),
            next_send: deadline,
        }
    }

    /// One line: where the saga is and what it waits for, as of `now`.
    pub fn describe(&self, now: DateTime<Utc>) -> String {
        let waited = (now - self.since).num_milliseconds().max(0) as f64 / 1e3;
        let sends = match self.sends {
            1 => "sent once".to_owned(),
            n => format!("sent {n} times"),
        };
        let mut out = format!(
            "{} at {} {}: waiting {waited:.1} s for the {} worker's reply to {} ({sends}",
            self.status, self.phase, self.step, self.worker, self.command
        );
        if !self.awaited {
            out.push_str(", fire-and-forget");
        }
        if let Some(next) = self.next_send {
            out.push_str(&format!(", next send {}", next.format("%H:%M:%S%.3f UTC")));
        }
        out.push(')');
        out
    }
}

/// The saga's next deadline (when its command is re-sent), if it has one.
async fn next_deadline(pool: &PgPool, saga_id: Uuid) -> anyhow::Result<Option<DateTime<Utc>>> {
    let deadline = sqlx::query_scalar("SELECT deadline_at FROM saga.sagas WHERE saga_id = $1")
        .bind(saga_id)
        .fetch_optional(pool)
        .await?;
    Ok(deadline.flatten())
}

/// A checkout the door refused: it has no timeline (it never started) and no saga span (its
/// trace holds the request's publish and validation only), so no link is looked for.
fn show_rejection(refused: &RejectionRow, json: bool) {
    let status = checkout_shared::SagaStatus::Rejected.as_str();
    if json {
        let out = serde_json::json!({
            "saga_id": refused.saga_id, "status": status, "trace_id": refused.trace_id,
            "rejected_at": refused.at, "rejection": refused.code, "field": refused.field,
            "reason": refused.reason, "timeline": [],
        });
        println!("{out}");
        return;
    }
    println!("saga     {}", refused.saga_id);
    println!("status   {status}  (refused at the door; never started)");
    println!(
        "refused  {}",
        refused.at.format("%Y-%m-%d %H:%M:%S%.3f UTC")
    );
    println!("reason   {}", refused.code);
    if let Some(field) = &refused.field {
        println!("field    {field}");
    }
    println!("detail   {}", refused.reason);
    if !refused.trace_id.is_empty() {
        println!("trace    {}", refused.trace_id);
    }
}

/// When the saga ended: its log's saga-level end (a step's own `failed` names its step).
pub fn ended_at(log: &[LogRow]) -> Option<DateTime<Utc>> {
    log.iter()
        .rev()
        .find(|r| {
            r.step.is_none()
                && matches!(
                    r.event,
                    LogEvent::Completed | LogEvent::Compensated | LogEvent::Failed
                )
        })
        .map(|r| r.at)
}

fn millis(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_microseconds().unwrap_or(0) as f64 / 1e3
}

/// One timeline line: offset from the saga's start, phase, step, duration, outcome, reason.
pub fn line(saga_start: DateTime<Utc>, entry: &Entry) -> String {
    let took = entry
        .millis()
        .map_or("-".to_owned(), |ms| format!("{ms:.1} ms"));
    // The sign sticks to the number so that the line splits on whitespace field by field.
    let offset = format!("+{:.1}", millis(saga_start, entry.start));
    let mut out = format!(
        "{offset:>10} ms  {:<4} {:<18} {:>10}  {:<7}",
        entry.phase, entry.step, took, entry.outcome
    );
    if entry.attempts > 1 {
        out.push_str(&format!(" ({} attempts)", entry.attempts));
    }
    if let Some(reason) = &entry.reason {
        out.push_str(&format!(" {reason}"));
    }
    out.trim_end().to_owned()
}

#[cfg(test)]
#[path = "show_tests.rs"]
mod tests;
