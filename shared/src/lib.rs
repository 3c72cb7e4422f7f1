//! The vocabulary both sides of the checkout saga share.
//!
//! ```text
//!  checkout client ──checkout.requested──▶ orchestrator ──checkout.cmd.<step>.<action>──▶ worker
//!                                              ▲                                             │
//!                                              └──────────checkout.evt.<step>.<event>────────┘
//! ```
//!
//! The orchestrator and the workers never depend on each other; they meet here: the message
//! types ([`messages`]), the header conventions ([`envelope`]), the subjects ([`subjects`]),
//! the JetStream streams and consumers ([`streams`]), trace-context propagation through NATS
//! headers ([`propagation`], [`messaging`]), the telemetry set-up ([`telemetry`], [`otlp`]) and
//! every metric's definition ([`metrics`]), the schedule every retention pruner shares
//! ([`retention`]), the steps' declarations ([`steps`]), every state word
//! ([`vocabulary`]) and the one fold from lifecycle events to a saga's progress
//! ([`saga_view`]).
//! There is no business logic and no database schema in this crate.

pub mod access;
pub mod ack_retry;
pub mod broker_trace;
pub mod command_id;
pub mod connect;
pub mod envelope;
pub mod flusher;
pub mod group_commit;
pub mod json_error;
pub mod messages;
pub mod messaging;
pub mod metrics;
pub mod otlp;
pub mod propagation;
pub mod pull;
pub mod redact;
pub mod retention;
pub mod saga_view;
pub mod shutdown;
pub mod span_groups;
pub mod steps;
pub mod streams;
pub mod subjects;
pub mod supervise;
pub mod telemetry;
pub mod vocabulary;

#[cfg(test)]
mod fuzz;

pub use command_id::CommandId;
pub use envelope::{Envelope, EnvelopeError, MsgType};
pub use steps::{Phase, Step};
pub use vocabulary::{FailureCode, LogEvent, RejectionCode, ReplyRefusal, SagaStatus, StepOutcome};
