//! The chaos runner's database audit (`chaos::audit`) against real PostgreSQL: on the rows that
//! sagas which ended well leave, it reports nothing; with one violation planted among them, it
//! reports exactly the checks that violation breaks.

use checkout_harness::TestDb;
use checkout_shared::{SagaStatus, Step};
use checkout_tools::chaos::audit;
use checkout_tools::chaos::report::ChaosReport;
use sqlx::PgPool;
use std::collections::{BTreeSet, HashMap};
use uuid::Uuid;

const SKU: &str = "SKU-MUG";
const STOCK: i32 = 100;
const QUANTITY: i32 = 2;
const AMOUNT: i64 = 1_500;

// The per-saga effect checks, by the names the report gives them.
const MONEY_TAKEN: &str = "compensated, failed or stuck saga with money taken";
const STOCK_HELD: &str = "compensated, failed or stuck saga with stock held";
const ORDER_LEFT: &str = "compensated, failed or stuck saga with an order left";
const MISCHARGED: &str = "completed saga charged other than its amount";
const UNFULFILLED: &str = "completed saga without its order or stock";
// The other checks.
const LOST: &str = "lost";
const UNFINISHED: &str = "unfinished";
const STUCK: &str = "stuck";
const STOCK_CONSERVED: &str = "stock conservation";
const MONEY_CONSERVED: &str = "money conservation";

/// The sagas' rows in a fresh database with the real schemas, what the runner published, and
/// the stock it saw first.
struct World {
    db: TestDb,
    pool: PgPool,
    published: HashMap<Uuid, i64>,
    initial_stock: Vec<(String, i32)>,
    /// Completed: stock held, charged its amount, order created.
    completed: Uuid,
    /// Compensated after its order was refused: stock released, charge refunded, no order.
    compensated: Uuid,
}

impl World {
    /// Three sagas that ended well: one completed, one compensated, one refused at its first
    /// step (failed, nothing to undo).
    async fn new() -> World {
        let db = TestDb::create().await.unwrap();
        let pool = PgPool::connect(&db.url()).await.unwrap();
        checkout_orchestrator::store::migrate(&pool).await.unwrap();
        for &step in Step::ALL {
            checkout_workers::migrate(&pool, step).await.unwrap();
        }
        sqlx::query("INSERT INTO inventory.stock (sku, available) VALUES ($1, $2)")
            .bind(SKU)
            .bind(STOCK)
            .execute(&pool)
            .await
            .unwrap();
        let initial_stock = checkout_workers::inventory::stock(&pool).await.unwrap();
        let mut world = World {
            db,
            pool,
            published: HashMap::new(),
            initial_stock,
            completed: Uuid::new_v4(),
            compensated: Uuid::new_v4(),
        };
        let completed = world.completed;
        world.saga(completed, SagaStatus::Completed).await;
        world.reserve(completed, "held").await;
        world.ledger(completed, "charge", AMOUNT).await;
        world.order(completed, "created", AMOUNT).await;
        let compensated = world.compensated;
        world.saga(compensated, SagaStatus::Compensated).await;
        world.reserve(compensated, "released").await;
        world.ledger(compensated, "charge", AMOUNT).await;
        world.ledger(compensated, "refund", AMOUNT).await;
        world.saga(Uuid::new_v4(), SagaStatus::Failed).await;
        world
    }

    /// A published checkout's saga row, as the orchestrator writes it.
    async fn saga(&mut self, id: Uuid, status: SagaStatus) {
        self.published.insert(id, AMOUNT);
        sqlx::query(
            "INSERT INTO saga.sagas (saga_id, status, state, version, trace_id, saga_span_id, \
             sampled, step_span_id, step_started_at, started_at, updated_at) \
             VALUES ($1, $2, '{}', 1, 't', 's', true, 's', now(), now(), now())",
        )
        .bind(id)
        .bind(status.as_str())
        .execute(&self.pool)
        .await
        .unwrap();
    }

    /// The saga's reservation in `state`; a held one has taken its stock.
    async fn reserve(&self, id: Uuid, state: &str) {
        let items = serde_json::json!([{ "sku": SKU, "quantity": QUANTITY }]);
        sqlx::query(
            "INSERT INTO inventory.reservations (saga_id, reservation_id, items, state) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(Uuid::new_v4())
        .bind(items)
        .bind(state)
        .execute(&self.pool)
        .await
        .unwrap();
        if state == "held" {
            self.take_stock(QUANTITY).await;
        }
    }

    async fn take_stock(&self, quantity: i32) {
        sqlx::query("UPDATE inventory.stock SET available = available - $2 WHERE sku = $1")
            .bind(SKU)
            .bind(quantity)
            .execute(&self.pool)
            .await
            .unwrap();
    }

    async fn ledger(&self, id: Uuid, kind: &str, amount: i64) {
        sqlx::query(
            "INSERT INTO payment.ledger (saga_id, kind, entry_id, customer_id, amount_cents) \
             VALUES ($1, $2, $3, 'c', $4)",
        )
        .bind(id)
        .bind(kind)
        .bind(Uuid::new_v4())
        .bind(amount)
        .execute(&self.pool)
        .await
        .unwrap();
    }

    async fn order(&self, id: Uuid, status: &str, amount: i64) {
        sqlx::query(
            "INSERT INTO orders.orders (saga_id, order_id, customer_id, items, amount_cents, \
             status) VALUES ($1, $2, 'c', '[]', $3, $4)",
        )
        .bind(id)
        .bind(Uuid::new_v4())
        .bind(amount)
        .bind(status)
        .execute(&self.pool)
        .await
        .unwrap();
    }

    async fn sql(&self, sql: &'static str, id: Uuid) {
        sqlx::query(sql).bind(id).execute(&self.pool).await.unwrap();
    }

    /// Runs the audit, then drops the database.
    async fn audit(self) -> ChaosReport {
        let mut report = ChaosReport::default();
        audit::audit(
            &self.pool,
            &mut report,
            &self.published,
            &self.initial_stock,
        )
        .await
        .unwrap();
        self.pool.close().await;
        self.db.drop_db().await.unwrap();
        report
    }
}

/// The checks the report says failed.
fn fired(report: &ChaosReport) -> BTreeSet<&str> {
    let mut fired: BTreeSet<&str> = report
        .effect_violations
        .iter()
        .filter(|(_, n)| **n != 0)
        .map(|(name, _)| name.as_str())
        .collect();
    for (check, failed) in [
        (LOST, report.lost != 0),
        (UNFINISHED, report.unfinished != 0),
        (STUCK, report.stuck != 0),
        (STOCK_CONSERVED, !report.stock_ok),
        (MONEY_CONSERVED, !report.money_ok),
    ] {
        if failed {
            fired.insert(check);
        }
    }
    // The verdict agrees with the checks.
    assert_eq!(report.holds(), fired.is_empty(), "{report:#?}");
    fired
}

fn set<'a>(checks: &[&'a str]) -> BTreeSet<&'a str> {
    checks.iter().copied().collect()
}

/// The statuses of sagas that did not complete and must have undone their effects, with the
/// checks such a saga fires by its status alone.
const NOT_COMPLETED: [(SagaStatus, &[&str]); 3] = [
    (SagaStatus::Compensated, &[]),
    (SagaStatus::Failed, &[]),
    (SagaStatus::Stuck, &[STUCK]),
];

#[tokio::test]
async fn sagas_that_ended_well_pass_the_audit() {
    let report = World::new().await.audit().await;
    assert_eq!(fired(&report), set(&[]), "{report:#?}");
    assert_eq!(
        (
            report.sagas,
            report.completed,
            report.compensated,
            report.failed
        ),
        (3, 1, 1, 1)
    );
    assert_eq!(report.effect_violations.len(), 5, "every effect check ran");
}

#[tokio::test]
async fn a_published_checkout_without_a_saga_is_lost() {
    let mut world = World::new().await;
    world.published.insert(Uuid::new_v4(), AMOUNT);
    let report = world.audit().await;
    assert_eq!(fired(&report), set(&[LOST]));
    assert_eq!(report.lost, 1);
}

#[tokio::test]
async fn a_saga_left_unended_is_reported() {
    for (status, check) in [
        (SagaStatus::Running, UNFINISHED),
        (SagaStatus::Compensating, UNFINISHED),
        (SagaStatus::Stuck, STUCK),
    ] {
        let mut world = World::new().await;
        world.saga(Uuid::new_v4(), status).await;
        let report = world.audit().await;
        assert_eq!(fired(&report), set(&[check]), "{status}");
        assert_eq!(report.sagas, 4, "{status}");
    }
}

#[tokio::test]
async fn a_duplicate_charge_is_reported() {
    // The ledger's key allows one charge per saga; the audit must not rely on it.
    const TWO_CHARGES: &str = "ALTER TABLE payment.ledger DROP CONSTRAINT ledger_pkey";
    let world = World::new().await;
    sqlx::raw_sql(TWO_CHARGES)
        .execute(&world.pool)
        .await
        .unwrap();
    world.ledger(world.completed, "charge", AMOUNT).await;
    assert_eq!(
        fired(&world.audit().await),
        set(&[MISCHARGED, MONEY_CONSERVED])
    );

    let world = World::new().await;
    sqlx::raw_sql(TWO_CHARGES)
        .execute(&world.pool)
        .await
        .unwrap();
    world.ledger(world.compensated, "charge", AMOUNT).await;
    assert_eq!(
        fired(&world.audit().await),
        set(&[MONEY_TAKEN, MONEY_CONSERVED])
    );
}

#[tokio::test]
async fn a_saga_that_did_not_complete_and_kept_the_money_is_reported() {
    for (status, by_status) in NOT_COMPLETED {
        let mut world = World::new().await;
        let id = Uuid::new_v4();
        world.saga(id, status).await;
        world.ledger(id, "charge", AMOUNT).await;
        // Refunded in part only.
        world.ledger(id, "refund", AMOUNT - 1).await;
        let mut expected = set(&[MONEY_TAKEN, MONEY_CONSERVED]);
        expected.extend(by_status);
        assert_eq!(fired(&world.audit().await), expected, "{status}");
    }
}

#[tokio::test]
async fn a_saga_that_did_not_complete_and_held_stock_is_reported() {
    for (status, by_status) in NOT_COMPLETED {
        let mut world = World::new().await;
        let id = Uuid::new_v4();
        world.saga(id, status).await;
        world.reserve(id, "held").await;
        let mut expected = set(&[STOCK_HELD]);
        expected.extend(by_status);
        assert_eq!(fired(&world.audit().await), expected, "{status}");
    }
}

#[tokio::test]
async fn a_saga_that_did_not_complete_and_left_an_order_is_reported() {
    for (status, by_status) in NOT_COMPLETED {
        let mut world = World::new().await;
        let id = Uuid::new_v4();
        world.saga(id, status).await;
        // Its payment undone, its order not: the order's amount is money no one paid.
        world.order(id, "created", AMOUNT).await;
        let mut expected = set(&[ORDER_LEFT, MONEY_CONSERVED]);
        expected.extend(by_status);
        assert_eq!(fired(&world.audit().await), expected, "{status}");
    }
}

#[tokio::test]
async fn a_completed_saga_charged_other_than_its_amount_is_reported() {
    // Charged as much as its order says, but not what the checkout published.
    let mut world = World::new().await;
    let id = Uuid::new_v4();
    world.saga(id, SagaStatus::Completed).await;
    world.reserve(id, "held").await;
    world.ledger(id, "charge", AMOUNT + 1).await;
    world.order(id, "created", AMOUNT + 1).await;
    assert_eq!(fired(&world.audit().await), set(&[MISCHARGED]));

    // Not charged at all.
    let world = World::new().await;
    let sql = "DELETE FROM payment.ledger WHERE saga_id = $1";
    world.sql(sql, world.completed).await;
    assert_eq!(
        fired(&world.audit().await),
        set(&[MISCHARGED, MONEY_CONSERVED])
    );
}

#[tokio::test]
async fn a_completed_saga_without_its_order_or_its_stock_is_reported() {
    let world = World::new().await;
    let sql = "UPDATE orders.orders SET status = 'cancelled' WHERE saga_id = $1";
    world.sql(sql, world.completed).await;
    assert_eq!(
        fired(&world.audit().await),
        set(&[UNFULFILLED, MONEY_CONSERVED])
    );

    // Its stock released (and given back: the stock still adds up).
    let world = World::new().await;
    let sql = "UPDATE inventory.reservations SET state = 'released' WHERE saga_id = $1";
    world.sql(sql, world.completed).await;
    world.take_stock(-QUANTITY).await;
    assert_eq!(fired(&world.audit().await), set(&[UNFULFILLED]));
}

#[tokio::test]
async fn stock_that_does_not_add_up_is_reported() {
    for (change, what) in [(1, "vanished"), (-1, "appeared")] {
        let world = World::new().await;
        world.take_stock(change).await;
        assert_eq!(
            fired(&world.audit().await),
            set(&[STOCK_CONSERVED]),
            "{what}"
        );
    }
}

#[tokio::test]
async fn money_that_does_not_add_up_is_reported() {
    // A charge that no saga made.
    let world = World::new().await;
    world.ledger(Uuid::new_v4(), "charge", AMOUNT).await;
    assert_eq!(fired(&world.audit().await), set(&[MONEY_CONSERVED]));

    // A completed order for other than its charge.
    let world = World::new().await;
    let sql = "UPDATE orders.orders SET amount_cents = amount_cents + 1 WHERE saga_id = $1";
    world.sql(sql, world.completed).await;
    assert_eq!(fired(&world.audit().await), set(&[MONEY_CONSERVED]));
}
