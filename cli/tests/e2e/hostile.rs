//! Hostile input on every consumed subject, against the default stack (identities on).
//!
//! As the administrator, the request subject, every command subject and every reply subject
//! (all derived from the step declarations) get bytes that are not JSON, JSON of the wrong
//! type, a 200 KB valid-looking body, and valid bodies under forged headers (another saga or
//! step than the subject and body, a malformed `traceparent`, a `Saga-Command-Id` the saga
//! never sent), all stored through JetStream. As the payment worker's identity, the broker
//! refuses an inventory reply and a command, and a payment reply that speaks for the
//! inventory step is refused by the orchestrator. Then, bounded in time: every service still
//! runs; the saga rows are exactly as before the flood (none created, none changed); the
//! work-queue streams drain to zero (every message settled once); the refusals are where an
//! operator looks (a dead letter from every command and reply subject, a rejection per bad
//! request, "reply refused" log lines with their reasons); and a good checkout completes.

use crate::identities::{connect, refused};
use crate::support::{Options, Stack, request};
use async_nats::HeaderMap;
use async_nats::jetstream::{self, Context};
use bytes::Bytes;
use checkout_cli::common::wait_until;
use checkout_shared::command_id::COMMAND_ID;
use checkout_shared::envelope::MSG_ID;
use checkout_shared::messages::{Command, CommandMessage, Outcome, Refusal, RefusalCode, Reply};
use checkout_shared::{Envelope, MsgType, Phase, ReplyRefusal, Step, subjects};
use futures::StreamExt;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;
use uuid::Uuid;

const WORK_QUEUES: [&str; 3] = ["CHECKOUT_REQUESTS", "CHECKOUT_COMMANDS", "CHECKOUT_EVENTS"];

/// Every (step, phase) a command is ever sent for, from the step declarations.
fn commands() -> Vec<(Step, Phase)> {
    Step::ALL
        .iter()
        .flat_map(|&step| [Phase::Do, Phase::Undo].map(|phase| (step, phase)))
        .filter(|(step, phase)| step.verb(*phase).is_some())
        .collect()
}

/// Every reply a worker may send for `saga_id`: each command's success, and each action's
/// refusal. Their subjects are every reply subject the orchestrator consumes.
fn replies(saga_id: Uuid) -> Vec<Reply> {
    let refusal = || Outcome::StepFailed {
        reason: Refusal::new(RefusalCode::Undeliverable, "forged".to_owned()),
    };
    commands()
        .into_iter()
        .flat_map(|(step, phase)| {
            let ok = Outcome::StepSucceeded { reference: None };
            let outcomes = match phase {
                Phase::Do => vec![ok, refusal()],
                Phase::Undo => vec![ok],
            };
            outcomes.into_iter().map(move |outcome| Reply {
                saga_id,
                step,
                phase,
                outcome,
            })
        })
        .collect()
}

fn reply_envelope(reply: &Reply) -> Envelope {
    Envelope {
        saga_id: reply.saga_id,
        step: reply.step,
        phase: reply.phase,
        msg_type: MsgType::event(reply.step, reply.event_name()),
    }
}

fn headers(envelope: Option<&Envelope>, extra: &[(&str, String)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(envelope) = envelope {
        envelope.write(&mut headers, "replaced-on-send");
    }
    for (name, value) in extra {
        headers.insert(*name, value.as_str());
    }
    headers
}

fn body(value: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap())
}

/// `value` padded to about 200 KB: below the broker's 1 MB, far above any real message.
fn oversized(value: &Value) -> Bytes {
    let mut value = value.clone();
    value["padding"] = Value::String("x".repeat(200 * 1024));
    body(&value)
}

/// The garbage every subject gets: not JSON (without and with a readable envelope), JSON of
/// the wrong types, and a forged `traceparent` on not-JSON.
fn garbage(envelope: Option<&Envelope>) -> Vec<(HeaderMap, Bytes)> {
    let bad_trace = ("traceparent", "00-not-a-trace-zz".to_owned());
    vec![
        (HeaderMap::new(), Bytes::from_static(b"\x00\xff{not json")),
        (headers(envelope, &[]), Bytes::from_static(b"{\"saga_id\":")),
        (headers(envelope, &[]), Bytes::from_static(b"[1, 2, 3]")),
        (headers(envelope, &[]), Bytes::from_static(b"\"a string\"")),
        (
            headers(envelope, &[]),
            body(&json!({"saga_id": 42, "step": true, "phase": [], "type": {}, "items": "many"})),
        ),
        (
            headers(envelope, &[bad_trace]),
            Bytes::from_static(b"\xc3\x28"),
        ),
    ]
}

/// Publishes `copies` of each through JetStream as whoever `js` is, each with a fresh message
/// id (so none is de-duplicated away), waiting for each to be stored.
async fn publish_all(
    js: &Context,
    subject: &str,
    messages: Vec<(HeaderMap, Bytes)>,
    copies: usize,
) -> usize {
    let count = messages.len() * copies;
    for (mut headers, payload) in std::iter::repeat_n(messages, copies).flatten() {
        headers.insert(MSG_ID, format!("hostile-{}", Uuid::new_v4()).as_str());
        let ack = js.publish_with_headers(subject.to_owned(), headers, payload);
        ack.await.unwrap().await.unwrap();
    }
    count
}

async fn stored(js: &Context, stream: &str) -> u64 {
    let mut stream = js.get_stream(stream).await.unwrap();
    stream.info().await.unwrap().state.messages
}

/// Every message of `stream`, by subject, read with a consumer of our own.
async fn subjects_in(js: &Context, stream: &str) -> Vec<String> {
    let consumer = js
        .get_stream(stream)
        .await
        .unwrap()
        .create_consumer(jetstream::consumer::pull::Config::default())
        .await
        .unwrap();
    let mut out = Vec::new();
    loop {
        let mut batch = consumer
            .fetch()
            .max_messages(500)
            .expires(Duration::from_secs(2))
            .messages()
            .await
            .unwrap();
        let before = out.len();
        while let Some(Ok(message)) = batch.next().await {
            out.push(message.subject.to_string());
        }
        if out.len() == before {
            return out;
        }
    }
}

/// Every saga row and its history, as text: what the flood must leave as it was.
async fn sagas(stack: &Stack) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT s.saga_id::text || ' ' || s.status || ' ' || s.version || ' ' || s.state::text \
         || ' ' || (SELECT count(*) FROM saga.saga_log l WHERE l.saga_id = s.saga_id) \
         FROM saga.sagas s ORDER BY s.saga_id",
    )
    .fetch_all(&stack.pool)
    .await
    .unwrap()
}

/// Waits (bounded) until the work queues are empty and the saga rows hold still.
async fn settled(stack: &Stack, js: &Context) -> Vec<String> {
    let drained = wait_until(Duration::from_secs(60), || async {
        for stream in WORK_QUEUES {
            if stored(js, stream).await != 0 {
                return false;
            }
        }
        let before = sagas(stack).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        before == sagas(stack).await
    })
    .await;
    let left: Vec<(&str, u64)> =
        futures::future::join_all(WORK_QUEUES.map(|s| async move { (s, stored(js, s).await) }))
            .await;
    assert!(
        drained,
        "the work queues did not drain within 60 s: {left:?}"
    );
    sagas(stack).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_hostile_and_forged_messages_changes_nothing_and_is_all_settled() {
    let mut stack = Stack::start(Options::default()).await;
    let client = stack.client().await;
    let cart = [("SKU-MUG", 1)];
    let first = request("cust-1", "tok_visa", &cart, 2100);
    assert_eq!(stack.checkout(&client, &first).await.0, "completed");
    let js = jetstream::new(stack.admin_client().await);
    let before = settled(&stack, &js).await;
    assert_eq!(before.len(), 1, "one saga before the flood: {before:#?}");
    let real = first.checkout_id;
    let nobody = Uuid::new_v4();
    let mut sent = 0;

    // The request subject: every message is refused at the door, none starts a saga (sent
    // once: a checkout id sent again is answered again, not rejected again).
    let unknown_sku = json!({
        "checkout_id": Uuid::new_v4(), "customer_id": "cust-1",
        "items": [{"sku": "SKU-NOPE", "quantity": 1, "unit_price_cents": 2100}],
        "payment_token": "tok_visa", "amount_cents": 2100, "currency": "EUR"
    });
    let forged = Envelope::command(real, Step::Payment, Phase::Do);
    let mut flood = garbage(Some(&forged));
    flood.push((HeaderMap::new(), oversized(&unknown_sku)));
    flood.push((
        headers(
            Some(&forged),
            &[
                ("traceparent", "00-zz-yy-01".to_owned()),
                (COMMAND_ID, format!("{real}.payment.do.g7.r9")),
            ],
        ),
        body(&unknown_sku),
    ));
    let requests = publish_all(&js, subjects::CHECKOUT_REQUESTED, flood, 1).await;
    sent += requests;

    // Every command subject: dead-lettered, never acted on (each forgery disagrees with the
    // subject or the body, since the administrator may send a real command).
    let command_subjects: Vec<String> = commands()
        .into_iter()
        .map(|(step, phase)| subjects::command(step, phase))
        .collect();
    for (step, phase) in commands() {
        let subject = subjects::command(step, phase);
        let envelope = Envelope::command(nobody, step, phase);
        let other = Step::ALL.iter().copied().find(|s| *s != step).unwrap();
        let command = CommandMessage {
            saga_id: real,
            command: Command::ReleaseInventory,
        };
        let valid = serde_json::to_value(&command).unwrap();
        let mut flood = garbage(Some(&envelope));
        flood.push((headers(Some(&envelope), &[]), oversized(&valid)));
        let another_step = Envelope::command(real, other, phase);
        flood.push((headers(Some(&another_step), &[]), body(&valid)));
        let bad_trace = [("traceparent", "00-0-0-zz".to_owned())];
        flood.push((headers(Some(&envelope), &bad_trace), body(&valid)));
        sent += publish_all(&js, &subject, flood, 2).await;
    }

    // Every reply subject: dead-lettered when unreadable or disagreeing with its headers,
    // refused when it answers no command the saga sent.
    let reply_subjects: BTreeSet<String> = replies(nobody)
        .iter()
        .map(|r| subjects::event(r.step, r.event_name()))
        .collect();
    assert!(
        reply_subjects.len() >= 2 * Step::ALL.len(),
        "{reply_subjects:?}"
    );
    for reply in replies(nobody) {
        let subject = subjects::event(reply.step, reply.event_name());
        let envelope = reply_envelope(&reply);
        let valid = serde_json::to_value(&reply).unwrap();
        let key = (
            COMMAND_ID,
            format!("{nobody}.{}.{}", reply.step, reply.phase),
        );
        let mut flood = garbage(Some(&envelope));
        flood.push((
            headers(Some(&envelope), std::slice::from_ref(&key)),
            oversized(&valid),
        ));
        let other_saga = Envelope {
            saga_id: real,
            ..envelope.clone()
        };
        flood.push((
            headers(Some(&other_saga), std::slice::from_ref(&key)),
            body(&valid),
        ));
        let bad_trace = ("traceparent", "00-0000-xyz-01".to_owned());
        flood.push((headers(Some(&envelope), &[key, bad_trace]), body(&valid)));
        // For the real saga, on the right subject, naming a command it never sent.
        let mut real_reply = reply.clone();
        real_reply.saga_id = real;
        let never_sent = format!("{real}.{}.{}.g7.r9", reply.step, reply.phase);
        let real_headers = headers(
            Some(&reply_envelope(&real_reply)),
            &[(COMMAND_ID, never_sent)],
        );
        let real_body = serde_json::to_value(&real_reply).unwrap();
        flood.push((real_headers, body(&real_body)));
        sent += publish_all(&js, &subject, flood, 2).await;
    }

    // Forged identities: the broker refuses what the payment identity may not publish; the
    // orchestrator refuses a payment reply that speaks for the inventory step.
    let (payment, mut errors) = connect(&stack.nats, "payment").await;
    let inventory_done = Step::Inventory.def().action.done;
    let inventory_reply = subjects::event(Step::Inventory, inventory_done);
    refused(&payment, &mut errors, &inventory_reply).await;
    let command = subjects::command(Step::Order, Phase::Do);
    refused(&payment, &mut errors, &command).await;
    let claim = Reply {
        saga_id: real,
        step: Step::Inventory,
        phase: Phase::Do,
        outcome: Outcome::StepSucceeded { reference: None },
    };
    let claim_headers = headers(
        Some(&reply_envelope(&claim)),
        &[(COMMAND_ID, format!("{real}.inventory.do"))],
    );
    let payment_subject = subjects::event(Step::Payment, Step::Payment.def().action.done);
    let as_payment = jetstream::new(payment.clone());
    let flood = vec![(claim_headers, body(&serde_json::to_value(&claim).unwrap()))];
    sent += publish_all(&as_payment, &payment_subject, flood, 1).await;
    assert!((200..600).contains(&sent), "a bounded flood: {sent}");

    // Settled, nothing changed, every service up.
    let after = settled(&stack, &js).await;
    assert_eq!(after, before, "the flood created or changed a saga");
    for name in checkout_shared::steps::worker_kinds().chain(["orchestrator"]) {
        assert!(stack.service(name).is_running(), "{name} died in the flood");
    }

    // The refusals, where an operator looks.
    let rejected = stored(&js, "CHECKOUT_REJECTED").await;
    assert_eq!(rejected, requests as u64, "one rejection per bad request");
    let dead: BTreeSet<String> = subjects_in(&js, "CHECKOUT_DLQ")
        .await
        .iter()
        .filter_map(|s| s.strip_prefix(&format!("{}.", subjects::DEAD_LETTER)))
        .map(str::to_owned)
        .collect();
    for subject in command_subjects.iter().chain(&reply_subjects) {
        assert!(
            dead.contains(subject),
            "no dead letter from {subject}: {dead:?}"
        );
    }
    let logs = stack.all_logs();
    let refusals = |reason: &str| {
        logs.lines()
            .filter(|l| l.contains("reply refused, not applied") && l.contains(reason))
            .count()
    };
    assert!(
        refusals(ReplyRefusal::ReplyWrongSubject.as_str()) >= 1,
        "payment spoke for inventory"
    );
    assert!(refusals(ReplyRefusal::ReplyUnknownSaga.as_str()) >= reply_subjects.len());
    let unsent: usize = [
        ReplyRefusal::ReplySagaEnded,
        ReplyRefusal::ReplyNotAwaited,
        ReplyRefusal::ReplyUnsent,
    ]
    .iter()
    .map(|r| refusals(r.as_str()))
    .sum();
    assert!(
        unsent >= 1,
        "a never-sent command id on the real saga is refused"
    );

    // And the system goes on.
    let next = request("cust-2", "tok_visa", &cart, 2100);
    assert_eq!(stack.checkout(&client, &next).await.0, "completed");
    stack.stop().await;
}
