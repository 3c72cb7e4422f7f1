//! What the chaos runner checks in the database once the system is quiet: every saga ended,
//! stock and money add up, and each saga's effects agree with how it ended.
//!
//! The effect checks are per saga, and each can fail: the ledger's primary key forbids a
//! second charge, so counting charges proves nothing; what can go wrong is the money, stock
//! and order a saga leaves behind. The amount a completed saga must have been charged comes
//! from the runner's own record of what it published, not from the system's tables.

use super::report::ChaosReport;
use sqlx::PgPool;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use uuid::Uuid;

/// Waits (bounded) until every published checkout has a saga and none is still active. The
/// database may be restarting: a failed query is retried until the limit.
pub async fn settle(pool: &PgPool, published: usize, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        let counts: Result<(i64, i64), _> = sqlx::query_as(
            // A completed saga with a deadline still awaits its confirmation's reply.
            "SELECT count(*), count(*) FILTER (WHERE status IN ('running', 'compensating') \
             OR (status = 'completed' AND deadline_at IS NOT NULL)) \
             FROM saga.sagas",
        )
        .fetch_one(pool)
        .await;
        if let Ok((rows, active)) = counts
            && active == 0
            && rows >= i64::try_from(published).unwrap_or(i64::MAX)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The per-saga effect checks: (name, query counting the sagas that fail it). `$1` and `$2`
/// are the published checkouts' ids and amounts.
const EFFECT_CHECKS: [(&str, &str); 5] = [
    (
        "compensated, failed or stuck saga with money taken",
        "SELECT count(*) FROM saga.sagas s WHERE s.status IN ('compensated', 'failed', 'stuck') \
         AND coalesce((SELECT sum(CASE kind WHEN 'charge' THEN amount_cents ELSE -amount_cents END) \
                       FROM payment.ledger l WHERE l.saga_id = s.saga_id), 0) <> 0",
    ),
    (
        "compensated, failed or stuck saga with stock held",
        "SELECT count(*) FROM saga.sagas s WHERE s.status IN ('compensated', 'failed', 'stuck') \
         AND EXISTS (SELECT 1 FROM inventory.reservations r \
                     WHERE r.saga_id = s.saga_id AND r.state = 'held')",
    ),
    (
        "compensated, failed or stuck saga with an order left",
        "SELECT count(*) FROM saga.sagas s WHERE s.status IN ('compensated', 'failed', 'stuck') \
         AND EXISTS (SELECT 1 FROM orders.orders o \
                     WHERE o.saga_id = s.saga_id AND o.status = 'created')",
    ),
    (
        "completed saga charged other than its amount",
        "SELECT count(*) FROM saga.sagas s \
         JOIN unnest($1::uuid[], $2::bigint[]) AS p(saga_id, amount) USING (saga_id) \
         WHERE s.status = 'completed' \
         AND coalesce((SELECT sum(CASE kind WHEN 'charge' THEN amount_cents ELSE -amount_cents END) \
                       FROM payment.ledger l WHERE l.saga_id = s.saga_id), 0) <> p.amount",
    ),
    (
        "completed saga without its order or stock",
        "SELECT count(*) FROM saga.sagas s WHERE s.status = 'completed' AND ( \
           NOT EXISTS (SELECT 1 FROM orders.orders o \
                       WHERE o.saga_id = s.saga_id AND o.status = 'created') \
           OR NOT EXISTS (SELECT 1 FROM inventory.reservations r \
                          WHERE r.saga_id = s.saga_id AND r.state = 'held'))",
    ),
];

/// Audits the sagas, the stock and the money into `report`.
pub async fn audit(
    pool: &PgPool,
    report: &mut ChaosReport,
    published: &HashMap<Uuid, i64>,
    initial_stock: &[(String, i32)],
) -> anyhow::Result<()> {
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
    report.lost = published.keys().filter(|id| !started.contains(id)).count() as i64;
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
    let (ids, amounts): (Vec<Uuid>, Vec<i64>) = published.iter().map(|(k, v)| (*k, *v)).unzip();
    for (name, sql) in EFFECT_CHECKS {
        let mut query = sqlx::query_scalar(sql);
        // PostgreSQL refuses parameters a statement does not use.
        if sql.contains("$1") {
            query = query.bind(&ids).bind(&amounts);
        }
        let n: i64 = query.fetch_one(pool).await?;
        report.bad_effects += n;
        report.effect_violations.insert(name.to_owned(), n);
    }
    Ok(())
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
