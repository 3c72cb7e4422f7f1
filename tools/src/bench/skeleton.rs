//! The skeleton: the product's message and commit pattern with nothing else, as the yardstick
//! the product is measured against in the same invocation, on the same broker and database.
//!
//! ```text
//!  client ─skeleton.req─▶ orchestrator: INSERT saga ─skeleton.cmd.1─▶ worker 1: INSERT effect
//!                                      ◀─skeleton.evt.1─┘
//!         orchestrator: UPDATE saga ─skeleton.cmd.2─▶ worker 2 ... ─skeleton.evt.3─▶
//!         orchestrator: UPDATE saga ─(core NATS, not stored) skeleton.done.<id>─▶ client
//! ```
//!
//! 3 steps, 7 JetStream messages (each publish awaits its ack, with a `Nats-Msg-Id`), 7
//! single-statement PostgreSQL commits with synchronous commit, no logic and no tracing. The
//! orchestrator and the three workers are processes (`checkout-tools bench-skeleton`), pulling
//! with the product's pull loop, concurrency and pool sizes, so the comparison is process for
//! process.

use super::drive::{Outcome, Sagas};
use anyhow::Context as _;
use async_nats::jetstream::{self, AckKind};
use bytes::Bytes;
use checkout_shared::pull::pull_loop;
use checkout_shared::streams::{ConsumerDef, StreamDef};
use clap::{Args, ValueEnum};
use futures::StreamExt;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use uuid::Uuid;

const STREAMS: [(&str, &str); 3] = [
    ("SKELETON_REQUESTS", "skeleton.req"),
    ("SKELETON_COMMANDS", "skeleton.cmd.>"),
    ("SKELETON_EVENTS", "skeleton.evt.>"),
];
const STEPS: u8 = 3;
const REQUESTS: &str = "skeleton-requests";
const EVENTS: &str = "skeleton-events";

fn consumer(durable: &str) -> ConsumerDef {
    let (stream, filter) = match durable {
        REQUESTS => (STREAMS[0].0, "skeleton.req".to_owned()),
        EVENTS => (STREAMS[2].0, "skeleton.evt.>".to_owned()),
        worker => (
            STREAMS[1].0,
            format!(
                "skeleton.cmd.{}",
                worker.trim_start_matches("skeleton-worker-")
            ),
        ),
    };
    // As the product's consumers (nats/jetstream.json).
    ConsumerDef {
        stream: stream.to_owned(),
        durable: durable.to_owned(),
        filter_subject: filter,
        ack_wait_secs: 10,
        max_deliver: -1,
        max_ack_pending: 2048,
        nak_first_ms: 200,
        nak_max_ms: 10_000,
    }
}

/// The durable consumers the skeleton's processes pull from, to wait for before a run.
pub fn durables() -> Vec<String> {
    let mut all = vec![REQUESTS.to_owned(), EVENTS.to_owned()];
    all.extend((1..=STEPS).map(|k| format!("skeleton-worker-{k}")));
    all
}

/// Creates the skeleton's streams (work queues, file storage, as the product's) and tables.
pub async fn provision(js: &jetstream::Context, pool: &PgPool) -> anyhow::Result<()> {
    for (name, subject) in STREAMS {
        let def = StreamDef {
            name: name.to_owned(),
            subjects: vec![subject.to_owned()],
            retention: "workqueue".to_owned(),
            duplicate_window_secs: 120,
            max_age_secs: 0,
            max_messages_per_subject: -1,
            max_messages: -1,
            description: "checkout bench: the skeleton".to_owned(),
        };
        js.create_or_update_stream(def.config(1))
            .await
            .with_context(|| format!("creating stream {name}"))?;
    }
    sqlx::raw_sql(
        "CREATE SCHEMA IF NOT EXISTS skeleton;
         CREATE TABLE IF NOT EXISTS skeleton.sagas (saga_id uuid PRIMARY KEY, step int NOT NULL,
             updated_at timestamptz NOT NULL DEFAULT now());
         CREATE TABLE IF NOT EXISTS skeleton.effects (action_key text PRIMARY KEY,
             at timestamptz NOT NULL DEFAULT now());",
    )
    .execute(pool)
    .await
    .context("creating the skeleton's tables")?;
    Ok(())
}

/// Which skeleton process to be.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Role {
    /// Keeps the saga row; sends commands, receives replies.
    Orchestrator,
    /// Records one effect per command and replies.
    Worker,
}

/// Options of `checkout-tools bench-skeleton` (started by `checkout-tools bench`, not by hand).
#[derive(Debug, Args)]
pub struct RoleArgs {
    /// Which process.
    #[arg(value_enum)]
    role: Role,
    /// The step a worker serves, 1 to 3.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=3))]
    step: u8,
    /// NATS server URL.
    #[arg(long, env = "NATS_URL")]
    nats_url: String,
    /// PostgreSQL URL.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
}

#[derive(Clone)]
struct Node {
    js: jetstream::Context,
    nats: async_nats::Client,
    pool: PgPool,
}

/// Runs one skeleton process until SIGTERM.
pub async fn role(args: RoleArgs) -> anyhow::Result<ExitCode> {
    // The product's defaults: 16 connections and 64 at once per consumer for the
    // orchestrator, 8 and 32 for a worker.
    let (connections, concurrency) = match args.role {
        Role::Orchestrator => (16, 64),
        Role::Worker => (8, 32),
    };
    let pool = PgPoolOptions::new()
        .max_connections(connections)
        .connect(&args.database_url)
        .await?;
    let nats = checkout_shared::connect::connect(&args.nats_url, "skeleton", true).await?;
    let ctx = Node {
        js: checkout_shared::connect::jetstream(nats.clone()),
        nats: nats.clone(),
        pool: pool.clone(),
    };
    let shutdown = checkout_shared::shutdown::on_signals();
    match args.role {
        Role::Orchestrator => {
            let (requests, events) = (consumer(REQUESTS), consumer(EVENTS));
            let on_request = |m| on_request(&ctx, m);
            let on_event = |m| on_event(&ctx, m);
            tokio::join!(
                pull_loop(
                    &ctx.js,
                    &requests,
                    concurrency,
                    shutdown.clone(),
                    on_request
                ),
                pull_loop(&ctx.js, &events, concurrency, shutdown.clone(), on_event),
            );
        }
        Role::Worker => {
            let def = consumer(&format!("skeleton-worker-{}", args.step));
            let step = args.step;
            pull_loop(&ctx.js, &def, concurrency, shutdown, |m| {
                on_command(&ctx, step, m)
            })
            .await;
        }
    }
    let _ = nats.drain().await;
    pool.close().await;
    Ok(ExitCode::SUCCESS)
}

fn saga_id(message: &jetstream::Message) -> Option<Uuid> {
    std::str::from_utf8(&message.payload).ok()?.parse().ok()
}

async fn send(ctx: &Node, subject: String, msg_id: String, id: Uuid) -> anyhow::Result<()> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", msg_id.as_str());
    let ack = ctx
        .js
        .publish_with_headers(subject, headers, Bytes::from(id.to_string()))
        .await?;
    ack.await?;
    Ok(())
}

async fn settle(message: jetstream::Message, result: anyhow::Result<()>) {
    let kind = match result {
        Ok(()) => AckKind::Ack,
        Err(_) => AckKind::Nak(Some(Duration::from_millis(200))),
    };
    let _ = message.ack_with(kind).await;
}

async fn on_request(ctx: &Node, message: jetstream::Message) {
    let result = async {
        let id = saga_id(&message).context("no saga id")?;
        sqlx::query(
            "INSERT INTO skeleton.sagas (saga_id, step) VALUES ($1, 1) ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .execute(&ctx.pool)
        .await?;
        send(ctx, "skeleton.cmd.1".into(), format!("{id}.1"), id).await
    }
    .await;
    settle(message, result).await;
}

async fn on_event(ctx: &Node, message: jetstream::Message) {
    let result = async {
        let id = saga_id(&message).context("no saga id")?;
        let step: u8 = message
            .subject
            .rsplit('.')
            .next()
            .and_then(|s| s.parse().ok())
            .context("no step")?;
        sqlx::query("UPDATE skeleton.sagas SET step = $2, updated_at = now() WHERE saga_id = $1")
            .bind(id)
            .bind(i32::from(step) + 1)
            .execute(&ctx.pool)
            .await?;
        if step < STEPS {
            let next = step + 1;
            send(
                ctx,
                format!("skeleton.cmd.{next}"),
                format!("{id}.{next}"),
                id,
            )
            .await
        } else {
            // The product's lifecycle events are core publishes too.
            ctx.nats
                .publish(format!("skeleton.done.{id}"), Bytes::new())
                .await?;
            Ok(())
        }
    }
    .await;
    settle(message, result).await;
}

async fn on_command(ctx: &Node, step: u8, message: jetstream::Message) {
    let result = async {
        let id = saga_id(&message).context("no saga id")?;
        sqlx::query("INSERT INTO skeleton.effects (action_key) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(format!("{id}.{step}"))
            .execute(&ctx.pool)
            .await?;
        send(
            ctx,
            format!("skeleton.evt.{step}"),
            format!("{id}.{step}.reply"),
            id,
        )
        .await
    }
    .await;
    settle(message, result).await;
}

/// The skeleton's client: publishes a request and waits for its saga's end.
#[derive(Clone)]
pub struct SkeletonSagas {
    js: jetstream::Context,
    waiters: Arc<Mutex<HashMap<Uuid, oneshot::Sender<()>>>>,
    timeout: Duration,
}

impl SkeletonSagas {
    /// Connects and starts listening for ended sagas.
    pub async fn connect(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let nats = checkout_shared::connect::connect(url, "skeleton-client", false).await?;
        let mut done = nats.subscribe("skeleton.done.>").await?;
        let waiters: Arc<Mutex<HashMap<Uuid, oneshot::Sender<()>>>> = Arc::default();
        let routes = waiters.clone();
        tokio::spawn(async move {
            while let Some(message) = done.next().await {
                let Some(id) = message
                    .subject
                    .rsplit('.')
                    .next()
                    .and_then(|s| s.parse().ok())
                else {
                    continue;
                };
                if let Some(waiter) = routes.lock().ok().and_then(|mut r| r.remove(&id)) {
                    let _ = waiter.send(());
                }
            }
        });
        nats.flush().await?;
        Ok(SkeletonSagas {
            js: checkout_shared::connect::jetstream(nats),
            waiters,
            timeout,
        })
    }
}

impl Sagas for SkeletonSagas {
    async fn run(&self, _index: u64) -> Outcome {
        let id = Uuid::new_v4();
        let (tx, rx) = oneshot::channel();
        if let Ok(mut waiters) = self.waiters.lock() {
            waiters.insert(id, tx);
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.to_string().as_str());
        let published = async {
            self.js
                .publish_with_headers("skeleton.req", headers, Bytes::from(id.to_string()))
                .await?
                .await
                .map_err(anyhow::Error::from)
        };
        let ended = match published.await {
            Ok(_) => matches!(tokio::time::timeout(self.timeout, rx).await, Ok(Ok(()))),
            Err(_) => false,
        };
        if let Ok(mut waiters) = self.waiters.lock() {
            waiters.remove(&id);
        }
        if ended {
            Outcome::Completed
        } else {
            Outcome::Failed
        }
    }
}
