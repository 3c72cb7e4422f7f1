//! The workers against a real nats-server and PostgreSQL.
//!
//! - `delivery`: duplicates, redeliveries after a committed effect, a worker that died between
//!   its commit and its ack, undecodable commands, races and dropped connections;
//! - `outages`: a worker's table unusable for longer than a command's whole delivery budget,
//!   during an undo of each kind and during an action: never refused, never stored, and
//!   done (or refused as the tombstone says) once the table is back and the command re-sent;
//! - `group`: actions queued behind a batch commit together (their rows share one `xmin`),
//!   each gets its own answer, and a bad one fails alone;
//! - `contention`: three inventory workers whose batches share SKUs in every order: no
//!   deadlock, no group statement falls back, every action answered;
//! - `notification`: one confirmation per order, however often its command comes;
//! - `refusals`: a refused cart leaves every stock row as it was;
//! - `retention`: processed-message records past the retention go, and a command delivered
//!   again after its record went still has one effect.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod contention;
mod delivery;
mod group;
mod notification;
mod outages;
mod refusals;
mod retention;
mod support;
