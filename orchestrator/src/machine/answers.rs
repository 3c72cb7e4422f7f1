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
//!    sent: a generation and re-send the saga recorded? ──no──▶ reply_unsent
//!                                        │ yes
//!                                        ▼
//!                                     applied
//! ```
//!
//! A command id was sent when it is at or before the saga's current one in the attempt
//! series, generation first: the saga recorded every re-send up to its `attempts` in its
//! `generation`, and earlier generations before that. A reply to an earlier re-send of the
//! command the saga waits for is as good as the latest one's (the worker decides once per
//! action key and answers every copy with that decision), so it is applied; one naming a
//! re-send or generation beyond the recorded ones answers nothing the saga sent.

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
        let sent = (self.generation, self.attempts);
        if (command.generation, command.attempt) > sent {
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
