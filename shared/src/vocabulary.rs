//! Every state word of the saga, each an enum with one text form: what the saga row's
//! `status` column, the saga log's `event` column (whose CHECK constraints are tested against
//! these enums), lifecycle events, status JSON, spans, metrics and logs all say.
//!
//! The text form comes from strum's `snake_case` and serde goes through it
//! (`SerializeDisplay`/`DeserializeFromStr`), so the wire and the database cannot spell a word
//! two ways.

use crate::messages::RefusalCode;
use serde_with::{DeserializeFromStr, SerializeDisplay};
use std::fmt;
use std::str::FromStr;

/// Derives the one text form of a state word.
macro_rules! state_word {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident,)* }) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
            ::strum::Display, ::strum::EnumString, ::strum::IntoStaticStr, ::strum::VariantArray,
            ::serde_with::SerializeDisplay, ::serde_with::DeserializeFromStr,
        )]
        #[strum(serialize_all = "snake_case")]
        pub enum $name { $($(#[$vmeta])* $variant,)* }

        impl $name {
            /// The word's one text form.
            pub fn as_str(self) -> &'static str {
                self.into()
            }
        }

        // What a database column of this word decodes through.
        impl TryFrom<String> for $name {
            type Error = ::strum::ParseError;
            fn try_from(text: String) -> Result<Self, Self::Error> {
                text.parse()
            }
        }
    };
}
pub(crate) use state_word;

state_word! {
    /// Where a saga stands (the saga row's `status`).
    pub enum SagaStatus {
        /// Doing steps.
        Running,
        /// Undoing steps after a failure.
        Compensating,
        /// Every step the checkout waits for is done.
        Completed,
        /// Every step that may have happened is undone.
        Compensated,
        /// Refused before anything that needs undoing happened.
        Failed,
        /// Compensating, but an undo has had no success for longer than the policy allows:
        /// flagged for an operator while its retries go on.
        Stuck,
        /// Refused at the door (the cart broke a rule): it never became a saga, nothing
        /// happened. Recorded apart from the sagas (the orchestrator's `saga.rejections`).
        Rejected,
    }
}

impl SagaStatus {
    /// Whether the saga is waiting for a reply to one of its steps (and so has a deadline).
    pub fn is_active(self) -> bool {
        matches!(
            self,
            SagaStatus::Running | SagaStatus::Compensating | SagaStatus::Stuck
        )
    }

    /// Whether the saga has ended (a stuck saga has not: its undo is still retried).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            SagaStatus::Completed
                | SagaStatus::Compensated
                | SagaStatus::Failed
                | SagaStatus::Rejected
        )
    }
}

state_word! {
    /// What an entry of the saga log records (the saga log's `event`).
    pub enum LogEvent {
        /// A step's action began.
        Started,
        /// A step's action took effect.
        Succeeded,
        /// A step's action was refused or went unanswered; or, without a step, the saga
        /// ended failed.
        Failed,
        /// A step's undo began.
        UndoStarted,
        /// A step's undo took effect.
        UndoFinished,
        /// An undo could not be delivered; it is sent again.
        UndoFailed,
        /// The command in hand was sent again.
        Retried,
        /// The saga completed.
        Completed,
        /// The saga ended compensated.
        Compensated,
        /// The saga was flagged stuck.
        Stuck,
    }
}

state_word! {
    /// Why the door refused a checkout request: the `reason` of the gateway's problem
    /// responses, the `Saga-Reason-Kind` header on `checkout.rejected`, the `rejection` of a
    /// `rejected` lifecycle event and the orchestrator's `saga.rejections.code`.
    pub enum RejectionCode {
        /// The body is larger than a checkout may be.
        TooLarge,
        /// The body is not the JSON of a checkout.
        Malformed,
        /// A field has a value no checkout can have.
        Invalid,
        /// The amount is not the sum of the lines.
        AmountMismatch,
        /// A line names a SKU the catalog does not list.
        UnknownSku,
        /// A line's price is not the catalog's.
        PriceMismatch,
        /// The cart's currency is not the one the catalog prices a SKU in.
        CurrencyMismatch,
    }
}

state_word! {
    /// How a step's action or undo ended.
    pub enum StepOutcome {
        /// An action took effect.
        Succeeded,
        /// An undo took effect: what the action did is undone.
        Compensated,
        /// It was refused or went unanswered.
        Failed,
    }
}

impl StepOutcome {
    /// How an action or undo that ended `ok` or not ended.
    pub fn of(phase: crate::Phase, ok: bool) -> Self {
        match (phase, ok) {
            (_, false) => StepOutcome::Failed,
            (crate::Phase::Do, true) => StepOutcome::Succeeded,
            (crate::Phase::Undo, true) => StepOutcome::Compensated,
        }
    }
}

state_word! {
    /// Why the orchestrator refused a worker's reply: never applied, acked, logged with its
    /// trace id and counted in `checkout.rejections` under this code. A reply is applied
    /// only if it answers the command its saga waits for, as the saga recorded sending it.
    pub enum ReplyRefusal {
        /// No saga has the reply's saga id: nothing ever sent its command.
        ReplyUnknownSaga,
        /// The saga has ended and waits for no reply.
        ReplySagaEnded,
        /// The saga waits for another step or phase (a reply for another step, for the
        /// action of a step being undone, or an old one after the saga moved on).
        ReplyNotAwaited,
        /// The right step and phase, but a command id the saga never sent (a re-send or
        /// a generation beyond the ones it recorded).
        ReplyUnsent,
        /// The right step and phase, but a command id of a generation before the saga's
        /// current one: superseded by the command the saga sent afresh since (an operator's
        /// retry), whose answer the worker gives from the same decision.
        ReplySuperseded,
        /// The reply names no command it answers (neither `Saga-Command-Id` nor the
        /// previous release's message id), or a command id that does not parse.
        ReplyUnkeyed,
        /// The command it names is of another saga, step or phase than the reply says.
        ReplyKeyMismatch,
        /// It came on a subject its step's worker does not answer on (one worker's identity
        /// speaking for another step, or an outcome on another outcome's subject).
        ReplyWrongSubject,
    }
}

/// Why a checkout failed: a step's refusal, by its code, or a step that never answered.
/// Its text form is the refusal's code, or `timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, SerializeDisplay, DeserializeFromStr)]
pub enum FailureCode {
    /// The step said no.
    Refused(RefusalCode),
    /// The step gave no decision within its attempts.
    Timeout,
}

impl FailureCode {
    /// The text form of [`FailureCode::Timeout`].
    pub const TIMEOUT: &'static str = "timeout";

    /// The code's one text form.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureCode::Refused(code) => code.as_str(),
            FailureCode::Timeout => Self::TIMEOUT,
        }
    }
}

impl fmt::Display for FailureCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FailureCode {
    type Err = strum::ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == Self::TIMEOUT {
            return Ok(FailureCode::Timeout);
        }
        s.parse().map(FailureCode::Refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;
    use serde::de::DeserializeOwned;
    use strum::VariantArray;

    fn one_text_form<T>(words: &[T])
    where
        T: Copy + fmt::Display + FromStr + Serialize + DeserializeOwned + PartialEq + fmt::Debug,
    {
        for &word in words {
            let text = word.to_string();
            assert_eq!(serde_json::to_value(word).ok(), Some(text.clone().into()));
            assert_eq!(
                serde_json::from_value::<T>(text.clone().into()).ok(),
                Some(word)
            );
            assert_eq!(text.parse::<T>().ok(), Some(word), "{text}");
        }
    }

    #[test]
    fn every_state_word_reads_back_from_its_one_text_form() {
        one_text_form(SagaStatus::VARIANTS);
        one_text_form(LogEvent::VARIANTS);
        one_text_form(StepOutcome::VARIANTS);
        one_text_form(RejectionCode::VARIANTS);
        let codes: Vec<FailureCode> = RefusalCode::VARIANTS
            .iter()
            .map(|&c| FailureCode::Refused(c))
            .chain([FailureCode::Timeout])
            .collect();
        one_text_form(&codes);
        assert_eq!(LogEvent::UndoStarted.as_str(), "undo_started");
        assert_eq!(
            FailureCode::Refused(RefusalCode::CardDeclined).to_string(),
            "card_declined"
        );
        assert!("bogus".parse::<SagaStatus>().is_err());
    }
}
