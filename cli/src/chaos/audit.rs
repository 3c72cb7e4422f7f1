//! What the chaos runner checks once the system is quiet: every saga ended, stock and money
//! add up, no effect happened twice, every trace is whole; and how long each kill held
//! progress back.

use super::ChaosReport;
use super::killer::Kill;
use checkout_harness::trace_check::check_tree;
use checkout_harness::{OtlpReceiver, ReceivedSpan};
use sqlx::PgPool;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Samples the number of ended sagas every 100 ms.
pub struct Sampler {
    stop: CancellationToken,
    task: JoinHandle<Vec<(Instant, i64)>>,
}

impl Sampler {
    /// Starts sampling.
    pub fn start(pool: PgPool) -> Self {
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while !token.is_cancelled() && samples.len() < 100_000 {
                tick.tick().await;
                let ended: Result<i64, _> = sqlx::query_scalar(
                    "SELECT count(*) FROM saga.sagas \
                     WHERE status IN ('completed', 'compensated', 'failed')",
                )
                .fetch_one(&pool)
                .await;
                if let Ok(ended) = ended {
                    samples.push((Instant::now(), ended));
                }
            }
            samples
        });
        Sampler { stop, task }
    }

    /// Stops and returns the samples.
    pub async fn stop(self) -> Vec<(Instant, i64)> {
        self.stop.cancel();
        self.task.await.unwrap_or_default()
    }
}

/// Longest time from a kill until the count of ended sagas grew again. The baseline is the
/// first sample after the kill, so a saga that ended just before it does not count as
/// progress (the figure errs long, by at most one sampling period).
pub fn max_recovery_ms(kills: &[Kill], samples: &[(Instant, i64)]) -> u64 {
    kills
        .iter()
        .filter_map(|kill| {
            let mut after = samples.iter().filter(|(t, _)| *t >= kill.at);
            let baseline = after.next()?.1;
            let again = after.find(|(_, n)| *n > baseline)?;
            Some(u64::try_from(again.0.duration_since(kill.at).as_millis()).unwrap_or(u64::MAX))
        })
        .max()
        .unwrap_or(0)
}

/// Waits (bounded) until every published checkout has a saga and none is still active.
pub async fn settle(pool: &PgPool, published: usize, limit: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        let (rows, active): (i64, i64) = sqlx::query_as(
            // A completed saga with a deadline still awaits its confirmation's reply.
            "SELECT count(*), count(*) FILTER (WHERE status IN ('running', 'compensating') \
             OR (status = 'completed' AND deadline_at IS NOT NULL)) \
             FROM saga.sagas",
        )
        .fetch_one(pool)
        .await?;
        if active == 0 && rows >= i64::try_from(published).unwrap_or(i64::MAX) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

/// Audits the database and the spans.
pub async fn audit(
    pool: &PgPool,
    receiver: &OtlpReceiver,
    published: &[Uuid],
    initial_stock: &[(String, i32)],
) -> anyhow::Result<ChaosReport> {
    let mut report = ChaosReport::default();
    let counts: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM saga.sagas GROUP BY status")
            .fetch_all(pool)
            .await?;
    for (status, n) in counts {
        report.sagas += n;
        match status.as_str() {
            "completed" => report.completed = n,
            "compensated" => report.compensated = n,
            "failed" => report.failed = n,
            "stuck" => report.stuck = n,
            _ => report.unfinished += n,
        }
    }
    let started: HashSet<Uuid> = sqlx::query_scalar::<_, Uuid>("SELECT saga_id FROM saga.sagas")
        .fetch_all(pool)
        .await?
        .into_iter()
        .collect();
    report.lost = published.iter().filter(|id| !started.contains(id)).count() as i64;
    report.stock_ok = stock_ok(pool, initial_stock).await?;
    let (charged, refunded, ordered): (i64, i64, i64) = sqlx::query_as(
        "SELECT \
           (SELECT coalesce(sum(amount_cents), 0)::bigint FROM payment.ledger WHERE kind = 'charge'), \
           (SELECT coalesce(sum(amount_cents), 0)::bigint FROM payment.ledger WHERE kind = 'refund'), \
           (SELECT coalesce(sum(amount_cents), 0)::bigint FROM orders.orders WHERE status = 'created')",
    )
    .fetch_one(pool)
    .await?;
    report.money_ok = charged - refunded == ordered;
    report.duplicate_effects = duplicate_effects(pool).await?;
    wait_for_spans(pool, receiver).await?;
    let (incomplete, problems) = traces(pool, receiver).await?;
    report.incomplete_traces = incomplete;
    report.trace_problems = problems;
    let spans = receiver.spans();
    report.spans = spans.len();
    report.redelivered_process_spans = spans
        .iter()
        .filter(|s| s.attr("messaging.nats.delivery_count").is_some())
        .count();
    Ok(report)
}

async fn stock_ok(pool: &PgPool, initial: &[(String, i32)]) -> anyhow::Result<bool> {
    let held: HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT item->>'sku', sum((item->>'quantity')::int)::bigint \
         FROM inventory.reservations r, jsonb_array_elements(r.items) item \
         WHERE r.state = 'held' GROUP BY 1",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect();
    let now: HashMap<String, i32> = checkout_workers::inventory::stock(pool)
        .await?
        .into_iter()
        .collect();
    Ok(initial.iter().all(|(sku, initial)| {
        let available = i64::from(now.get(sku).copied().unwrap_or(0));
        i64::from(*initial) == available + held.get(sku).copied().unwrap_or(0)
    }))
}

/// Sagas whose effects disagree with how they ended, or happened more than once.
async fn duplicate_effects(pool: &PgPool) -> anyhow::Result<i64> {
    // The primary keys make a second charge, reservation or order impossible; these checks
    // would catch a schema that lost them, and effects left behind by a compensation.
    let checks = [
        "SELECT count(*) FROM (SELECT saga_id FROM payment.ledger WHERE kind = 'charge' \
         GROUP BY saga_id HAVING count(*) > 1) d",
        "SELECT count(*) FROM saga.sagas s WHERE s.status = 'completed' AND ( \
           (SELECT count(*) FROM payment.ledger l WHERE l.saga_id = s.saga_id AND l.kind = 'charge') <> 1 \
           OR EXISTS (SELECT 1 FROM payment.ledger l WHERE l.saga_id = s.saga_id AND l.kind = 'refund') \
           OR (SELECT count(*) FROM orders.orders o WHERE o.saga_id = s.saga_id AND o.status = 'created') <> 1 \
           OR (SELECT count(*) FROM inventory.reservations r WHERE r.saga_id = s.saga_id AND r.state = 'held') <> 1)",
        "SELECT count(*) FROM saga.sagas s WHERE s.status IN ('compensated', 'failed') AND ( \
           EXISTS (SELECT 1 FROM orders.orders o WHERE o.saga_id = s.saga_id AND o.status = 'created') \
           OR EXISTS (SELECT 1 FROM inventory.reservations r WHERE r.saga_id = s.saga_id AND r.state = 'held') \
           OR coalesce((SELECT sum(CASE kind WHEN 'charge' THEN amount_cents ELSE -amount_cents END) \
                        FROM payment.ledger l WHERE l.saga_id = s.saga_id), 0) <> 0)",
    ];
    let mut total = 0;
    for check in checks {
        let n: i64 = sqlx::query_scalar(check).fetch_one(pool).await?;
        total += n;
    }
    Ok(total)
}

async fn wait_for_spans(pool: &PgPool, receiver: &OtlpReceiver) -> anyhow::Result<()> {
    let traces: HashSet<String> = sqlx::query_scalar::<_, String>(
        "SELECT trace_id FROM saga.sagas WHERE status IN ('completed', 'compensated', 'failed')",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect();
    receiver
        .wait_for(Duration::from_secs(30), |spans| {
            let done: HashSet<&str> = spans
                .iter()
                .filter(|s| s.name == "saga checkout")
                .map(|s| s.trace_id.as_str())
                .collect();
            traces.iter().all(|t| done.contains(t.as_str()))
        })
        .await;
    // Let the last groups of worker spans land.
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(())
}

async fn traces(pool: &PgPool, receiver: &OtlpReceiver) -> anyhow::Result<(usize, Vec<String>)> {
    let sagas: Vec<(Uuid, String, String)> =
        sqlx::query_as("SELECT saga_id, trace_id, status FROM saga.sagas")
            .fetch_all(pool)
            .await?;
    let undone: HashMap<Uuid, usize> = sqlx::query_as::<_, (Uuid, i64)>(
        "SELECT saga_id, count(*) FROM saga.saga_log WHERE event = 'undo_finished' GROUP BY saga_id",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|(id, n)| (id, usize::try_from(n).unwrap_or(0)))
    .collect();
    let mut by_trace: HashMap<String, BTreeMap<String, ReceivedSpan>> = HashMap::new();
    for span in receiver.spans() {
        // A span re-emitted by recovery arrives twice with the same id: count it once.
        by_trace
            .entry(span.trace_id.clone())
            .or_default()
            .entry(span.span_id.clone())
            .or_insert(span);
    }
    let mut incomplete = 0;
    let mut examples = Vec::new();
    for (saga_id, trace_id, status) in sagas {
        let spans: Vec<ReceivedSpan> = by_trace
            .remove(&trace_id)
            .map(|m| m.into_values().collect())
            .unwrap_or_default();
        let mut problems = check_tree(&spans);
        match spans.iter().find(|s| s.name == "saga checkout") {
            None => problems.push("no saga span".into()),
            Some(saga) => {
                // A fire-and-forget step starts as the checkout ends and may outlast it.
                let follow_ups: Vec<String> = checkout_shared::Step::ALL
                    .into_iter()
                    .filter(|s| s.is_fire_and_forget())
                    .map(|s| format!("step {}", s.name()))
                    .collect();
                let uncovered = spans
                    .iter()
                    .filter(|s| s.name.starts_with("step ") || s.name.starts_with("compensate "))
                    .filter(|s| !follow_ups.contains(&s.name))
                    .any(|s| {
                        s.start_unix_nanos < saga.start_unix_nanos
                            || s.end_unix_nanos > saga.end_unix_nanos
                    });
                if uncovered {
                    problems.push("the saga span does not cover its steps".into());
                }
            }
        }
        let compensations = spans
            .iter()
            .filter(|s| s.name.starts_with("compensate "))
            .count();
        let expected = undone.get(&saga_id).copied().unwrap_or(0);
        if status == "compensated" && compensations != expected {
            problems.push(format!(
                "{compensations} compensation spans for {expected} undos"
            ));
        }
        if !problems.is_empty() {
            incomplete += 1;
            if examples.len() < 5 {
                examples.push(format!(
                    "saga {saga_id} trace {trace_id}: {}",
                    problems.join("; ")
                ));
            }
        }
    }
    Ok((incomplete, examples))
}

/// Prints the audit as a table.
pub fn print(report: &ChaosReport, kills: &[Kill], say: &impl Fn(String)) {
    let mark = |ok: bool| if ok { "ok" } else { "FAILED" };
    say(String::new());
    say(format!(
        "{:<34} {:>10}",
        "checkouts published", report.published
    ));
    say(format!("{:<34} {:>10}", "sagas started", report.sagas));
    say(format!("{:<34} {:>10}", "  completed", report.completed));
    say(format!(
        "{:<34} {:>10}",
        "  compensated", report.compensated
    ));
    say(format!(
        "{:<34} {:>10}",
        "  failed (nothing to undo)", report.failed
    ));
    say(format!(
        "{:<34} {:>10}  {}",
        "  stuck",
        report.stuck,
        mark(report.stuck == 0)
    ));
    say(format!(
        "{:<34} {:>10}  {}",
        "  unfinished",
        report.unfinished,
        mark(report.unfinished == 0)
    ));
    say(format!(
        "{:<34} {:>10}  {}",
        "lost (published, never started)",
        report.lost,
        mark(report.lost == 0)
    ));
    say(format!(
        "{:<34} {:>10}  {}",
        "duplicate or stray effects",
        report.duplicate_effects,
        mark(report.duplicate_effects == 0)
    ));
    say(format!(
        "{:<34} {:>10}",
        "stock adds up",
        mark(report.stock_ok)
    ));
    say(format!(
        "{:<34} {:>10}",
        "charges − refunds = orders",
        mark(report.money_ok)
    ));
    say(format!(
        "{:<34} {:>10}  {}",
        "incomplete traces",
        report.incomplete_traces,
        mark(report.incomplete_traces == 0)
    ));
    for problem in &report.trace_problems {
        say(format!("    {problem}"));
    }
    say(format!("{:<34} {:>10}", "spans received", report.spans));
    say(format!(
        "{:<34} {:>10}",
        "  of redelivered messages", report.redelivered_process_spans
    ));
    say(format!(
        "{:<34} {:>10}  {:?}",
        "kills", report.kills, report.kills_by_kind
    ));
    say(format!(
        "{:<34} {:>10}",
        "broker restarts", report.broker_restarts
    ));
    say(format!(
        "{:<34} {:>10}",
        "longest hold-up after a kill (ms)", report.max_recovery_ms
    ));
    say(format!(
        "{:<34} {:>10}  {}",
        "unclean exits on SIGTERM",
        report.unclean_exits.len(),
        mark(report.unclean_exits.is_empty())
    ));
    let log: Vec<String> = kills
        .iter()
        .map(|k| format!("{} ({} ms down)", k.victim, k.down.as_millis()))
        .collect();
    say(format!("{:<34} {}", "kill log", log.join(", ")));
    say(format!("{:<34} {:>10.1}", "elapsed (s)", report.elapsed_s));
    say(format!(
        "{:<34} {:>10}",
        "INVARIANTS",
        if report.invariants_ok {
            "HOLD"
        } else {
            "VIOLATED"
        }
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_is_measured_from_the_kill_to_the_next_progress() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let samples = vec![
            (at(0), 10),
            (at(100), 11),
            (at(200), 11),
            (at(300), 11),
            (at(400), 12),
        ];
        let kill = Kill {
            victim: "orchestrator".into(),
            at: at(50),
            down: Duration::ZERO,
        };
        assert_eq!(max_recovery_ms(&[kill], &samples), 350);
        let never = Kill {
            victim: "nats".into(),
            at: at(450),
            down: Duration::ZERO,
        };
        assert_eq!(max_recovery_ms(&[never], &samples), 0);
    }
}
