//! More instances, no deadlock: three inventory workers on one database, their batches full of
//! carts that share SKUs in every order, never wait on each other in a cycle, so no group
//! statement fails and falls back to one action at a time, and every action is answered.

use crate::support::World;
use checkout_shared::messages::{Command, LineItem, Outcome, RefusalCode};
use checkout_shared::{Phase, Step};
use checkout_workers::inventory::StockSeed;
use sqlx::PgPool;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use uuid::Uuid;

const SKUS: usize = 6;
const STOCK: i32 = 1_000_000;
const SAGAS: usize = 900;

fn sku(i: usize) -> String {
    format!("SKU-{i}")
}

/// Saga `i`'s cart: two or three distinct SKUs of six, in an order that varies from cart to
/// cart (a small linear congruential sequence, so a run is reproducible).
fn cart(i: usize) -> Vec<LineItem> {
    let mut state = (i as u64).wrapping_mul(6_364_136_223_846_793_005);
    let mut next = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize
    };
    let lines = 2 + next() % 2;
    let mut picked: Vec<usize> = Vec::new();
    while picked.len() < lines {
        let s = next() % SKUS;
        if !picked.contains(&s) {
            picked.push(s);
        }
    }
    picked
        .into_iter()
        .map(|s| LineItem {
            sku: sku(s),
            quantity: 1 + (i % 3) as i32,
            unit_price_cents: None,
        })
        .collect()
}

/// PostgreSQL's own counts for the test's database: deadlocks detected, and transactions
/// rolled back (a group statement that fails, for a deadlock or anything else, rolls its
/// transaction back before the batch runs again one action at a time).
async fn deadlocks_and_rollbacks(pool: &PgPool) -> (i64, i64) {
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query_as(
        "SELECT deadlocks, xact_rollback FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_inventory_workers_share_skus_without_deadlock_or_fallback() {
    let world = World::new().await;
    let seeds: Vec<StockSeed> = (0..SKUS)
        .map(|s| StockSeed {
            sku: sku(s),
            quantity: STOCK,
            price_cents: 100,
            currency: "EUR".into(),
        })
        .collect();
    world.migrate(Step::Inventory).await;
    checkout_workers::inventory::seed(&world.pool, &seeds)
        .await
        .unwrap();

    // The whole load is queued before the workers start, so that each pulls full batches at
    // once: every reservation, and the release of every third saga (before or after its
    // reservation, whichever worker gets to it first).
    let sagas: Vec<Uuid> = (0..SAGAS).map(|_| Uuid::new_v4()).collect();
    let mut actions = 0;
    for (i, &saga) in sagas.iter().enumerate() {
        let reserve = Command::ReserveInventory { items: cart(i) };
        assert!(!world.send(saga, reserve, &format!("{saga}.do")).await);
        actions += 1;
        if i % 3 == 0 {
            let release = Command::ReleaseInventory;
            assert!(!world.send(saga, release, &format!("{saga}.undo")).await);
            actions += 1;
        }
    }
    let (deadlocks_before, rollbacks_before) = deadlocks_and_rollbacks(&world.pool).await;

    let workers: Vec<_> = (0..3)
        .map(|_| {
            let mut config = world.config(Step::Inventory);
            config.seed_stock = seeds.clone();
            config.concurrency = 64;
            world.start_with(config)
        })
        .collect();
    let mut replies = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while replies.len() < actions && tokio::time::Instant::now() < deadline {
        replies.extend(world.replies_during(Duration::from_millis(500)).await);
    }
    // Stopped, so that their backends report their last counts as they exit.
    world.stop.cancel();
    for worker in workers {
        tokio::time::timeout(Duration::from_secs(20), worker)
            .await
            .expect("graceful stop")
            .unwrap();
    }
    let waited = tokio::time::Instant::now();
    loop {
        let others: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_one(&world.pool)
        .await
        .unwrap();
        if others == 0 || waited.elapsed() > Duration::from_secs(10) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (deadlocks, rollbacks) = deadlocks_and_rollbacks(&world.pool).await;
    let (deadlocks, rollbacks) = (deadlocks - deadlocks_before, rollbacks - rollbacks_before);

    assert_eq!(deadlocks, 0, "deadlocks between the workers' batches");
    assert_eq!(
        rollbacks, 0,
        "statements that failed (each group statement that failed fell back to one action \
         at a time)"
    );
    // Every action answered exactly once.
    let answered: BTreeMap<(Uuid, Phase), usize> =
        replies.iter().fold(BTreeMap::new(), |mut seen, reply| {
            *seen.entry((reply.saga_id, reply.phase)).or_default() += 1;
            seen
        });
    assert_eq!(replies.len(), actions, "one reply per action");
    assert_eq!(answered.len(), actions, "every action answered once");
    // Nothing refused but a reservation whose release came first.
    let released: BTreeSet<Uuid> = sagas.iter().copied().step_by(3).collect();
    for reply in &replies {
        match &reply.outcome {
            Outcome::StepSucceeded { .. } => {}
            Outcome::StepFailed { reason } => {
                assert_eq!(reason.code, RefusalCode::CancelledBeforeDone, "{reply:?}");
                assert!(released.contains(&reply.saga_id), "{reply:?}");
            }
        }
    }
    // The stock is what the held reservations say.
    let held: Vec<(String, i64)> = sqlx::query_as(
        "SELECT l.sku, sum(l.quantity)::bigint FROM inventory.reservations r \
         CROSS JOIN LATERAL jsonb_to_recordset(r.items) AS l(sku text, quantity integer) \
         WHERE r.state = 'held' GROUP BY l.sku",
    )
    .fetch_all(&world.pool)
    .await
    .unwrap();
    let held: BTreeMap<String, i64> = held.into_iter().collect();
    for (sku, available) in checkout_workers::inventory::stock(&world.pool)
        .await
        .unwrap()
    {
        if sku == "SKU-A" {
            continue; // the other tests' SKU, seeded by `World::migrate`
        }
        let taken = held.get(&sku).copied().unwrap_or(0);
        assert_eq!(i64::from(available), i64::from(STOCK) - taken, "{sku}");
    }
    world.finish(vec![]).await;
}
