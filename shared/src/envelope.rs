//! Message metadata, carried in NATS headers rather than in the body.
//!
//! Every command and reply names its saga, step and phase, its message type with a version,
//! and a `Nats-Msg-Id` of `{saga_id}.{step}.{do|undo}` so that JetStream's duplicate window
//! drops a republish after recovery.

pub use crate::steps::{Phase, Step};
use async_nats::HeaderMap;
use uuid::Uuid;

/// JetStream's de-duplication header.
pub const MSG_ID: &str = "Nats-Msg-Id";
/// The saga a message belongs to.
pub const SAGA_ID: &str = "Saga-Id";
/// The step, by its name (`inventory`, `payment`, `order`, `notification`).
pub const SAGA_STEP: &str = "Saga-Step";
/// `do` or `undo`.
pub const SAGA_PHASE: &str = "Saga-Phase";
/// The message type with its version, e.g. `payment.charge.v1`.
pub const MSG_TYPE: &str = "Saga-Msg-Type";
/// Why a message was rejected or dead-lettered.
pub const REASON: &str = "Saga-Reason";
/// The stable reason code of a rejected checkout request (`unknown_sku`).
pub const REASON_KIND: &str = "Saga-Reason-Kind";
/// The subject a rejected or dead-lettered message was first published on.
pub const ORIGIN_SUBJECT: &str = "Saga-Origin-Subject";

/// A message type with its schema version, e.g. `payment.charge.v1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MsgType(pub String);

impl MsgType {
    /// The type of a command (`none` for the undo of a step without one, which no command
    /// carries).
    pub fn command(step: Step, phase: Phase) -> Self {
        MsgType(format!("{step}.{}.v1", step.verb(phase).unwrap_or("none")))
    }

    /// The type of a reply event.
    pub fn event(step: Step, event_name: &str) -> Self {
        MsgType(format!("{step}.{event_name}.v1"))
    }
}

/// Why headers could not be read as an envelope.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    /// A required header is absent.
    #[error("missing header {0}")]
    Missing(&'static str),
    /// A header is present but its value is not valid.
    #[error("invalid header {0}: {1:?}")]
    Invalid(&'static str, String),
}

/// The saga metadata of one command or reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The saga this message belongs to.
    pub saga_id: Uuid,
    /// The step it concerns.
    pub step: Step,
    /// Whether it does or undoes the step.
    pub phase: Phase,
    /// Its type and version.
    pub msg_type: MsgType,
}

impl Envelope {
    /// The envelope of a command.
    pub fn command(saga_id: Uuid, step: Step, phase: Phase) -> Self {
        Envelope {
            saga_id,
            step,
            phase,
            msg_type: MsgType::command(step, phase),
        }
    }

    /// The idempotency key of the action or undo: `{saga_id}.{step}.{do|undo}`.
    pub fn action_key(&self) -> String {
        format!("{}.{}.{}", self.saga_id, self.step, self.phase)
    }

    /// Writes the envelope into NATS headers, with `msg_id` as the de-duplication id.
    pub fn write(&self, headers: &mut HeaderMap, msg_id: &str) {
        headers.insert(MSG_ID, msg_id);
        headers.insert(SAGA_ID, self.saga_id.to_string());
        headers.insert(SAGA_STEP, self.step.as_str());
        headers.insert(SAGA_PHASE, self.phase.as_str());
        headers.insert(MSG_TYPE, self.msg_type.0.as_str());
    }

    /// Reads an envelope from NATS headers.
    pub fn read(headers: Option<&HeaderMap>) -> Result<Self, EnvelopeError> {
        let get = |name: &'static str| {
            headers
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_owned())
                .ok_or(EnvelopeError::Missing(name))
        };
        let raw_id = get(SAGA_ID)?;
        let saga_id =
            Uuid::parse_str(&raw_id).map_err(|_| EnvelopeError::Invalid(SAGA_ID, raw_id))?;
        let step = get(SAGA_STEP)?;
        let phase = get(SAGA_PHASE)?;
        Ok(Envelope {
            saga_id,
            step: step
                .parse()
                .map_err(|_| EnvelopeError::Invalid(SAGA_STEP, step))?,
            phase: phase
                .parse()
                .map_err(|_| EnvelopeError::Invalid(SAGA_PHASE, phase))?,
            msg_type: MsgType(get(MSG_TYPE)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_survives_the_headers() {
        let envelope = Envelope::command(Uuid::new_v4(), Step::Payment, Phase::Undo);
        let mut headers = HeaderMap::new();
        envelope.write(&mut headers, &envelope.action_key());
        assert_eq!(Envelope::read(Some(&headers)), Ok(envelope.clone()));
        assert_eq!(
            headers.get(MSG_ID).map(|v| v.as_str().to_owned()),
            Some(format!("{}.payment.undo", envelope.saga_id))
        );
        assert_eq!(envelope.msg_type.0, "payment.refund.v1");
    }

    #[test]
    fn missing_and_invalid_headers_are_named() {
        assert_eq!(Envelope::read(None), Err(EnvelopeError::Missing(SAGA_ID)));
        let mut headers = HeaderMap::new();
        headers.insert(SAGA_ID, "not-a-uuid");
        assert!(matches!(
            Envelope::read(Some(&headers)),
            Err(EnvelopeError::Invalid(SAGA_ID, _))
        ));
    }
}
