//! The workers against a real nats-server and PostgreSQL: duplicates, redeliveries, a
//! worker that died between its commit and its ack, and undecodable commands.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use bytes::Bytes;
use checkout_harness::{NatsServer, TestDb};
use checkout_shared::envelope::{Envelope, REASON};
use checkout_shared::messages::{Command, CommandMessage, LineItem, Outcome, Reply};
use checkout_shared::telemetry::SpanFlusher;
use checkout_shared::{Phase, Step, subjects};
use checkout_workers::{Faults, WorkerConfig, handler};
use futures::StreamExt;
use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

struct World {
    nats: NatsServer,
    db: TestDb,
    pool: PgPool,
    js: jetstream::Context,
    stop: CancellationToken,
}

impl World {
    async fn new() -> World {
        let nats = NatsServer::start_async().await.expect("nats");
        let db = TestDb::create().await.expect("db");
        let pool = PgPool::connect(&db.url()).await.expect("pool");
        let js = jetstream::new(async_nats::connect(nats.url()).await.expect("connect"));
        checkout_shared::streams::provision(&js, 1)
            .await
            .expect("provision");
        World {
            nats,
            db,
            pool,
            js,
            stop: CancellationToken::new(),
        }
    }

    fn config(&self, kind: Step) -> WorkerConfig {
        WorkerConfig {
            kind,
            nats_url: self.nats.url(),
            database_url: self.db.url(),
            concurrency: 4,
            max_connections: 4,
            replicas: 1,
            faults: Faults::default(),
            seed_stock: vec![sku_a()],
        }
    }

    fn start(&self, kind: Step) -> tokio::task::JoinHandle<()> {
        let config = self.config(kind);
        let stop = self.stop.clone();
        tokio::spawn(async move {
            checkout_workers::run(config, SpanFlusher::disabled(), stop)
                .await
                .expect("worker");
        })
    }

    async fn migrate(&self, kind: Step) {
        checkout_workers::migrate(&self.pool, kind)
            .await
            .expect("migrate");
        checkout_workers::inventory::seed(&self.pool, &[sku_a()])
            .await
            .ok();
    }

    async fn send(&self, saga_id: Uuid, command: Command, msg_id: &str) -> bool {
        self.send_raw(
            saga_id,
            command.step_phase(),
            msg_id,
            &CommandMessage { saga_id, command },
        )
        .await
    }

    /// Publishes a command; returns whether JetStream called it a duplicate.
    async fn send_raw(
        &self,
        saga_id: Uuid,
        (step, phase): (Step, Phase),
        msg_id: &str,
        body: &impl serde::Serialize,
    ) -> bool {
        let envelope = Envelope::command(saga_id, step, phase);
        let mut headers = async_nats::HeaderMap::new();
        envelope.write(&mut headers, msg_id);
        let payload = Bytes::from(serde_json::to_vec(body).unwrap());
        let ack = self
            .js
            .publish_with_headers(subjects::command(step, phase), headers, payload)
            .await
            .unwrap();
        ack.await.unwrap().duplicate
    }

    async fn consumer(&self, durable: &str) -> PullConsumer {
        let topology = checkout_shared::streams::Topology::load().unwrap();
        checkout_shared::streams::bind_consumer(&self.js, topology.consumer(durable).unwrap())
            .await
            .unwrap()
    }

    /// Replies published so far (acks them so they are read once).
    async fn replies(&self, expected: usize) -> Vec<Reply> {
        let consumer = self
            .consumer(checkout_shared::streams::EVENTS_CONSUMER)
            .await;
        let mut replies = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while replies.len() < expected && tokio::time::Instant::now() < deadline {
            let mut batch = consumer
                .fetch()
                .max_messages(10)
                .expires(Duration::from_millis(500))
                .messages()
                .await
                .unwrap();
            while let Some(Ok(message)) = batch.next().await {
                replies.push(serde_json::from_slice(&message.payload).unwrap());
                message.ack().await.unwrap();
            }
        }
        replies
    }

    async fn stock(&self) -> i32 {
        sqlx::query_scalar("SELECT available FROM inventory.stock WHERE sku = 'SKU-A'")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    async fn finish(self, workers: Vec<tokio::task::JoinHandle<()>>) {
        self.stop.cancel();
        for worker in workers {
            tokio::time::timeout(Duration::from_secs(20), worker)
                .await
                .expect("graceful stop")
                .unwrap();
        }
        self.pool.close().await;
        self.db.drop_db().await.unwrap();
    }
}

fn reserve(quantity: i32) -> Command {
    Command::ReserveInventory {
        items: vec![LineItem {
            sku: "SKU-A".into(),
            quantity,
            unit_price_cents: None,
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_command_twice_has_one_effect_and_the_same_reply() {
    let world = World::new().await;
    let saga = Uuid::new_v4();
    let key = format!("{saga}.inventory.do");
    assert!(!world.send(saga, reserve(3), &key).await);
    assert!(
        world.send(saga, reserve(3), &key).await,
        "JetStream drops a republish with the same id"
    );
    let worker = world.start(Step::Inventory);
    let first = world.replies(1).await;
    // A duplicate that outlived the window (a new message id, the same action).
    assert!(!world.send(saga, reserve(3), &format!("{key}.late")).await);
    let second = world.replies(1).await;
    assert_eq!(first.len(), 1);
    assert_eq!(second, first, "the stored reply is re-sent");
    assert!(matches!(
        first[0].outcome,
        Outcome::StepSucceeded { reference: Some(_) }
    ));
    assert_eq!(world.stock().await, 7, "reserved once");
    world.finish(vec![worker]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_redelivered_after_a_nak_has_one_effect() {
    let world = World::new().await;
    world.migrate(Step::Inventory).await;
    let saga = Uuid::new_v4();
    world
        .send(saga, reserve(2), &format!("{saga}.inventory.do"))
        .await;
    let consumer = world.consumer("inventory").await;
    let mut batch = consumer.fetch().max_messages(1).messages().await.unwrap();
    let message = batch.next().await.unwrap().unwrap();
    message.ack_with(AckKind::Nak(None)).await.unwrap();
    let worker = world.start(Step::Inventory);
    let replies = world.replies(1).await;
    assert_eq!(replies.len(), 1);
    assert_eq!(world.stock().await, 8);
    world.finish(vec![worker]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_after_its_commit_and_before_its_ack_does_not_repeat_the_effect() {
    let world = World::new().await;
    world.migrate(Step::Inventory).await;
    let saga = Uuid::new_v4();
    world
        .send(saga, reserve(4), &format!("{saga}.inventory.do"))
        .await;
    // What a worker does before it dies: take the message, commit the effect, never ack.
    let consumer = world.consumer("inventory").await;
    let mut batch = consumer.fetch().max_messages(1).messages().await.unwrap();
    let message = batch.next().await.unwrap().unwrap();
    let envelope = Envelope::read(message.headers.as_ref()).unwrap();
    let body: CommandMessage = serde_json::from_slice(&message.payload).unwrap();
    let handler = handler::Handler::new(Step::Inventory, Faults::default());
    let committed = handler::apply_once(&world.pool, &handler, &envelope, &body.command)
        .await
        .unwrap();
    assert_eq!(world.stock().await, 6);
    // The broker redelivers it (a nak stands in for the ack_wait running out).
    message.ack_with(AckKind::Nak(None)).await.unwrap();
    let worker = world.start(Step::Inventory);
    let replies = world.replies(1).await;
    assert_eq!(
        replies,
        vec![committed],
        "the redelivery re-sends the committed reply"
    );
    assert_eq!(world.stock().await, 6, "and does not reserve again");
    world.finish(vec![worker]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_command_is_dead_lettered_with_its_reason_and_the_saga_told() {
    let world = World::new().await;
    let saga = Uuid::new_v4();
    let garbage =
        serde_json::json!({"saga_id": saga, "type": "charge_payment", "amount_cents": "lots"});
    world
        .send_raw(
            saga,
            (Step::Payment, Phase::Do),
            &format!("{saga}.payment.do"),
            &garbage,
        )
        .await;
    let worker = world.start(Step::Payment);
    let replies = world.replies(1).await;
    assert_eq!(
        replies.len(),
        1,
        "the saga hears of it, rather than hanging"
    );
    match &replies[0].outcome {
        Outcome::StepFailed { reason } => assert!(reason.contains("undeliverable"), "{reason}"),
        other => panic!("expected a failure, got {other:?}"),
    }
    let dlq = world.js.get_stream("CHECKOUT_DLQ").await.unwrap();
    let letter = dlq
        .get_last_raw_message_by_subject(&subjects::dead_letter("checkout.cmd.payment.charge"))
        .await
        .unwrap();
    let reason = letter
        .headers
        .get(REASON)
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default();
    assert!(reason.contains("malformed body"), "{reason}");
    let pending = world
        .js
        .get_stream("CHECKOUT_COMMANDS")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages;
    assert_eq!(pending, 0, "terminated, not looping");
    let charges: i64 = sqlx::query_scalar("SELECT count(*) FROM payment.ledger")
        .fetch_one(&world.pool)
        .await
        .unwrap();
    assert_eq!(charges, 0);
    world.finish(vec![worker]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undo_that_fails_transiently_is_retried_until_it_succeeds_once() {
    let world = World::new().await;
    world.migrate(Step::Inventory).await;
    let worker = world.start(Step::Inventory);
    let saga = Uuid::new_v4();
    world
        .send(saga, reserve(5), &format!("{saga}.inventory.do"))
        .await;
    assert_eq!(world.replies(1).await.len(), 1);
    assert_eq!(world.stock().await, 5);
    // The database fails the release: the table it needs is briefly gone.
    sqlx::query("ALTER TABLE inventory.stock RENAME TO stock_away")
        .execute(&world.pool)
        .await
        .unwrap();
    world
        .send(
            saga,
            Command::ReleaseInventory,
            &format!("{saga}.inventory.undo"),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let during = world.replies(0).await;
    assert!(
        during.is_empty(),
        "no reply while the undo cannot be done: {during:?}"
    );
    sqlx::query("ALTER TABLE inventory.stock_away RENAME TO stock")
        .execute(&world.pool)
        .await
        .unwrap();
    let replies = world.replies(1).await;
    assert_eq!(replies.len(), 1);
    assert!(matches!(replies[0].outcome, Outcome::StepSucceeded { .. }));
    assert_eq!(world.stock().await, 10, "released exactly once");
    world.finish(vec![worker]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_racing_its_refund_never_leaves_money_taken() {
    let world = World::new().await;
    world.migrate(Step::Payment).await;
    let handler = handler::Handler::new(Step::Payment, Faults::default());
    let sagas: Vec<Uuid> = (0..40).map(|_| Uuid::new_v4()).collect();
    let mut races = Vec::new();
    for saga in &sagas {
        let charge = Command::ChargePayment {
            customer_id: "c".into(),
            payment_token: "tok_visa".into(),
            amount_cents: 500,
        };
        for command in [charge, Command::RefundPayment] {
            let (pool, handler, saga) = (world.pool.clone(), handler.clone(), *saga);
            races.push(tokio::spawn(async move {
                let (step, phase) = command.step_phase();
                let envelope = Envelope::command(saga, step, phase);
                handler::apply_once(&pool, &handler, &envelope, &command)
                    .await
                    .unwrap()
            }));
        }
    }
    for race in races {
        race.await.unwrap();
    }
    for saga in sagas {
        let net: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum(CASE kind WHEN 'charge' THEN amount_cents ELSE -amount_cents END), 0)::bigint \
             FROM payment.ledger WHERE saga_id = $1",
        )
        .bind(saga)
        .fetch_one(&world.pool)
        .await
        .unwrap();
        assert_eq!(
            net, 0,
            "saga {saga}: a refund raced its charge and money stayed taken"
        );
    }
    world.finish(vec![]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_survives_its_database_connections_being_dropped() {
    let world = World::new().await;
    let worker = world.start(Step::Inventory);
    let first = Uuid::new_v4();
    world
        .send(first, reserve(1), &format!("{first}.inventory.do"))
        .await;
    assert_eq!(world.replies(1).await.len(), 1);
    // Every connection of the worker's pool is cut, as a database restart would.
    let cut: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()) t",
    )
    .fetch_one(&world.pool)
    .await
    .unwrap();
    assert!(cut > 0, "the worker held connections");
    let second = Uuid::new_v4();
    world
        .send(second, reserve(2), &format!("{second}.inventory.do"))
        .await;
    let replies = world.replies(1).await;
    assert_eq!(replies.len(), 1, "the worker reconnects and goes on");
    assert!(matches!(replies[0].outcome, Outcome::StepSucceeded { .. }));
    assert_eq!(world.stock().await, 7);
    world.finish(vec![worker]).await;
}

fn sku_a() -> checkout_workers::inventory::StockSeed {
    checkout_workers::inventory::StockSeed {
        sku: "SKU-A".into(),
        quantity: 10,
        price_cents: 100,
        currency: "EUR".into(),
    }
}
