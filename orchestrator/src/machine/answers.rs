//! Whether a reply answers a command the saga sent: the one check every reply passes before
//! it may change a saga.
//!
//! ```text
//!  reply (step, phase, command id) ─▶ saga waits for anything? ──no──▶ reply_saga_ended
//!                                        │ yes
//!                                        ▼
//!                     the step and phase it waits for? ──no──▶ reply_not_awaited
//!                                        │ yes
//!                                        ▼
//!          command id of this saga, step and phase? ──no──▶ reply_key_mismatch
//!                                        │ yes
//!                                        ▼
//!              of the saga's current generation? ──older──▶ reply_superseded
//!                                        │ yes       ──newer──▶ reply_unsent
//!                                        ▼
//!          a re-send the saga recorded (≤ attempts)? ──no──▶ reply_unsent
//!                                        │ yes
//!                                        ▼
//!                                     applied
//! ```
//!
//! The command ids a saga has sent for the step and phase it waits for are exactly those of
//! its current `generation` with an attempt up to its `attempts`: the first send of a
//! generation is attempt 0, each deadline's re-send the next attempt, and a generation
//! begins only with a send (an operator's retry sends at once, attempt 0), so no attempt
//! number is skipped and none counted ahead of its send. A reply to an earlier re-send in the
//! current generation is as good as the latest one's (the worker decides once per action key
//! and answers every copy with that decision), so it is applied.
//!
//! A reply naming an earlier generation is refused, although the saga may well have sent
//! that command: the attempt numbers of an earlier generation are not recorded, so "sent" can
//! no longer be told from "forged" (the state at generation 1, attempt 0 says nothing of how
//! many re-sends generation 0 had). Refusing it strands nothing: the current generation's
//! command has been sent, and the worker answers it from the decision it stored for the
//! action key, under the current command's id; if that send is lost, the deadline re-sends.

use super::SagaState;
use checkout_shared::{CommandId, Phase, Step};
use uuid::Uuid;

pub use checkout_shared::ReplyRefusal;

impl SagaState {
    /// Whether a reply for `step` and `phase` of saga `saga_id`, naming `command`, answers a
    /// command this saga sent and waits for; otherwise why not.
    pub fn answers(
        &self,
        saga_id: Uuid,
        step: Step,
        phase: Phase,
        command: &CommandId,
    ) -> Result<(), ReplyRefusal> {
        let Some(waiting) = self.waiting_for() else {
            return Err(ReplyRefusal::ReplySagaEnded);
        };
        if (waiting.step, waiting.phase) != (step, phase) {
            return Err(ReplyRefusal::ReplyNotAwaited);
        }
        if (command.saga_id, command.step, command.phase) != (saga_id, step, phase) {
            return Err(ReplyRefusal::ReplyKeyMismatch);
        }
        if command.generation < self.generation {
            return Err(ReplyRefusal::ReplySuperseded);
        }
        if command.generation > self.generation || command.attempt > self.attempts {
            return Err(ReplyRefusal::ReplyUnsent);
        }
        Ok(())
    }

    /// Why a reply was not applied, in words for the log line (the code is for metrics).
    pub fn refusal_detail(
        &self,
        refusal: ReplyRefusal,
        step: Step,
        phase: Phase,
        command: &CommandId,
    ) -> String {
        let waits = match self.waiting_for() {
            Some(w) => format!(
                "the saga waits for {} {} under {}",
                w.step,
                w.phase,
                self.command_id(command.saga_id)
            ),
            None => format!("the saga has ended ({})", self.status),
        };
        format!("{refusal}: a {step} {phase} reply naming command {command}; {waits}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::{Input, Policy, SagaStatus};
    use crate::saga::{PlanId, SagaData};
    use checkout_shared::messages::{CheckoutRequested, LineItem, Outcome};
    use std::time::Duration;

    const POLICY: Policy = Policy {
        max_attempts: 3,
        stuck_after: Duration::from_secs(60),
    };

    fn started() -> (Uuid, SagaState) {
        let saga_id = Uuid::from_u128(1);
        let data = SagaData::new(CheckoutRequested {
            checkout_id: saga_id,
            customer_id: "c".into(),
            items: vec![LineItem {
                sku: "SKU-A".into(),
                quantity: 1,
                unit_price_cents: None,
            }],
            payment_token: "tok".into(),
            amount_cents: 10,
            currency: "EUR".into(),
        });
        (saga_id, SagaState::start(PlanId::CURRENT, data).state)
    }

    fn id(saga_id: Uuid, step: Step, phase: Phase, generation: u32, attempt: u32) -> CommandId {
        CommandId {
            saga_id,
            step,
            phase,
            generation,
            attempt,
        }
    }

    #[test]
    fn the_current_command_and_its_earlier_re_sends_are_answered_and_nothing_else() {
        let (saga, mut state) = started();
        let inv = |g, r| id(saga, Step::Inventory, Phase::Do, g, r);
        assert_eq!(
            state.answers(saga, Step::Inventory, Phase::Do, &inv(0, 0)),
            Ok(())
        );
        assert_eq!(
            state.answers(saga, Step::Inventory, Phase::Do, &inv(0, 1)),
            Err(ReplyRefusal::ReplyUnsent),
            "a re-send never sent"
        );
        assert_eq!(
            state.answers(saga, Step::Inventory, Phase::Do, &inv(1, 0)),
            Err(ReplyRefusal::ReplyUnsent),
            "a generation never sent"
        );
        let timeout = Input::Timeout {
            waited: Duration::from_secs(1),
        };
        state = state.next(&timeout, POLICY).unwrap().state;
        assert_eq!(state.command_id(saga), inv(0, 1));
        for answered in [inv(0, 0), inv(0, 1)] {
            assert_eq!(
                state.answers(saga, Step::Inventory, Phase::Do, &answered),
                Ok(()),
                "{answered}"
            );
        }
        assert_eq!(
            state.answers(saga, Step::Payment, Phase::Do, &inv(0, 0)),
            Err(ReplyRefusal::ReplyNotAwaited)
        );
        assert_eq!(
            state.answers(
                saga,
                Step::Inventory,
                Phase::Do,
                &id(saga, Step::Payment, Phase::Do, 0, 0)
            ),
            Err(ReplyRefusal::ReplyKeyMismatch)
        );
        let other = Uuid::from_u128(2);
        assert_eq!(
            state.answers(
                saga,
                Step::Inventory,
                Phase::Do,
                &id(other, Step::Inventory, Phase::Do, 0, 0)
            ),
            Err(ReplyRefusal::ReplyKeyMismatch)
        );
    }

    fn reply(step: Step, phase: Phase, outcome: Outcome) -> Input {
        Input::Reply {
            step,
            phase,
            outcome,
        }
    }

    fn succeeded() -> Outcome {
        Outcome::StepSucceeded {
            reference: Some(Uuid::from_u128(9)),
        }
    }

    #[test]
    fn after_a_retry_sends_afresh_only_the_new_generation_is_answered() {
        let (saga, state) = started();
        let mut state = [Step::Inventory, Step::Payment]
            .into_iter()
            .fold(state, |s, step| {
                s.next(&reply(step, Phase::Do, succeeded()), POLICY)
                    .unwrap()
                    .state
            });
        let refused = Outcome::StepFailed {
            reason: checkout_shared::messages::Refusal::new(
                checkout_shared::messages::RefusalCode::OutOfStock,
                "no order",
            ),
        };
        state = state
            .next(&reply(Step::Order, Phase::Do, refused), POLICY)
            .unwrap()
            .state;
        // The refund goes unanswered: re-sent twice, the second time flagged stuck.
        for waited in [1, 61] {
            let timeout = Input::Timeout {
                waited: Duration::from_secs(waited),
            };
            state = state.next(&timeout, POLICY).unwrap().state;
        }
        assert_eq!(state.status, SagaStatus::Stuck);
        let refund = |g, r| id(saga, Step::Payment, Phase::Undo, g, r);
        assert_eq!(state.command_id(saga), refund(0, 2));
        state = state.next(&Input::OperatorRetry, POLICY).unwrap().state;
        assert_eq!(state.command_id(saga), refund(1, 0), "sent afresh, now");
        let answers =
            |state: &SagaState, command| state.answers(saga, Step::Payment, Phase::Undo, &command);
        assert_eq!(
            answers(&state, refund(1, 0)),
            Ok(()),
            "the command just sent"
        );
        // Sent in the old generation, or never (attempt 7 would pass a comparison of
        // (generation, attempt) with the current one as one tuple): either way superseded.
        for old in [refund(0, 0), refund(0, 2), refund(0, 7)] {
            assert_eq!(
                answers(&state, old),
                Err(ReplyRefusal::ReplySuperseded),
                "{old}"
            );
        }
        for unsent in [refund(1, 1), refund(2, 0)] {
            assert_eq!(
                answers(&state, unsent),
                Err(ReplyRefusal::ReplyUnsent),
                "{unsent}"
            );
        }
        let timeout = Input::Timeout {
            waited: Duration::from_secs(120),
        };
        state = state.next(&timeout, POLICY).unwrap().state;
        for sent in [refund(1, 0), refund(1, 1)] {
            assert_eq!(answers(&state, sent), Ok(()), "{sent}");
        }
        // The refund's answer, under the new generation's id, moves the saga on; the next
        // undo starts at attempt 0 of the generation it is in, and only that was sent.
        assert_eq!(answers(&state, refund(1, 1)), Ok(()));
        state = state
            .next(&reply(Step::Payment, Phase::Undo, succeeded()), POLICY)
            .unwrap()
            .state;
        let release = |g, r| id(saga, Step::Inventory, Phase::Undo, g, r);
        assert_eq!(state.command_id(saga), release(1, 0));
        let answers = |command| state.answers(saga, Step::Inventory, Phase::Undo, &command);
        assert_eq!(answers(release(1, 0)), Ok(()));
        assert_eq!(answers(release(0, 0)), Err(ReplyRefusal::ReplySuperseded));
        assert_eq!(answers(release(1, 1)), Err(ReplyRefusal::ReplyUnsent));
    }

    #[test]
    fn the_readme_names_every_refusal_code() {
        let readme = include_str!("../../../README.md");
        for code in <ReplyRefusal as strum::VariantArray>::VARIANTS {
            assert!(
                readme.contains(&format!("`{code}`")),
                "the README's Security section does not name {code}"
            );
        }
    }

    #[test]
    fn an_ended_saga_answers_nothing_and_the_detail_says_what_it_waited_for() {
        let (saga, state) = started();
        let refused = Input::Reply {
            step: Step::Inventory,
            phase: Phase::Do,
            outcome: Outcome::StepFailed {
                reason: checkout_shared::messages::Refusal::new(
                    checkout_shared::messages::RefusalCode::OutOfStock,
                    "none left",
                ),
            },
        };
        let ended = state.next(&refused, POLICY).unwrap().state;
        assert_eq!(ended.status, SagaStatus::Failed);
        let key = id(saga, Step::Inventory, Phase::Do, 0, 0);
        assert_eq!(
            ended.answers(saga, Step::Inventory, Phase::Do, &key),
            Err(ReplyRefusal::ReplySagaEnded)
        );
        let detail = state.refusal_detail(
            ReplyRefusal::ReplyUnsent,
            Step::Inventory,
            Phase::Do,
            &id(saga, Step::Inventory, Phase::Do, 0, 4),
        );
        assert!(detail.starts_with("reply_unsent: "), "{detail}");
        assert!(detail.contains(".inventory.do.r4"), "{detail}");
        assert!(detail.contains("waits for inventory do"), "{detail}");
    }
}
