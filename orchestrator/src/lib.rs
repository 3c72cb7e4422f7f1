//! The checkout saga's orchestrator.
//!
//! ```text
//!  checkout.requested ─▶ validate ─▶ start saga ─▶ checkout.cmd.inventory.reserve
//!                           │ no                    │
//!                           ▼                       ▼  (workers reply on checkout.evt.>)
//!                   checkout.rejected        executor: lock saga row ─▶ machine ─▶ commit
//!                   saga.rejections                 ─▶ emit finished spans ─▶ send next command
//!                   checkout.saga.<id>.rejected     ─▶ lifecycle on checkout.saga.<id>.*
//! ```
//!
//! - [`saga`] declares the steps; [`machine`] is the pure state machine;
//! - [`executor`] applies inputs to stored sagas through [`ports`]: [`postgres`] keeps the
//!   saga row and log ([`store`] has the queries), [`transport`] sends over NATS;
//! - [`spans`] emits saga and step spans from stored ids, so they survive restarts;
//! - the door's rules (validation and the catalog, shared with the HTTP gateway) are
//!   [`checkout_door`]'s;
//! - [`rejections`] records the checkouts the door refused and answers each delivery of one
//!   with the same `rejected` event;
//! - [`replies`] applies a worker's reply only when it answers a command its saga sent and
//!   waits for, and refuses every other with a reason;
//! - [`service`] runs the consumers, the deadline scanner and recovery;
//! - [`dead_ends`] dead-letters messages JetStream gave up on;
//! - [`observe`] records the metrics and log lines of committed transitions;
//! - [`retention`] deletes ended sagas and their log once past the retention.

pub mod dead_ends;
pub mod deadlines;
pub mod executor;
pub mod group_writes;
pub mod machine;
pub mod observe;
pub mod ports;
pub mod postgres;
pub mod rejections;
pub mod replies;
pub mod retention;
pub mod saga;
pub mod service;
pub mod spans;
pub mod store;
pub mod transport;

pub use executor::{Executor, Timing};
pub use service::{OrchestratorConfig, OrchestratorError, run};
