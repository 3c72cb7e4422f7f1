//! A private nats-server and database per test, workers started in-process, and ways to read
//! what they did: replies, processed-message rows, JetStream giving a command up.

use async_nats::jetstream::{self, consumer::PullConsumer};
use bytes::Bytes;
use checkout_harness::{NatsServer, TestDb};
use checkout_shared::envelope::Envelope;
use checkout_shared::messages::{Command, CommandMessage, LineItem, Reply};
use checkout_shared::streams::{ConsumerDef, Topology};
use checkout_shared::telemetry::SpanFlusher;
use checkout_shared::{Phase, Step, subjects};
use checkout_workers::{Faults, WorkerConfig};
use futures::StreamExt;
use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub struct World {
    pub nats: NatsServer,
    pub db: TestDb,
    pub pool: PgPool,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub stop: CancellationToken,
}

impl World {
    pub async fn new() -> World {
        let nats = NatsServer::start_async().await.expect("nats");
        let db = TestDb::create().await.expect("db");
        let pool = PgPool::connect(&db.url()).await.expect("pool");
        let client = nats.admin_client().await.expect("connect");
        let js = jetstream::new(client.clone());
        checkout_shared::streams::provision(&js, 1)
            .await
            .expect("provision");
        World {
            nats,
            db,
            pool,
            client,
            js,
            stop: CancellationToken::new(),
        }
    }

    pub fn config(&self, kind: Step) -> WorkerConfig {
        WorkerConfig {
            kind,
            // In process, the worker shares the test process's (anonymous, provisioning)
            // access: it logs in with the URL's administrator credentials.
            nats_url: self.nats.admin_url(),
            database_url: self.db.url(),
            concurrency: 4,
            max_connections: 4,
            replicas: 1,
            faults: Faults::default(),
            seed_stock: vec![sku_a()],
            consumer: None,
            retention: checkout_shared::retention::Retention::default(),
        }
    }

    pub fn start(&self, kind: Step) -> tokio::task::JoinHandle<()> {
        self.start_with(self.config(kind))
    }

    pub fn start_with(&self, config: WorkerConfig) -> tokio::task::JoinHandle<()> {
        let stop = self.stop.clone();
        tokio::spawn(async move {
            checkout_workers::run(config, SpanFlusher::disabled(), stop)
                .await
                .expect("worker");
        })
    }

    pub async fn migrate(&self, kind: Step) {
        checkout_workers::migrate(&self.pool, kind)
            .await
            .expect("migrate");
        checkout_workers::inventory::seed(&self.pool, &[sku_a()])
            .await
            .ok();
    }

    /// Publishes a command; returns whether JetStream called it a duplicate.
    pub async fn send(&self, saga_id: Uuid, command: Command, msg_id: &str) -> bool {
        self.send_raw(
            saga_id,
            command.step_phase(),
            msg_id,
            &CommandMessage { saga_id, command },
        )
        .await
    }

    /// Publishes any body under a command's envelope; returns whether it was a duplicate.
    pub async fn send_raw(
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

    pub async fn consumer(&self, durable: &str) -> PullConsumer {
        let topology = Topology::load().unwrap();
        checkout_shared::streams::bind_consumer(&self.js, topology.consumer(durable).unwrap())
            .await
            .unwrap()
    }

    /// The first `expected` replies (acked so they are read once), or fewer after 15 s.
    /// To show that no reply came, use [`World::replies_during`]: this returns as soon as
    /// `expected` are in.
    pub async fn replies(&self, expected: usize) -> Vec<Reply> {
        assert!(expected > 0, "use replies_during to show that nothing came");
        self.read_replies(Some(expected), Duration::from_secs(15))
            .await
    }

    /// Every reply published before or during the next `window` (acked).
    pub async fn replies_during(&self, window: Duration) -> Vec<Reply> {
        self.read_replies(None, window).await
    }

    async fn read_replies(&self, enough: Option<usize>, window: Duration) -> Vec<Reply> {
        let consumer = self
            .consumer(checkout_shared::streams::EVENTS_CONSUMER)
            .await;
        let mut replies = Vec::new();
        let deadline = tokio::time::Instant::now() + window;
        while enough.is_none_or(|n| replies.len() < n) && tokio::time::Instant::now() < deadline {
            let mut batch = consumer
                .fetch()
                .max_messages(10)
                .expires(Duration::from_millis(300))
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

    /// Whether a processed-message row (a stored decision) exists for `key` in `schema`.
    pub async fn processed(&self, schema: &str, key: &str) -> bool {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT EXISTS (SELECT 1 FROM {schema}.processed_messages WHERE action_key = $1)"
        )))
        .bind(key)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    /// Runs a statement of the test's own (breaking or restoring a table).
    pub async fn execute(&self, sql: &str) {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&self.pool)
            .await
            .unwrap();
    }

    pub async fn stock(&self) -> i32 {
        sqlx::query_scalar("SELECT available FROM inventory.stock WHERE sku = 'SKU-A'")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    pub async fn finish(self, workers: Vec<tokio::task::JoinHandle<()>>) {
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

/// `kind`'s command consumer with a delivery budget of a fraction of a second (three
/// deliveries, nak delays 100 then 200 ms), so a test can outlast it quickly.
pub fn short_budget(kind: Step) -> ConsumerDef {
    let mut def = Topology::load()
        .unwrap()
        .consumer(kind.as_str())
        .unwrap()
        .clone();
    def.max_deliver = 3;
    def.nak_first_ms = 100;
    def.nak_max_ms = 200;
    def
}

/// JetStream's announcements that `consumer` gave a message up (its max-deliveries advisory).
pub async fn given_up(world: &World, consumer: &str) -> async_nats::Subscriber {
    let subscriber = world
        .client
        .subscribe(format!(
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.CHECKOUT_COMMANDS.{consumer}"
        ))
        .await
        .unwrap();
    // The server must know of the subscription before the advisory can be sent.
    world.client.flush().await.unwrap();
    subscriber
}

/// Waits for the next advisory and returns how many deliveries the message had.
pub async fn wait_given_up(advisories: &mut async_nats::Subscriber) -> u64 {
    let advisory = tokio::time::timeout(Duration::from_secs(30), advisories.next())
        .await
        .expect("JetStream gives the command up within 30 s")
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&advisory.payload).unwrap();
    body["deliveries"].as_u64().unwrap()
}

pub fn reserve(quantity: i32) -> Command {
    Command::ReserveInventory {
        items: vec![LineItem {
            sku: "SKU-A".into(),
            quantity,
            unit_price_cents: None,
        }],
    }
}

/// The one SKU the tests use: 10 units at 1.00 EUR.
pub fn sku_a() -> checkout_workers::inventory::StockSeed {
    checkout_workers::inventory::StockSeed {
        sku: "SKU-A".into(),
        quantity: 10,
        price_cents: 100,
        currency: "EUR".into(),
    }
}
