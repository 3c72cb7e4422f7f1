//! The orchestrator against a real nats-server and PostgreSQL: recovery re-sends what a
//! recorded transition implied but a crash kept from being sent; deadlines re-send and then
//! compensate; an undo without reply is re-sent until it succeeds, flagged stuck on the way,
//! and an operator can make it try now; a completed saga's confirmation is re-sent by its
//! deadline within its bound, then given up, and the checkout stands; the retention deletes
//! only sagas that ended long enough ago, with their log; a checkout id goes to a saga or to a
//! refusal, never both; a reply is applied only when it answers a command its saga sent and
//! waits for, and refused with its reason otherwise.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod claims;
mod deadlines;
mod recovery;
mod replies;
mod retention;
mod support;
mod vocabulary;
