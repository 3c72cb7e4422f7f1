//! A saga's trace is one tree at every moment, read back from a real otelite: while a worker
//! holds its step, while an undo is stuck behind an outage, and once the saga has ended.
//!
//! ```text
//!  order worker held 6 s ──▶ read: one root, no orphan (the saga still on its order step)
//!  payment.ledger renamed ──▶ the refund fails on every delivery ──▶ stuck ──▶ read again
//!  ledger back ──▶ compensated ──▶ read: the full saga span, no orphan, no duplicate id
//! ```

use crate::private_otelite::{PrivateOtelite, received};
use crate::support::{Options, Stack};
use checkout_cli::otelite::{Otelite, Span};
use checkout_harness::trace_check::check_tree;
use std::time::Duration;
use uuid::Uuid;

/// How long the order worker holds each command: long enough to read the trace mid-step.
const HOLD_MS: u64 = 8_000;

/// Polls (bounded: `tries` × 250 ms) until `ready(status, step)` holds of the saga's row.
async fn wait_for_row(
    stack: &Stack,
    saga_id: Uuid,
    tries: u32,
    ready: impl Fn(&str, &str) -> bool,
) -> bool {
    for _ in 0..tries {
        let (status, step): (String, String) =
            sqlx::query_as("SELECT status, state->>'step' FROM saga.sagas WHERE saga_id = $1")
                .bind(saga_id)
                .fetch_optional(&stack.pool)
                .await
                .unwrap()
                .unwrap_or_default();
        if ready(&status, &step) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

fn on_order(status: &str, step: &str) -> bool {
    status == "running" && step == "order"
}

/// The trace as otelite holds it once it has a span of every name in `names` (bounded).
async fn trace_having(otelite: &Otelite, trace_id: &str, names: &[&str]) -> Vec<Span> {
    let mut spans = Vec::new();
    for _ in 0..100 {
        spans = otelite.trace(trace_id).await.unwrap().unwrap_or_default();
        if names.iter().all(|n| spans.iter().any(|s| s.name == *n)) {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let seen: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    panic!("otelite never held all of {names:?} in trace {trace_id}; it has {seen:?}");
}

/// One root (the client's publish), every parent present, no span id twice.
fn assert_one_tree(spans: &[Span], when: &str) {
    let problems = check_tree(&received(spans));
    assert!(
        problems.is_empty(),
        "{when}: the trace is not one tree: {problems:#?}"
    );
    let roots: Vec<&Span> = spans.iter().filter(|s| s.parent().is_none()).collect();
    assert_eq!(roots[0].name, "publish checkout.requested", "{when}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_a_stuck_and_an_ended_saga_each_have_one_whole_trace() {
    let otelite = PrivateOtelite::start().await;
    let endpoint = otelite.otlp_endpoint();
    let timeout = (HOLD_MS / 1000 + 2).to_string();
    let options = Options {
        otlp_endpoint: Some(endpoint.clone()),
        env: vec![
            // The order worker holds its command: the saga waits mid-step, then is refused.
            ("order", "WORKER_LATENCY_MS", HOLD_MS.to_string()),
            // Not re-sent while held; the refund flagged stuck at its first deadline.
            ("orchestrator", "STEP_TIMEOUT_SECS", timeout.clone()),
            ("orchestrator", "MAX_STEP_TIMEOUT_SECS", timeout),
            ("orchestrator", "STUCK_AFTER_SECS", "1".into()),
        ],
        ..Options::default()
    };
    let stack = Stack::start(options).await;
    let client_env = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)];
    let out = stack
        .run_checkout(
            &["publish", "--customer", "order-fails-live", "--json"],
            &client_env,
        )
        .await;
    let value: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    let saga_id: Uuid = value["saga_id"].as_str().unwrap().parse().unwrap();
    let trace_id = value["trace_id"].as_str().unwrap().to_owned();

    // Charged; the order worker now holds its command.
    assert!(
        wait_for_row(&stack, saga_id, 120, on_order).await,
        "never reached the order"
    );
    // The refund that follows the refusal will meet a missing table.
    sqlx::raw_sql("ALTER TABLE payment.ledger RENAME TO ledger_away")
        .execute(&stack.pool)
        .await
        .unwrap();

    let mid_step = trace_having(
        &otelite.api,
        &trace_id,
        &[
            "process checkout.cmd.payment.charge",
            "step payment.charge",
            "publish checkout.cmd.order.create",
        ],
    )
    .await;
    assert!(
        wait_for_row(&stack, saga_id, 1, on_order).await,
        "the hold ended before the trace was read: raise HOLD_MS"
    );
    assert_one_tree(&mid_step, "held mid-step");
    assert!(
        !mid_step.iter().any(|s| s.name == "saga checkout"),
        "the full saga span is not out before the saga ends"
    );
    // `checkout show` says where it is, what it waits for, and links to the trace as it is.
    let ui = otelite.api.base().to_owned();
    let linked = [
        ("TRACE_UI", "otelite".to_owned()),
        ("OTELITE_URL", ui.clone()),
    ];
    let id = saga_id.to_string();
    let shown = stack.run_checkout(&["show", &id], &linked).await;
    assert!(
        shown.contains("now      running at do order: waiting ")
            && shown.contains("for the order worker's reply to order.create (sent once"),
        "{shown}"
    );
    assert!(shown.contains(&format!("open     {ui}/#traces")), "{shown}");

    // Refused, compensating, its refund failing on every delivery: flagged stuck.
    assert!(
        wait_for_row(&stack, saga_id, 200, |status, _| status == "stuck").await,
        "never flagged stuck"
    );
    let stuck = trace_having(
        &otelite.api,
        &trace_id,
        &[
            "step order.create",
            "publish checkout.cmd.payment.refund",
            "process checkout.cmd.payment.refund",
        ],
    )
    .await;
    assert_one_tree(&stuck, "stuck behind the outage");
    let shown = stack.run_checkout(&["show", &id], &linked).await;
    assert!(
        shown.contains("now      stuck at undo payment: waiting ")
            && shown.contains("for the payment worker's reply to payment.refund (sent "),
        "{shown}"
    );
    println!("checkout show, stuck:\n{shown}");
    let refund = stuck
        .iter()
        .find(|s| s.name == "process checkout.cmd.payment.refund")
        .unwrap();
    let started = stuck
        .iter()
        .find(|s| s.name == "compensate payment.charge started")
        .unwrap();
    let publish = stuck
        .iter()
        .find(|s| Some(s.span_id.as_str()) == refund.parent())
        .unwrap();
    assert_eq!(
        publish.parent(),
        Some(started.span_id.as_str()),
        "the failing refund's work hangs under its compensation"
    );

    // The table is back: the refund goes through, the stock is released, the saga ends.
    sqlx::raw_sql("ALTER TABLE payment.ledger_away RENAME TO ledger")
        .execute(&stack.pool)
        .await
        .unwrap();
    assert!(
        wait_for_row(&stack, saga_id, 240, |status, _| status == "compensated").await,
        "never compensated"
    );
    let ended = trace_having(
        &otelite.api,
        &trace_id,
        &["saga checkout", "compensate inventory.reserve"],
    )
    .await;
    // Let the last batches of the workers land before the final reading.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ended = otelite.api.trace(&trace_id).await.unwrap().unwrap_or(ended);
    assert_one_tree(&ended, "ended");
    let sagas: Vec<&Span> = ended.iter().filter(|s| s.name == "saga checkout").collect();
    assert_eq!(sagas.len(), 1, "one span covers the whole saga");
    assert_eq!(
        sagas[0].attributes.get("saga.outcome").map(String::as_str),
        Some("compensated")
    );
    let first_step = ended
        .iter()
        .filter(|s| s.name.starts_with("step ") && !s.name.ends_with(" started"))
        .map(|s| s.start_time)
        .min()
        .expect("the saga's steps are in its trace");
    let saga_started = ended
        .iter()
        .find(|s| s.name == "saga checkout started")
        .unwrap();
    assert_eq!(sagas[0].parent(), Some(saga_started.span_id.as_str()));
    assert!(
        sagas[0].end_time
            >= ended
                .iter()
                .filter(|s| s.name.starts_with("compensate "))
                .map(|s| s.end_time)
                .max()
                .unwrap_or(0)
            && sagas[0].start_time <= first_step,
        "the saga span covers its steps and its compensations"
    );

    stack.stop().await;
    let mut service = otelite.service;
    tokio::task::spawn_blocking(move || service.terminate(Duration::from_secs(10)))
        .await
        .expect("join")
        .expect("terminate");
}
