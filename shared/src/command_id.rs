//! The id of one command the orchestrator sent, which its reply must carry back.
//!
//! ```text
//!  orchestrator ── Nats-Msg-Id: {saga}.{step}.{phase}[.g{generation}][.r{attempt}] ──▶ worker
//!        ▲                                                                              │
//!        └───── Saga-Command-Id: the same id (the command this reply answers) ◀─────────┘
//! ```
//!
//! The id is the action key (saga, step, phase) and where the command stands in its attempt
//! series: the generation (bumped when a command is sent afresh) and the re-send number. The
//! orchestrator applies a reply only if the saga recorded sending the command the reply
//! names ([`CommandId`] against its state); any other reply is refused with a reason.
//!
//! Workers of the release before this header existed gave their replies the message id
//! `{command id}.reply` and no `Saga-Command-Id`: [`CommandId::of_reply`] reads the id from
//! there, deliberately, so that a reply in flight across an upgrade is still applied; a reply
//! with neither is refused.

use crate::steps::{Phase, Step};
use std::fmt;
use uuid::Uuid;

/// The header a reply names the command it answers in.
pub const COMMAND_ID: &str = "Saga-Command-Id";

/// The longest command id read: a saga id, the longest step and phase, two `u32`s. Anything
/// longer is refused before it is split, so a hostile header costs nothing.
const MAX_LEN: usize = 36 + 1 + 16 + 1 + 4 + 2 * (2 + 10);

/// One command: its action key and its place in the attempt series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommandId {
    /// The saga.
    pub saga_id: Uuid,
    /// The step.
    pub step: Step,
    /// Do or undo.
    pub phase: Phase,
    /// How often the command was sent afresh (a new series), 0 at first.
    pub generation: u32,
    /// The re-send within the series, 0 for its first send.
    pub attempt: u32,
}

/// Why a text is not a command id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a command id ({reason}): {shown:?}")]
pub struct NotACommandId {
    reason: &'static str,
    /// The text, cut to a bounded length for the error.
    shown: String,
}

impl NotACommandId {
    fn new(reason: &'static str, text: &str) -> Self {
        NotACommandId {
            reason,
            shown: text.chars().take(80).collect(),
        }
    }
}

impl CommandId {
    /// The id of a reply's command: its `Saga-Command-Id` header, or else (a reply of the
    /// previous release's workers) its message id without the `.reply` those workers added.
    /// `None` when the reply carries neither.
    pub fn of_reply(
        headers: Option<&async_nats::HeaderMap>,
    ) -> Option<Result<Self, NotACommandId>> {
        let get = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.as_str());
        if let Some(id) = get(COMMAND_ID) {
            return Some(id.parse());
        }
        let legacy = get(crate::envelope::MSG_ID)?.strip_suffix(".reply")?;
        Some(legacy.parse())
    }
}

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.saga_id, self.step, self.phase)?;
        if self.generation > 0 {
            write!(f, ".g{}", self.generation)?;
        }
        if self.attempt > 0 {
            write!(f, ".r{}", self.attempt)?;
        }
        Ok(())
    }
}

impl std::str::FromStr for CommandId {
    type Err = NotACommandId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() > MAX_LEN {
            return Err(NotACommandId::new("too long", text));
        }
        let mut parts = text.split('.');
        let mut next = |what: &'static str| parts.next().ok_or(NotACommandId::new(what, text));
        let saga_id = Uuid::parse_str(next("no saga id")?)
            .map_err(|_| NotACommandId::new("the saga id is not a UUID", text))?;
        let step = next("no step")?
            .parse()
            .map_err(|_| NotACommandId::new("unknown step", text))?;
        let phase = next("no phase")?
            .parse()
            .map_err(|_| NotACommandId::new("unknown phase", text))?;
        let (mut generation, mut attempt) = (None, None);
        for part in parts {
            let number = |prefix: char| {
                part.strip_prefix(prefix)
                    .filter(|n| !n.starts_with('0') && n.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|n| n.parse::<u32>().ok())
            };
            // In order, each at most once, never written as 0 (the form the id is written in).
            match (number('g'), number('r')) {
                (Some(g), None) if generation.is_none() && attempt.is_none() => {
                    generation = Some(g)
                }
                (None, Some(r)) if attempt.is_none() => attempt = Some(r),
                _ => return Err(NotACommandId::new("unexpected part", text)),
            }
        }
        Ok(CommandId {
            saga_id,
            step,
            phase,
            generation: generation.unwrap_or(0),
            attempt: attempt.unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(generation: u32, attempt: u32) -> CommandId {
        CommandId {
            saga_id: Uuid::from_u128(7),
            step: Step::Payment,
            phase: Phase::Undo,
            generation,
            attempt,
        }
    }

    #[test]
    fn an_id_reads_back_as_written() {
        for (g, r) in [(0, 0), (0, 3), (2, 0), (1, 12), (u32::MAX, u32::MAX)] {
            let written = id(g, r).to_string();
            assert_eq!(written.parse(), Ok(id(g, r)), "{written}");
        }
        assert_eq!(
            id(1, 2).to_string(),
            "00000000-0000-0000-0000-000000000007.payment.undo.g1.r2"
        );
    }

    #[test]
    fn anything_else_is_refused_with_its_reason() {
        let saga = Uuid::from_u128(7);
        for bad in [
            String::new(),
            "x.payment.do".to_owned(),
            format!("{saga}"),
            format!("{saga}.cart.do"),
            format!("{saga}.payment.redo"),
            format!("{saga}.payment.do.r0"),
            format!("{saga}.payment.do.g01"),
            format!("{saga}.payment.do.r1.g1"),
            format!("{saga}.payment.do.r1.r1"),
            format!("{saga}.payment.do.g1.g1"),
            format!("{saga}.payment.do.r99999999999"),
            format!("{saga}.payment.do.reply"),
            format!("{saga}.payment.do.{}", "r1".repeat(40)),
        ] {
            assert!(bad.parse::<CommandId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_reply_names_its_command_by_header_or_by_the_previous_release_s_message_id() {
        let mut headers = async_nats::HeaderMap::new();
        assert_eq!(CommandId::of_reply(None), None);
        assert_eq!(CommandId::of_reply(Some(&headers)), None);
        headers.insert(crate::envelope::MSG_ID, format!("{}.reply", id(0, 1)));
        assert_eq!(CommandId::of_reply(Some(&headers)), Some(Ok(id(0, 1))));
        headers.insert(COMMAND_ID, id(1, 0).to_string());
        assert_eq!(
            CommandId::of_reply(Some(&headers)),
            Some(Ok(id(1, 0))),
            "the header wins"
        );
        let mut other = async_nats::HeaderMap::new();
        other.insert(crate::envelope::MSG_ID, "seq.4");
        assert_eq!(CommandId::of_reply(Some(&other)), None, "not a reply's id");
    }
}
