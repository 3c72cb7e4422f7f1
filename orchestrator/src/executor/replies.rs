//! Workers' replies: applied only when they answer a command their saga sent and waits for
//! ([`crate::machine::SagaState::answers`]), judged on the row the write is conditional on, so a reply is
//! weighed against the saga as it is, not as some process last saw it.

use super::{ExecError, Executor};
use crate::machine::{Input, ReplyRefusal, SagaStatus};
use crate::ports::{SagaStore, Transport};
use checkout_shared::CommandId;
use checkout_shared::messages::Reply;
use chrono::{DateTime, Utc};

/// What became of a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answered {
    /// It answered the command its saga waits for; the saga's status afterwards.
    Applied(SagaStatus),
    /// It answered nothing the saga sent and waits for: never applied.
    Refused {
        /// Why, as a stable code.
        refusal: ReplyRefusal,
        /// Why, in words: what the reply named and what the saga waits for.
        detail: String,
    },
}

impl<S: SagaStore, T: Transport> Executor<S, T> {
    /// Applies `reply`, which names `command` as the command it answers, if that is a command
    /// its saga sent and waits for; otherwise refuses it, changing nothing.
    pub async fn apply_reply(
        &self,
        reply: Reply,
        command: &CommandId,
    ) -> Result<Answered, ExecError> {
        self.apply_reply_at(reply, command, Utc::now()).await
    }

    /// [`Executor::apply_reply`] as of `now` (a test's clock).
    pub async fn apply_reply_at(
        &self,
        reply: Reply,
        command: &CommandId,
        now: DateTime<Utc>,
    ) -> Result<Answered, ExecError> {
        let (saga_id, step, phase) = (reply.saga_id, reply.step, reply.phase);
        let input = Input::Reply {
            step,
            phase,
            outcome: reply.outcome,
        };
        let gate = |state: &crate::machine::SagaState| {
            state.answers(saga_id, step, phase, command).is_ok()
        };
        let judged = self.apply_gated(saga_id, input, now, gate).await?;
        let Some((before, after)) = judged else {
            return Ok(Answered::Refused {
                refusal: ReplyRefusal::ReplyUnknownSaga,
                detail: format!(
                    "{}: a {step} {phase} reply naming command {command}; no saga {saga_id}",
                    ReplyRefusal::ReplyUnknownSaga
                ),
            });
        };
        if let Some(status) = after {
            return Ok(Answered::Applied(status));
        }
        let state = &before.state;
        // The gate let it through and the machine still had nothing to do: only a reply the
        // saga does not wait for does that, so it is refused as such.
        let refusal = state
            .answers(saga_id, step, phase, command)
            .err()
            .unwrap_or(ReplyRefusal::ReplyNotAwaited);
        let detail = state.refusal_detail(refusal, step, phase, command);
        Ok(Answered::Refused { refusal, detail })
    }
}
