//! The orchestrator killed mid-saga: the saga finishes after a restart, and its trace is
//! still one tree whose saga span covers it.

use crate::support::{Options, Stack, request, trace_with};
use checkout_harness::trace_check::check_tree;
use checkout_shared::Step;
use checkout_shared::messages::LifecycleKind;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn unix_nanos() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orchestrator_killed_between_two_steps_finishes_the_saga_after_a_restart() {
    let options = Options {
        env: vec![("payment", "WORKER_LATENCY_MS", "2500".into())],
        ..Options::default()
    };
    let mut stack = Stack::start(options).await;
    let client = stack.client().await;
    let checkout = request("cust-crash", "tok_visa", &[("SKU-MUG", 1)], 1_500);
    let mut events = client.follow(checkout.checkout_id);
    let trace_id = client.publish(&checkout).await.unwrap();
    // Wait for the first step to finish: the charge is then in the payment worker's hands.
    loop {
        let event = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .unwrap()
            .unwrap();
        if event.kind == LifecycleKind::Step && event.step == Some(Step::Inventory) {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed_at = unix_nanos();
    stack.service("orchestrator").kill();
    // Longer than the charge takes (2.5 s), so its reply waits for the new orchestrator.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let restarted_at = unix_nanos();
    stack.service("orchestrator").restart().unwrap();
    let last = client
        .wait(
            checkout.checkout_id,
            events,
            Duration::from_secs(60),
            |_| {},
        )
        .await;
    assert_eq!(last.map(|e| e.kind), Some(LifecycleKind::Completed));
    assert_eq!(
        stack.ledger(checkout.checkout_id).await.len(),
        1,
        "charged once"
    );

    // The confirmation's step span, sent once the checkout completed, ends the trace.
    let spans = trace_with(&trace_id, "step notification.send").await;
    let problems = check_tree(&spans);
    assert!(
        problems.is_empty(),
        "trace is not whole after the crash: {problems:#?}"
    );
    let saga = spans.iter().find(|s| s.name == "saga checkout").unwrap();
    let saga_started = spans
        .iter()
        .find(|s| s.name == "saga checkout started")
        .unwrap();
    let steps: Vec<_> = spans
        .iter()
        .filter(|s| s.name.starts_with("step ") && !s.name.ends_with(" started"))
        .collect();
    assert_eq!(steps.len(), 4, "{steps:#?}");
    for step in &steps {
        let started_name = format!("{} started", step.name);
        let started = spans.iter().find(|s| s.name == started_name).unwrap();
        assert_eq!(step.parent_span_id.as_ref(), Some(&started.span_id));
        assert_eq!(started.parent_span_id.as_ref(), Some(&saga_started.span_id));
        if step.name == "step notification.send" {
            // Fire-and-forget: it starts as the saga ends and may outlast it.
            continue;
        }
        assert!(
            saga.start_unix_nanos <= step.start_unix_nanos
                && step.end_unix_nanos <= saga.end_unix_nanos,
            "the saga span covers {}",
            step.name
        );
    }
    let charge = steps
        .iter()
        .find(|s| s.name == "step payment.charge")
        .unwrap();
    // Begun by the orchestrator that was killed, ended by the one that replaced it: without
    // the crash the charge's reply (2.5 s) would have ended it before the restart (4 s).
    assert!(
        charge.start_unix_nanos < killed_at && charge.end_unix_nanos > restarted_at,
        "the charge step spans the crash: {} .. {} vs killed {killed_at}, restarted {restarted_at}",
        charge.start_unix_nanos,
        charge.end_unix_nanos
    );
    stack.stop().await;
}
