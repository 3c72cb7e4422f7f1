//! Deadlines: actions re-sent then undone, undos never given up, confirmations bounded.

use crate::support::*;
use checkout_shared::LogEvent;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_without_reply_is_undone_and_an_undo_without_reply_is_flagged_but_never_given_up() {
    let (nats, db, pool, js) = setup().await;
    let client = nats.admin_client().await.unwrap();
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
        if status == Some(SagaStatus::Stuck) {
            break;
        }
    }
    assert_eq!(status, Some(SagaStatus::Stuck), "flagged for an operator");
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
        Some(SagaStatus::Stuck),
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
    assert_eq!(
        status,
        Some(SagaStatus::Compensating),
        "the flag is cleared"
    );
    let status = executor
        .apply(saga_id, reply(Step::Inventory, ok))
        .await
        .unwrap();
    assert_eq!(status, Some(SagaStatus::Compensated));
    assert!(store::stuck(&pool).await.unwrap().is_empty());
    pool.close().await;
    db.drop_db().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_confirmation_is_resent_by_its_deadline_then_given_up_and_the_checkout_stands()
 {
    let (_nats, _db, pool, js) = setup().await;
    let client = _nats.admin_client().await.unwrap();
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
        Some(SagaStatus::Completed),
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
    assert_eq!(status, Some(SagaStatus::Completed), "the checkout stands");
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
        (last.step.as_deref(), last.event),
        (Some("notification"), LogEvent::Failed)
    );
    assert!(
        log.iter().all(|e| e.event != LogEvent::UndoStarted),
        "nothing undone"
    );
}

/// Two orchestrators on one database both find a saga's deadline due and time it out at
/// once: each re-reads the saga, checks it is still due and writes only over the version
/// it read (a compare-and-swap, no lock held), so one of them writes the timeout
/// and re-sends the command, and the other finds it no longer due: one transition, one
/// re-send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_due_for_two_orchestrators_is_claimed_once() {
    let (nats, db, pool, js) = setup().await;
    let connect = || async {
        let client = nats.admin_client().await.unwrap();
        Executor::new(pool.clone(), client, SpanFlusher::disabled(), FAST).0
    };
    let (a, b) = (connect().await, connect().await);
    let data = data();
    let saga_id = data.request.checkout_id;
    assert!(a.start(data, &opentelemetry::Context::new()).await.unwrap());
    let version = || async { store::get(&pool, saga_id).await.unwrap().unwrap().version };
    let before = version().await;
    // Both see it due (bounded: the step's deadline is 300 ms away).
    let mut due = false;
    for _ in 0..100 {
        let (due_a, due_b) = (a.due(10).await.unwrap(), b.due(10).await.unwrap());
        if due_a.contains(&saga_id) && due_b.contains(&saga_id) {
            due = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(due, "the saga never fell due for both");
    let (by_a, by_b) = tokio::join!(a.time_out(saga_id), b.time_out(saga_id));
    assert_eq!(by_a.unwrap(), Some(SagaStatus::Running));
    assert_eq!(by_b.unwrap(), Some(SagaStatus::Running));
    assert_eq!(version().await, before + 1, "one timeout written, not two");
    let reserve = format!("{saga_id}.inventory.do");
    assert_eq!(
        commands(&js, "checkout.cmd.inventory.reserve").await,
        vec![reserve.clone(), format!("{reserve}.r1")],
        "one re-send, by whichever orchestrator wrote the timeout"
    );
    pool.close().await;
    db.drop_db().await.unwrap();
}
