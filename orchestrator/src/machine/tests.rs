use super::*;
use checkout_shared::messages::{CheckoutRequested, LineItem, Refusal, RefusalCode};
use std::collections::BTreeSet;
use std::time::Duration;
use uuid::Uuid;

const POLICY: Policy = Policy {
    max_attempts: 3,
    stuck_after: Duration::from_secs(300),
};

/// A deadline that passed `secs` seconds after the current step began.
fn timeout(secs: u64) -> Input {
    Input::Timeout {
        waited: Duration::from_secs(secs),
    }
}

fn data() -> SagaData {
    SagaData::new(CheckoutRequested {
        checkout_id: Uuid::nil(),
        customer_id: "c".into(),
        items: vec![LineItem {
            sku: "A".into(),
            quantity: 1,
            unit_price_cents: None,
        }],
        payment_token: "t".into(),
        amount_cents: 100,
        currency: "EUR".into(),
    })
}

fn ok() -> Outcome {
    Outcome::StepSucceeded {
        reference: Some(Uuid::new_v4()),
    }
}

fn no(code: RefusalCode, message: &str) -> Outcome {
    Outcome::StepFailed {
        reason: Refusal::new(code, message),
    }
}

fn reply(state: &SagaState, outcome: Outcome) -> Transition {
    let input = Input::Reply {
        step: state.step(),
        phase: state.phase,
        outcome,
    };
    state
        .next(&input, POLICY)
        .expect("a current reply changes the saga")
}

#[test]
fn every_step_succeeding_completes() {
    let mut state = SagaState::start(data()).state;
    for _ in 0..3 {
        state = reply(&state, ok()).state;
    }
    assert_eq!(state.status, Status::Completed);
    assert!(state.data.order_id.is_some());
}

#[test]
fn a_declined_payment_releases_the_stock_only() {
    let state = reply(&SagaState::start(data()).state, ok()).state;
    let declined = reply(&state, no(RefusalCode::CardDeclined, "card declined"));
    assert_eq!(
        declined.finished.as_ref().map(|f| f.result.clone()),
        Some(Err("card_declined: card declined".into()))
    );
    let state = declined.state;
    assert_eq!(
        (state.status, state.step(), state.phase),
        (Status::Compensating, Step::Inventory, Phase::Undo)
    );
    let state = reply(&state, ok()).state;
    assert_eq!(state.status, Status::Compensated);
    assert_eq!(
        state.failure.as_deref(),
        Some("card_declined: card declined")
    );
}

#[test]
fn a_failure_at_the_first_step_has_nothing_to_undo() {
    let t = reply(
        &SagaState::start(data()).state,
        no(RefusalCode::OutOfStock, "out of stock"),
    );
    assert_eq!(t.state.status, Status::Compensated);
    assert!(!t.send);
}

#[test]
fn a_timed_out_step_is_resent_then_undone_itself() {
    let mut state = reply(&SagaState::start(data()).state, ok()).state;
    let resent = state.next(&timeout(1), POLICY).unwrap();
    assert!(resent.send && !resent.started);
    assert_eq!(
        resent.state.msg_id(Uuid::nil()),
        format!("{}.r1", state.msg_id(Uuid::nil())),
        "a deadline re-sends under a new id, so JetStream's duplicate window cannot drop it"
    );
    state = resent.state.next(&timeout(2), POLICY).unwrap().state;
    state = state.next(&timeout(4), POLICY).unwrap().state;
    // The charge may have happened: refund it, then release.
    assert_eq!(
        (state.status, state.step(), state.phase),
        (Status::Compensating, Step::Payment, Phase::Undo)
    );
}

#[test]
fn stale_and_duplicate_replies_change_nothing() {
    let start = SagaState::start(data()).state;
    let state = reply(&start, ok()).state;
    let stale = Input::Reply {
        step: Step::Inventory,
        phase: Phase::Do,
        outcome: ok(),
    };
    assert_eq!(state.next(&stale, POLICY), None);
    let ended = SagaState {
        status: Status::Completed,
        ..state
    };
    assert_eq!(ended.next(&timeout(1), POLICY), None);
}

#[test]
fn an_undo_is_never_given_up_flagged_stuck_once_and_an_operator_can_hurry_it() {
    let mut state = reply(
        &reply(&SagaState::start(data()).state, ok()).state,
        no(RefusalCode::CardDeclined, "declined"),
    )
    .state;
    let mut ids = BTreeSet::new();
    // Far more deadlines than an action gets: every one re-sends the undo, under a new id.
    for waited in 1..50 {
        let t = state.next(&timeout(waited), POLICY).unwrap();
        assert!(t.send, "re-sent at deadline {waited}");
        assert!(t.finished.is_none(), "the undo is not over");
        assert!(ids.insert(t.state.msg_id(Uuid::nil())));
        assert_eq!(t.state.status, Status::Compensating, "not yet flagged");
        state = t.state;
    }
    let flagged = state.next(&timeout(300), POLICY).unwrap();
    assert_eq!(flagged.state.status, Status::Stuck);
    assert!(flagged.send, "flagged, and still re-sent");
    assert_eq!(
        flagged.log.iter().filter(|(_, e, _)| *e == "stuck").count(),
        1
    );
    let again = flagged.state.next(&timeout(400), POLICY).unwrap();
    assert!(again.send);
    assert!(
        again.log.iter().all(|(_, e, _)| *e != "stuck"),
        "flagged once"
    );
    let retried = again.state.next(&Input::OperatorRetry, POLICY).unwrap();
    assert!(retried.send);
    assert_ne!(
        retried.state.msg_id(Uuid::nil()),
        again.state.msg_id(Uuid::nil()),
        "sent afresh"
    );
    let done = reply(&retried.state, ok()).state;
    assert_eq!(done.status, Status::Compensated, "ends by itself");
}

#[test]
fn a_failed_undo_reply_is_not_a_decision() {
    let state = reply(
        &reply(&SagaState::start(data()).state, ok()).state,
        no(RefusalCode::CardDeclined, "declined"),
    )
    .state;
    let t = reply(&state, no(RefusalCode::Undeliverable, "undeliverable"));
    assert_eq!(t.state.status, Status::Compensating);
    assert!(t.finished.is_none(), "the undo did not end");
    assert!(
        !t.send && t.rearm,
        "tried again at the next deadline, not in a loop"
    );
    assert_ne!(t.state.msg_id(Uuid::nil()), state.msg_id(Uuid::nil()));
}

#[test]
fn an_operator_retry_only_applies_to_a_flagged_saga() {
    let state = reply(&SagaState::start(data()).state, ok()).state;
    assert_eq!(state.next(&Input::OperatorRetry, POLICY), None);
}
