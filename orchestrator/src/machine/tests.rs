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

fn start() -> Transition {
    SagaState::start(PlanId::CURRENT, data())
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
    let mut state = start().state;
    for _ in 0..3 {
        state = reply(&state, ok()).state;
    }
    assert_eq!(state.status, SagaStatus::Completed);
    assert!(state.data.reference(Step::Order).is_some());
}

#[test]
fn a_declined_payment_releases_the_stock_only() {
    let state = reply(&start().state, ok()).state;
    let declined = reply(&state, no(RefusalCode::CardDeclined, "card declined"));
    assert_eq!(
        declined.finished.as_ref().map(|f| f.result.clone()),
        Some(Err("card_declined: card declined".into()))
    );
    let state = declined.state;
    assert_eq!(
        (state.status, state.step(), state.phase),
        (SagaStatus::Compensating, Step::Inventory, Phase::Undo)
    );
    let state = reply(&state, ok()).state;
    assert_eq!(state.status, SagaStatus::Compensated);
    assert_eq!(
        state.failure.as_deref(),
        Some("card_declined: card declined")
    );
}

#[test]
fn a_failure_at_the_first_step_has_nothing_to_undo() {
    let t = reply(&start().state, no(RefusalCode::OutOfStock, "out of stock"));
    assert_eq!(t.state.status, SagaStatus::Failed, "nothing to compensate");
    assert!(!t.send);
    assert_eq!(t.state.failure_step, Some(Step::Inventory));
    assert_eq!(
        t.state.failure_code.map(|c| c.as_str()),
        Some("out_of_stock")
    );
}

#[test]
fn a_timed_out_step_is_resent_then_undone_itself() {
    let mut state = reply(&start().state, ok()).state;
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
        (SagaStatus::Compensating, Step::Payment, Phase::Undo)
    );
}

#[test]
fn stale_and_duplicate_replies_change_nothing() {
    let start = start().state;
    let state = reply(&start, ok()).state;
    let stale = Input::Reply {
        step: Step::Inventory,
        phase: Phase::Do,
        outcome: ok(),
    };
    assert_eq!(state.next(&stale, POLICY), None);
    let ended = SagaState {
        status: SagaStatus::Completed,
        ..state
    };
    assert_eq!(ended.next(&timeout(1), POLICY), None);
}

#[test]
fn an_undo_is_never_given_up_flagged_stuck_once_and_an_operator_can_hurry_it() {
    let mut state = reply(
        &reply(&start().state, ok()).state,
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
        assert_eq!(t.state.status, SagaStatus::Compensating, "not yet flagged");
        state = t.state;
    }
    let flagged = state.next(&timeout(300), POLICY).unwrap();
    assert_eq!(flagged.state.status, SagaStatus::Stuck);
    assert!(flagged.send, "flagged, and still re-sent");
    assert_eq!(
        flagged
            .log
            .iter()
            .filter(|(_, e, _)| *e == LogEvent::Stuck)
            .count(),
        1
    );
    let again = flagged.state.next(&timeout(400), POLICY).unwrap();
    assert!(again.send);
    assert!(
        again.log.iter().all(|(_, e, _)| *e != LogEvent::Stuck),
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
    assert_eq!(done.status, SagaStatus::Compensated, "ends by itself");
}

#[test]
fn a_failed_undo_reply_is_not_a_decision() {
    let state = reply(
        &reply(&start().state, ok()).state,
        no(RefusalCode::CardDeclined, "declined"),
    )
    .state;
    let t = reply(&state, no(RefusalCode::Undeliverable, "undeliverable"));
    assert_eq!(t.state.status, SagaStatus::Compensating);
    assert!(t.finished.is_none(), "the undo did not end");
    assert!(
        !t.send && t.rearm,
        "tried again at the next deadline, not in a loop"
    );
    // Until then nothing new was sent, so the saga names no command it has not sent (one
    // the reply gate would take an answer to).
    assert_eq!(
        t.state.command_id(Uuid::nil()),
        state.command_id(Uuid::nil())
    );
    // Sent again at the deadline under an id of its own, which JetStream does not drop, and
    // whose reply is answered like the first's.
    let resent = t.state.next(&timeout(1), POLICY).unwrap();
    assert!(resent.send);
    assert_ne!(resent.state.msg_id(Uuid::nil()), state.msg_id(Uuid::nil()));
    let (saga, undo) = (Uuid::nil(), (Step::Inventory, Phase::Undo));
    for sent in [state.command_id(saga), resent.state.command_id(saga)] {
        assert_eq!(
            resent.state.answers(saga, undo.0, undo.1, &sent),
            Ok(()),
            "{sent}"
        );
    }
}

#[test]
fn an_operator_retry_only_applies_to_a_flagged_saga() {
    let state = reply(&start().state, ok()).state;
    assert_eq!(state.next(&Input::OperatorRetry, POLICY), None);
}

/// A saga whose three blocking steps succeeded: completed, its confirmation just sent.
fn completed() -> Transition {
    let mut state = start().state;
    for _ in 0..2 {
        state = reply(&state, ok()).state;
    }
    reply(&state, ok())
}

#[test]
fn completing_sends_the_confirmation_without_waiting_for_it() {
    let t = completed();
    assert_eq!(t.state.status, SagaStatus::Completed);
    assert!(!t.state.status.is_active(), "the checkout has ended");
    assert!(t.state.follow_up);
    assert_eq!(t.state.step(), Step::Notification);
    assert!(t.send && t.started, "sent now, under a span of its own");
    assert!(t.log.contains(&(None, LogEvent::Completed, None)));
}

#[test]
fn a_failed_confirmation_is_recorded_and_never_compensated() {
    let t = reply(
        &completed().state,
        no(RefusalCode::NotificationFailed, "not sent after 3 attempts"),
    );
    assert_eq!(t.state.status, SagaStatus::Completed);
    assert!(!t.state.follow_up);
    assert_eq!(t.state.phase, Phase::Do, "nothing is undone");
    assert!(!t.send && !t.rearm);
    assert_eq!(
        t.finished.map(|f| f.result),
        Some(Err("notification_failed: not sent after 3 attempts".into()))
    );
    // A late copy of the reply changes nothing.
    let again = Input::Reply {
        step: Step::Notification,
        phase: Phase::Do,
        outcome: ok(),
    };
    assert_eq!(t.state.next(&again, POLICY), None);
}

#[test]
fn an_unanswered_confirmation_is_resent_within_its_bound_then_given_up() {
    let mut state = completed().state;
    for attempt in 1..POLICY.max_attempts {
        let t = state.next(&timeout(10), POLICY).expect("re-sent");
        assert!(t.send);
        assert_eq!(t.state.attempts, attempt);
        state = t.state;
    }
    let t = state.next(&timeout(10), POLICY).expect("given up");
    assert_eq!(t.state.status, SagaStatus::Completed, "the checkout stands");
    assert!(!t.send && !t.state.follow_up);
    assert!(t.finished.is_some_and(|f| f.result.is_err()));
    assert_eq!(
        t.state.next(&timeout(10), POLICY),
        None,
        "no more deadlines"
    );
}

/// The command a state sends now.
fn command_of(state: &SagaState) -> Option<(Step, Phase)> {
    crate::saga::command(state.step(), state.phase, &state.data).map(|c| c.step_phase())
}

#[test]
fn a_saga_written_mid_compensation_by_the_release_before_plans_resumes_with_its_refund() {
    // What the previous release stored for a saga undoing its payment: a position in its one
    // list of steps (inventory, payment, order, notification) and no plan.
    let mut stored = serde_json::to_value(reply(&start().state, ok()).state).unwrap();
    let map = stored.as_object_mut().unwrap();
    map.remove("plan");
    map.remove("step");
    map.insert("cursor".into(), 1.into());
    map.insert("phase".into(), "undo".into());
    map.insert("status".into(), "compensating".into());
    let state: SagaState = serde_json::from_value(stored.clone()).unwrap();
    assert_eq!(
        (state.plan, state.step(), state.phase),
        (PlanId::CheckoutV1, Step::Payment, Phase::Undo)
    );
    let resent = state.next(&timeout(1), POLICY).unwrap();
    assert!(resent.send);
    assert_eq!(
        command_of(&resent.state),
        Some((Step::Payment, Phase::Undo)),
        "its refund"
    );
    let released = reply(&state, ok()).state;
    assert_eq!(command_of(&released), Some((Step::Inventory, Phase::Undo)));

    // A position its plan does not have is refused, not guessed at.
    stored["cursor"] = 9.into();
    let err = serde_json::from_value::<SagaState>(stored).unwrap_err();
    assert!(err.to_string().contains("past the end"), "{err}");
}

#[test]
fn a_saga_finishes_under_the_plan_it_started_with_when_a_newer_plan_gained_a_step() {
    // Started under a plan without the order step; the release now runs a plan that has it
    // before payment, at the position the saga's payment had.
    let state = SagaState::start(PlanId::TestBeforeOrder, data()).state;
    assert_ne!(
        PlanId::TestBeforeOrder.steps()[1],
        PlanId::TestWithOrderFirst.steps()[1]
    );
    let charging = reply(&state, ok()).state;
    assert_eq!(charging.step(), Step::Payment);
    // Mid-compensation (the charge timed out), stored and read back by the new release.
    let mut undoing = charging.clone();
    for secs in 1..=POLICY.max_attempts {
        undoing = undoing
            .next(&timeout(u64::from(secs)), POLICY)
            .unwrap()
            .state;
    }
    let undoing: SagaState =
        serde_json::from_value(serde_json::to_value(&undoing).unwrap()).unwrap();
    assert_eq!(
        command_of(&undoing),
        Some((Step::Payment, Phase::Undo)),
        "its refund"
    );
    let next = reply(&undoing, ok()).state;
    assert_eq!(
        command_of(&next),
        Some((Step::Inventory, Phase::Undo)),
        "no cancel of an order its plan never made"
    );
    // And forwards: after the charge the saga completes, the order step is not its.
    let done = reply(&charging, ok()).state;
    assert_eq!(done.status, SagaStatus::Completed);
    assert_eq!(command_of(&done), Some((Step::Notification, Phase::Do)));
}
