//! The orchestrator against a real nats-server and PostgreSQL: recovery re-sends what a
//! recorded transition implied but a crash kept from being sent; deadlines re-send and then
//! compensate; an undo without reply is re-sent until it succeeds, flagged stuck on the way,
//! and an operator can make it try now; a completed saga's confirmation is re-sent by its
//! deadline within its bound, then given up, and the checkout stands.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use async_nats::jetstream;
use checkout_harness::{NatsServer, TestDb};
use checkout_orchestrator::executor::{Executor, Timing};
use checkout_orchestrator::machine::{Input, Status};
use checkout_orchestrator::saga::SagaData;
use checkout_orchestrator::store;
use checkout_orchestrator::{OrchestratorConfig, store::migrate};
use checkout_shared::envelope::MSG_ID;
use checkout_shared::messages::{CheckoutRequested, LineItem, Outcome};
use checkout_shared::telemetry::SpanFlusher;
use checkout_shared::{Phase, Step};
use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const FAST: Timing = Timing {
    step_timeout: Duration::from_millis(300),
    max_step_timeout: Duration::from_millis(600),
    max_attempts: 3,
    stuck_after: Duration::from_millis(1_500),
};

fn data() -> SagaData {
    SagaData::new(CheckoutRequested {
        checkout_id: Uuid::new_v4(),
        customer_id: "c".into(),
        items: vec![LineItem {
            sku: "SKU-A".into(),
            quantity: 1,
            unit_price_cents: None,
        }],
        payment_token: "tok".into(),
        amount_cents: 10,
        currency: "EUR".into(),
    })
}

/// Deadlines far enough away that only recovery can send.
const SLOW: Timing = Timing {
    step_timeout: Duration::from_secs(3_600),
    max_step_timeout: Duration::from_secs(3_600),
    max_attempts: 3,
    stuck_after: Duration::from_secs(3_600),
};

fn config(nats: &NatsServer, db: &TestDb) -> OrchestratorConfig {
    OrchestratorConfig {
        nats_url: nats.url(),
        database_url: db.url(),
        concurrency: 4,
        max_connections: 4,
        replicas: 1,
        timing: FAST,
    }
}

async fn setup() -> (NatsServer, TestDb, PgPool, jetstream::Context) {
    let nats = NatsServer::start_async().await.unwrap();
    let db = TestDb::create().await.unwrap();
    let pool = PgPool::connect(&db.url()).await.unwrap();
    migrate(&pool).await.unwrap();
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    checkout_shared::streams::provision(&js, 1).await.unwrap();
    (nats, db, pool, js)
}

/// The ids of the commands in the command stream, oldest first (read without consuming:
/// a work-queue stream admits no second consumer).
async fn commands(js: &jetstream::Context, subject: &str) -> Vec<String> {
    let mut stream = js.get_stream("CHECKOUT_COMMANDS").await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    let prefix = subject.trim_end_matches('>');
    let mut ids = Vec::new();
    for seq in state.first_sequence..=state.last_sequence {
        let Ok(message) = stream.get_raw_message(seq).await else {
            continue;
        };
        if message.subject.as_str().starts_with(prefix) {
            ids.push(
                message
                    .headers
                    .get(MSG_ID)
                    .map(|v| v.as_str().to_owned())
                    .unwrap_or_default(),
            );
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_sends_the_command_a_recorded_transition_implied() {
    let (nats, db, pool, js) = setup().await;
    // What an orchestrator leaves behind when killed after its commit, before its publish.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let (recorder, _exported) = Executor::new(pool.clone(), client, SpanFlusher::disabled(), SLOW);
    let data = data();
    let saga_id = data.request.checkout_id;
    let recorded = recorder
        .record_start(data, &opentelemetry::Context::new())
        .await
        .unwrap();
    assert!(recorded.is_some());
    assert!(commands(&js, "checkout.cmd.inventory.>").await.is_empty());

    let stop = CancellationToken::new();
    let config = config(&nats, &db);
    let orchestrator = tokio::spawn(checkout_orchestrator::run(
        config,
        SpanFlusher::disabled(),
        stop.clone(),
    ));
    let mut sent = Vec::new();
    for _ in 0..100 {
        sent = commands(&js, "checkout.cmd.inventory.>").await;
        if !sent.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        sent,
        vec![format!("{saga_id}.inventory.do")],
        "the reservation is sent on start-up"
    );
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), orchestrator)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    pool.close().await;
    db.drop_db().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_without_reply_is_undone_and_an_undo_without_reply_is_flagged_but_never_given_up() {
    let (nats, db, pool, js) = setup().await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let (executor, _exported) = Executor::new(pool.clone(), client, SpanFlusher::disabled(), FAST);
    let data = data();
    let saga_id = data.request.checkout_id;
    assert!(
        executor
            .start(data, &opentelemetry::Context::new())
            .await
            .unwrap()
    );
    let ok = Outcome::StepSucceeded {
        reference: Some(Uuid::new_v4()),
    };
    executor
        .apply(
            saga_id,
            Input::Reply {
                step: Step::Inventory,
                phase: Phase::Do,
                outcome: ok.clone(),
            },
        )
        .await
        .unwrap();
    // No worker answers the charge: three sends, then the saga undoes the charge, and no
    // worker answers the refund either.
    let mut status = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        for due in executor.due(10).await.unwrap() {
            status = executor.time_out(due).await.unwrap();
        }
        if status == Some(Status::Stuck) {
            break;
        }
    }
    assert_eq!(status, Some(Status::Stuck), "flagged for an operator");
    let charges = commands(&js, "checkout.cmd.payment.charge").await;
    let charge = format!("{saga_id}.payment.do");
    assert_eq!(
        charges,
        vec![
            charge.clone(),
            format!("{charge}.r1"),
            format!("{charge}.r2")
        ],
        "each deadline re-sends the charge under a new id"
    );
    let row = store::get(&pool, saga_id).await.unwrap().unwrap();
    let reason = row.stuck_reason.unwrap_or_default();
    assert!(
        reason.contains("payment undo has not succeeded"),
        "{reason}"
    );
    assert_eq!(
        store::stuck(&pool).await.unwrap().len(),
        1,
        "listed as stuck"
    );

    // Flagged, yet never given up on: its deadline keeps re-sending the refund.
    let flagged_at = commands(&js, "checkout.cmd.payment.refund").await.len();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for due in executor.due(10).await.unwrap() {
        executor.time_out(due).await.unwrap();
    }
    let refunds = commands(&js, "checkout.cmd.payment.refund").await;
    assert!(
        refunds.len() > flagged_at,
        "a stuck saga's undo is still re-sent: {refunds:?}"
    );
    let retried = executor.apply(saga_id, Input::OperatorRetry).await.unwrap();
    assert_eq!(
        retried,
        Some(Status::Stuck),
        "flagged until the undo succeeds"
    );
    let after_retry = commands(&js, "checkout.cmd.payment.refund").await;
    assert_eq!(after_retry.len(), refunds.len() + 1, "sent now");
    assert_eq!(
        after_retry
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        after_retry.len(),
        "every send has its own id: {after_retry:?}"
    );

    // The refund finally succeeds: the saga moves on and ends compensated by itself.
    let reply = |step, outcome| Input::Reply {
        step,
        phase: Phase::Undo,
        outcome,
    };
    let status = executor
        .apply(saga_id, reply(Step::Payment, ok.clone()))
        .await
        .unwrap();
    assert_eq!(status, Some(Status::Compensating), "the flag is cleared");
    let status = executor
        .apply(saga_id, reply(Step::Inventory, ok))
        .await
        .unwrap();
    assert_eq!(status, Some(Status::Compensated));
    assert!(store::stuck(&pool).await.unwrap().is_empty());
    pool.close().await;
    db.drop_db().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_out_of_deliveries_is_moved_to_the_dead_letters() {
    let (nats, db, pool, js) = setup().await;
    let stop = CancellationToken::new();
    let config = config(&nats, &db);
    let orchestrator = tokio::spawn(checkout_orchestrator::run(
        config,
        SpanFlusher::disabled(),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(MSG_ID, "poison.order.do");
    js.publish_with_headers("checkout.cmd.order.create", headers, "{}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    // A worker that takes the message and dies every time, until JetStream gives up.
    let topology = checkout_shared::streams::Topology::load().unwrap();
    let def = topology.consumer("order").unwrap();
    let consumer = checkout_shared::streams::bind_consumer(&js, def)
        .await
        .unwrap();
    for _ in 0..def.max_deliver {
        let mut batch = consumer
            .fetch()
            .max_messages(1)
            .expires(Duration::from_secs(2))
            .messages()
            .await
            .unwrap();
        let message = futures::StreamExt::next(&mut batch).await.unwrap().unwrap();
        message
            .ack_with(jetstream::AckKind::Nak(None))
            .await
            .unwrap();
    }
    // The next pull is when JetStream notices the message is out of deliveries.
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(1))
        .messages()
        .await
        .unwrap();
    assert!(
        futures::StreamExt::next(&mut batch).await.is_none(),
        "not delivered again"
    );
    let dlq = js.get_stream("CHECKOUT_DLQ").await.unwrap();
    let mut letter = None;
    for _ in 0..50 {
        if let Ok(found) = dlq
            .get_last_raw_message_by_subject("checkout.dlq.checkout.cmd.order.create")
            .await
        {
            letter = Some(found);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let letter = letter.expect("the message reached the dead letters");
    let reason = letter
        .headers
        .get(checkout_shared::envelope::REASON)
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default();
    assert!(reason.contains("gave up after 10 deliveries"), "{reason}");
    assert!(
        commands(&js, "checkout.cmd.order.>").await.is_empty(),
        "removed from the queue"
    );
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), orchestrator)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    pool.close().await;
    db.drop_db().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_confirmation_is_resent_by_its_deadline_then_given_up_and_the_checkout_stands()
 {
    let (_nats, _db, pool, js) = setup().await;
    let client = async_nats::connect(_nats.url()).await.unwrap();
    let (executor, _exported) = Executor::new(pool.clone(), client, SpanFlusher::disabled(), FAST);
    let data = data();
    let saga_id = data.request.checkout_id;
    let cx = opentelemetry::Context::new();
    assert!(executor.start(data, &cx).await.unwrap());
    let mut status = None;
    for step in [Step::Inventory, Step::Payment, Step::Order] {
        let outcome = Outcome::StepSucceeded {
            reference: Some(Uuid::new_v4()),
        };
        let reply = Input::Reply {
            step,
            phase: Phase::Do,
            outcome,
        };
        status = executor.apply(saga_id, reply).await.unwrap();
    }
    assert_eq!(
        status,
        Some(Status::Completed),
        "the checkout does not wait"
    );
    // No notification worker answers: the completed saga stays in the deadline scan (the
    // store's `due`) until the confirmation's bound is spent.
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        for due in executor.due(10).await.unwrap() {
            status = executor.time_out(due).await.unwrap();
        }
    }
    assert_eq!(status, Some(Status::Completed), "the checkout stands");
    let sent = commands(&js, "checkout.cmd.notification.send").await;
    let id = format!("{saga_id}.notification.do");
    assert_eq!(
        sent,
        vec![id.clone(), format!("{id}.r1"), format!("{id}.r2")]
    );
    assert!(
        executor.due(10).await.unwrap().is_empty(),
        "given up, no deadline"
    );
    let log = store::log(&pool, saga_id).await.unwrap();
    let last = log.last().unwrap();
    assert_eq!(
        (last.step.as_deref(), last.event.as_str()),
        (Some("notification.send"), "failed")
    );
    assert!(
        log.iter().all(|e| e.event != "undo_started"),
        "nothing undone"
    );
}

/// Two orchestrators on one database, each remembering the rows it wrote: an input planned on
/// a row another one has moved on since is never lost, and never applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_orchestrators_apply_each_reply_once_whatever_each_remembers() {
    let (nats, db, pool, _js) = setup().await;
    let connect = || async {
        let client = async_nats::connect(nats.url()).await.unwrap();
        Executor::new(pool.clone(), client, SpanFlusher::disabled(), SLOW).0
    };
    let (a, b) = (connect().await, connect().await);
    let data = data();
    let saga_id = data.request.checkout_id;
    assert!(a.start(data, &opentelemetry::Context::new()).await.unwrap());
    let reply = |step| Input::Reply {
        step,
        phase: Phase::Do,
        outcome: Outcome::StepSucceeded { reference: None },
    };
    let running = Some(Status::Running);
    assert_eq!(
        b.apply(saga_id, reply(Step::Inventory)).await.unwrap(),
        running
    );
    // A remembers the saga at its start, where a payment reply means nothing: it must look
    // again rather than drop the reply.
    assert_eq!(
        a.apply(saga_id, reply(Step::Payment)).await.unwrap(),
        running
    );
    let version = || async { store::get(&pool, saga_id).await.unwrap().unwrap().version };
    assert_eq!(version().await, 3, "the payment reply was applied by A");
    // B remembers it before the payment: a duplicate of that reply planned there must not
    // be written over the row A wrote.
    assert_eq!(
        b.apply(saga_id, reply(Step::Payment)).await.unwrap(),
        running
    );
    assert_eq!(version().await, 3, "and not again by B");
    let log = store::log(&pool, saga_id).await.unwrap();
    let succeeded: Vec<_> = log
        .iter()
        .filter(|entry| entry.event == "succeeded")
        .map(|entry| entry.step.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        succeeded,
        ["inventory.reserve", "payment.charge"],
        "{log:?}"
    );
    pool.close().await;
    db.drop_db().await.unwrap();
}
