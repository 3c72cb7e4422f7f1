use super::*;
use checkout_shared::messages::{CheckoutRequested, LineItem};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

const POLICY: Policy = Policy { max_attempts: 3 };

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

fn no(reason: &str) -> Outcome {
    Outcome::StepFailed {
        reason: reason.into(),
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
    let declined = reply(&state, no("card declined"));
    assert_eq!(
        declined.finished.as_ref().map(|f| f.result.clone()),
        Some(Err("card declined".into()))
    );
    let state = declined.state;
    assert_eq!(
        (state.status, state.step(), state.phase),
        (Status::Compensating, Step::Inventory, Phase::Undo)
    );
    let state = reply(&state, ok()).state;
    assert_eq!(state.status, Status::Compensated);
    assert_eq!(state.failure.as_deref(), Some("card declined"));
}

#[test]
fn a_failure_at_the_first_step_has_nothing_to_undo() {
    let t = reply(&SagaState::start(data()).state, no("out of stock"));
    assert_eq!(t.state.status, Status::Compensated);
    assert!(!t.send);
}

#[test]
fn a_timed_out_step_is_resent_then_undone_itself() {
    let mut state = reply(&SagaState::start(data()).state, ok()).state;
    let resent = state.next(&Input::Timeout, POLICY).unwrap();
    assert!(resent.send && !resent.started);
    assert_eq!(
        resent.state.msg_id(Uuid::nil()),
        format!("{}.r1", state.msg_id(Uuid::nil())),
        "a deadline re-sends under a new id, so JetStream's duplicate window cannot drop it"
    );
    state = resent.state.next(&Input::Timeout, POLICY).unwrap().state;
    state = state.next(&Input::Timeout, POLICY).unwrap().state;
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
    assert_eq!(ended.next(&Input::Timeout, POLICY), None);
}

#[test]
fn an_undo_without_reply_gets_stuck_and_an_operator_can_retry() {
    let mut state = reply(
        &reply(&SagaState::start(data()).state, ok()).state,
        no("declined"),
    )
    .state;
    for _ in 0..POLICY.max_attempts {
        state = state.next(&Input::Timeout, POLICY).unwrap().state;
    }
    assert_eq!(state.status, Status::Stuck);
    let retried = state.next(&Input::OperatorRetry, POLICY).unwrap();
    assert_eq!(retried.state.status, Status::Compensating);
    assert_ne!(
        retried.state.msg_id(Uuid::nil()),
        state.msg_id(Uuid::nil()),
        "sent afresh"
    );
    assert_eq!(
        reply(&retried.state, ok()).state.status,
        Status::Compensated
    );
}

/// A fake world of idempotent workers: effects keyed by action, tombstones for undos that
/// come first, exactly as the real handlers behave.
#[derive(Default)]
struct World {
    effects: BTreeSet<Step>,
    tombstones: BTreeSet<Step>,
    replies: BTreeMap<(Step, Phase), Outcome>,
    applied: BTreeMap<(Step, Phase), u32>,
}

impl World {
    fn deliver(&mut self, step: Step, phase: Phase, refuse: Option<Step>) -> Outcome {
        if let Some(stored) = self.replies.get(&(step, phase)) {
            return stored.clone();
        }
        *self.applied.entry((step, phase)).or_default() += 1;
        let outcome = match phase {
            Phase::Do if self.tombstones.contains(&step) || refuse == Some(step) => no("no"),
            Phase::Do => {
                self.effects.insert(step);
                ok()
            }
            Phase::Undo => {
                if !self.effects.remove(&step) {
                    self.tombstones.insert(step);
                }
                ok()
            }
        };
        self.replies.insert((step, phase), outcome.clone());
        outcome
    }
}

#[derive(Debug, Clone)]
enum Chaos {
    Deliver,
    LoseCommand,
    LoseReply,
    DuplicateOldReply(usize),
    Timeout,
}

fn chaos() -> impl Strategy<Value = Chaos> {
    prop_oneof![
        4 => Just(Chaos::Deliver),
        1 => Just(Chaos::LoseCommand),
        1 => Just(Chaos::LoseReply),
        1 => (0usize..8).prop_map(Chaos::DuplicateOldReply),
        1 => Just(Chaos::Timeout),
    ]
}

proptest! {
    /// For any failure point and any pattern of lost commands, duplicate replies and
    /// timeouts, a saga ends completed or fully compensated, and no effect happens twice.
    #[test]
    fn a_saga_always_ends_whole(
        refuse in prop::option::of(prop::sample::select(Step::ALL.to_vec())),
        script in prop::collection::vec(chaos(), 0..40),
    ) {
        let policy = POLICY;
        let mut world = World::default();
        let mut state = SagaState::start(data()).state;
        let mut in_flight = true;
        let mut old_replies: Vec<Input> = Vec::new();
        let feed = |state: &mut SagaState, input: Input| {
            if let Some(t) = state.next(&input, policy) {
                *state = t.state;
                return t.send;
            }
            false
        };
        let steps = script.into_iter().chain(std::iter::repeat_n(Chaos::Deliver, 40));
        for action in steps {
            if state.status == Status::Stuck {
                // What an operator does with a stuck saga.
                in_flight = feed(&mut state, Input::OperatorRetry);
                continue;
            }
            if !state.status.is_active() { break; }
            match action {
                Chaos::Deliver if in_flight => {
                    let outcome = world.deliver(state.step(), state.phase, refuse);
                    let input = Input::Reply { step: state.step(), phase: state.phase, outcome };
                    old_replies.push(input.clone());
                    in_flight = feed(&mut state, input);
                }
                Chaos::Deliver | Chaos::Timeout => in_flight = feed(&mut state, Input::Timeout) || in_flight,
                Chaos::LoseCommand => in_flight = false,
                Chaos::LoseReply if in_flight => {
                    // The worker acted, but its reply never arrives.
                    world.deliver(state.step(), state.phase, refuse);
                    in_flight = false;
                }
                Chaos::LoseReply => {}
                Chaos::DuplicateOldReply(i) => {
                    if let Some(input) = old_replies.get(i).cloned()
                        && feed(&mut state, input)
                    {
                        in_flight = true;
                    }
                }
            }
        }
        prop_assert!(matches!(state.status, Status::Completed | Status::Compensated), "{:?}", state.status);
        prop_assert!(world.applied.values().all(|n| *n == 1), "an effect happened twice");
        match state.status {
            Status::Completed => prop_assert_eq!(world.effects.len(), 3),
            _ => prop_assert!(world.effects.is_empty(), "left behind: {:?}", world.effects),
        }
        prop_assert!(refuse.is_none() || state.status == Status::Compensated);
    }
}
