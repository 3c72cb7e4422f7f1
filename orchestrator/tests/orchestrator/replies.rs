//! Replies that cannot be misapplied: the running orchestrator applies a reply only when it
//! answers a command its saga sent and waits for; every other is refused with its reason (a
//! warning with the trace id), acked once, never redelivered, and changes nothing.

use crate::support::*;
use checkout_shared::command_id::COMMAND_ID;
use checkout_shared::envelope::{Envelope, MsgType};
use checkout_shared::messages::{Refusal, RefusalCode, Reply};
use checkout_shared::streams::EVENTS_CONSUMER;
use checkout_shared::subjects;

/// A reply as anyone with a connection could publish it.
struct Sent {
    saga_id: Uuid,
    step: Step,
    phase: Phase,
    outcome: Outcome,
    /// The subject, when not the one its step's worker answers this outcome on.
    subject: Option<String>,
    /// `Saga-Command-Id`, if any.
    command: Option<String>,
    /// `Nats-Msg-Id`: distinct per publish, or JetStream drops the copy before anyone sees it.
    msg_id: String,
}

fn reply(saga_id: Uuid, step: Step, phase: Phase, outcome: Outcome) -> Sent {
    Sent {
        saga_id,
        step,
        phase,
        outcome,
        subject: None,
        command: Some(format!("{saga_id}.{step}.{phase}")),
        msg_id: Uuid::new_v4().to_string(),
    }
}

fn ok() -> Outcome {
    Outcome::StepSucceeded {
        reference: Some(Uuid::new_v4()),
    }
}

/// Publishes `sent` and waits until the orchestrator has settled it; returns how many of the
/// events consumer's messages were ever redelivered.
async fn deliver(js: &jetstream::Context, sent: Sent) -> usize {
    let body = Reply {
        saga_id: sent.saga_id,
        step: sent.step,
        phase: sent.phase,
        outcome: sent.outcome,
    };
    let event = body.event_name();
    let subject = sent
        .subject
        .unwrap_or_else(|| subjects::event(sent.step, event));
    let envelope = Envelope {
        saga_id: sent.saga_id,
        step: sent.step,
        phase: sent.phase,
        msg_type: MsgType::event(sent.step, event),
    };
    let mut headers = async_nats::HeaderMap::new();
    envelope.write(&mut headers, &sent.msg_id);
    if let Some(command) = sent.command {
        headers.insert(COMMAND_ID, command);
    }
    let payload = serde_json::to_vec(&body).unwrap().into();
    let seq = js
        .publish_with_headers(subject, headers, payload)
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence;
    let stream = js.get_stream("CHECKOUT_EVENTS").await.unwrap();
    for _ in 0..300 {
        let info = stream.consumer_info(EVENTS_CONSUMER).await.unwrap();
        if info.ack_floor.stream_sequence >= seq && info.num_ack_pending == 0 {
            return info.num_redelivered;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("reply {seq} never settled");
}

async fn version(pool: &PgPool, saga_id: Uuid) -> (i64, SagaStatus, Step, Phase) {
    let row = store::get(pool, saga_id).await.unwrap().unwrap();
    (
        row.version,
        row.state.status,
        row.state.step,
        row.state.phase,
    )
}

/// The reasons of the refusals logged for `saga_id`, in order, each with a trace id.
fn refusals(saga_id: Uuid) -> Vec<String> {
    warnings_with("saga_id", &saga_id.to_string())
        .into_iter()
        .filter(|w| w.get("message").map(String::as_str) == Some("reply refused, not applied"))
        .map(|w| {
            let trace_id = w.get("trace_id").cloned().unwrap_or_default();
            assert_eq!(trace_id.len(), 32, "a trace id on every refusal: {w:?}");
            w.get("reason").cloned().unwrap_or_default()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_reply_to_a_command_the_saga_sent_and_waits_for_is_applied() {
    capture_warnings();
    let (nats, db, pool, js) = setup().await;
    let stop = CancellationToken::new();
    let config = OrchestratorConfig {
        // No deadline fires meanwhile: every change is a reply's.
        timing: SLOW,
        ..config(&nats, &db)
    };
    let orchestrator = tokio::spawn(checkout_orchestrator::run(
        config,
        SpanFlusher::disabled(),
        stop.clone(),
    ));
    let client = nats.admin_client().await.unwrap();
    let (executor, _exported) = Executor::new(pool.clone(), client, SpanFlusher::disabled(), SLOW);
    let data = data();
    let saga = data.request.checkout_id;
    assert!(
        executor
            .start(data, &opentelemetry::Context::new())
            .await
            .unwrap()
    );
    let waiting_inventory = version(&pool, saga).await;
    assert_eq!(
        waiting_inventory,
        (1, SagaStatus::Running, Step::Inventory, Phase::Do)
    );
    let mut expected = Vec::new();
    let mut refused = |sent: Sent, reason: &str| {
        expected.push(reason.to_owned());
        deliver(&js, sent)
    };

    // A reply for another step than the one the saga waits for.
    assert_eq!(
        refused(
            reply(saga, Step::Payment, Phase::Do, ok()),
            "reply_not_awaited"
        )
        .await,
        0
    );
    // The right step and phase, but a re-send the saga never sent.
    let unsent = Sent {
        command: Some(format!("{saga}.inventory.do.r3")),
        ..reply(saga, Step::Inventory, Phase::Do, ok())
    };
    assert_eq!(refused(unsent, "reply_unsent").await, 0);
    let unsent_generation = Sent {
        command: Some(format!("{saga}.inventory.do.g1")),
        ..reply(saga, Step::Inventory, Phase::Do, ok())
    };
    assert_eq!(refused(unsent_generation, "reply_unsent").await, 0);
    // The right step and phase, naming another action's command.
    let mismatched = Sent {
        command: Some(format!("{saga}.payment.do")),
        ..reply(saga, Step::Inventory, Phase::Do, ok())
    };
    assert_eq!(refused(mismatched, "reply_key_mismatch").await, 0);
    // The right action, but on the subject of another step's worker (the identity that may
    // publish there speaks for its own step only).
    let elsewhere = Sent {
        subject: Some("checkout.evt.payment.charged".into()),
        ..reply(saga, Step::Inventory, Phase::Do, ok())
    };
    assert_eq!(refused(elsewhere, "reply_wrong_subject").await, 0);
    // Naming no command at all.
    let unkeyed = Sent {
        command: None,
        ..reply(saga, Step::Inventory, Phase::Do, ok())
    };
    assert_eq!(refused(unkeyed, "reply_unkeyed").await, 0);
    assert_eq!(
        version(&pool, saga).await,
        waiting_inventory,
        "nothing applied"
    );

    // A reply for a saga that never sent that command: no such saga.
    let stranger = Uuid::new_v4();
    deliver(&js, reply(stranger, Step::Inventory, Phase::Do, ok())).await;
    assert_eq!(refusals(stranger), ["reply_unknown_saga"]);
    assert!(store::get(&pool, stranger).await.unwrap().is_none());

    // The genuine reply, as the previous release's worker sent it (no Saga-Command-Id, its
    // message id the command's plus `.reply`): applied.
    let genuine = Sent {
        command: None,
        msg_id: format!("{saga}.inventory.do.reply"),
        ..reply(saga, Step::Inventory, Phase::Do, ok())
    };
    assert_eq!(deliver(&js, genuine).await, 0);
    assert_eq!(
        version(&pool, saga).await,
        (2, SagaStatus::Running, Step::Payment, Phase::Do)
    );
    // That reply again, after the saga moved on (a new message id, past the duplicate window).
    let replayed = reply(saga, Step::Inventory, Phase::Do, ok());
    assert_eq!(refused(replayed, "reply_not_awaited").await, 0);
    assert_eq!(version(&pool, saga).await.0, 2, "not applied twice");

    // The card is declined: the saga undoes the reservation.
    let declined = Outcome::StepFailed {
        reason: Refusal::new(RefusalCode::CardDeclined, "declined"),
    };
    deliver(&js, reply(saga, Step::Payment, Phase::Do, declined)).await;
    assert_eq!(
        version(&pool, saga).await,
        (3, SagaStatus::Compensating, Step::Inventory, Phase::Undo)
    );
    // A reply for the do of the step being undone: a reservation must not un-compensate it.
    let reserved = reply(saga, Step::Inventory, Phase::Do, ok());
    assert_eq!(refused(reserved, "reply_not_awaited").await, 0);
    assert_eq!(version(&pool, saga).await.0, 3);

    deliver(&js, reply(saga, Step::Inventory, Phase::Undo, ok())).await;
    assert_eq!(version(&pool, saga).await.1, SagaStatus::Compensated);
    let after_the_end = reply(saga, Step::Inventory, Phase::Undo, ok());
    assert_eq!(refused(after_the_end, "reply_saga_ended").await, 0);
    assert_eq!(version(&pool, saga).await.0, 4);

    assert_eq!(
        refusals(saga),
        expected,
        "each refusal logged with its reason"
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
async fn after_a_retry_a_reply_naming_an_older_generation_is_refused_and_the_new_one_applied() {
    capture_warnings();
    let (nats, db, pool, js) = setup().await;
    let stop = CancellationToken::new();
    // Fast deadlines and no workers: the reservation goes unanswered, is undone, and its
    // release goes unanswered until the saga is flagged stuck.
    let orchestrator = tokio::spawn(checkout_orchestrator::run(
        config(&nats, &db),
        SpanFlusher::disabled(),
        stop.clone(),
    ));
    let client = nats.admin_client().await.unwrap();
    let (executor, _exported) = Executor::new(pool.clone(), client, SpanFlusher::disabled(), FAST);
    let data = data();
    let saga = data.request.checkout_id;
    assert!(
        executor
            .start(data, &opentelemetry::Context::new())
            .await
            .unwrap()
    );
    let mut stuck = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if version(&pool, saga).await.1 == SagaStatus::Stuck {
            stuck = true;
            break;
        }
    }
    assert!(stuck, "flagged stuck: {:?}", version(&pool, saga).await);
    let releases = "checkout.cmd.inventory.release";
    let release = format!("{saga}.inventory.undo");
    let before_retry = commands(&js, releases).await;
    assert!(
        before_retry.contains(&format!("{release}.r1")),
        "re-sent at least once: {before_retry:?}"
    );
    assert_eq!(
        executor.apply(saga, Input::OperatorRetry).await.unwrap(),
        Some(SagaStatus::Stuck)
    );
    let fresh = format!("{release}.g1");
    assert!(
        commands(&js, releases).await.contains(&fresh),
        "the retry sent the new generation's command at once"
    );
    let waiting = version(&pool, saga).await;
    let mut expected = Vec::new();
    let mut refused = |command: String, reason: &str| {
        expected.push(reason.to_owned());
        let sent = Sent {
            command: Some(command),
            ..reply(saga, Step::Inventory, Phase::Undo, ok())
        };
        deliver(&js, sent)
    };
    // Forged: an attempt of the old generation that was never sent, which a comparison of
    // (generation, attempt) as one tuple with the current (1, n) would take as sent.
    let forged = format!("{release}.r90");
    assert_eq!(refused(forged, "reply_superseded").await, 0);
    // Late: an answer to a copy really sent before the retry.
    assert_eq!(
        refused(format!("{release}.r1"), "reply_superseded").await,
        0
    );
    // Ahead: a generation never sent.
    assert_eq!(refused(format!("{release}.g2"), "reply_unsent").await, 0);
    let now = version(&pool, saga).await;
    assert_eq!(
        (now.1, now.2, now.3),
        (waiting.1, waiting.2, waiting.3),
        "nothing applied"
    );

    // The worker's answer to the command the retry sent moves the saga on.
    let answered = Sent {
        command: Some(fresh),
        ..reply(saga, Step::Inventory, Phase::Undo, ok())
    };
    assert_eq!(deliver(&js, answered).await, 0);
    assert_eq!(version(&pool, saga).await.1, SagaStatus::Compensated);
    assert_eq!(
        refusals(saga),
        expected,
        "each refusal logged with its reason"
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
