//! The worker services of the checkout saga: inventory, payment, order and notification, one
//! per row of `checkout_shared::steps::STEPS`.
//!
//! ```text
//!  checkout.cmd.<kind>.>  ──pull──▶ consume loop ──▶ decode ──▶ dedupe ──▶ handler ──▶ commit
//!   (one durable consumer                │                                     │
//!    per kind, shared by                 └──dead letter (undecodable)          ▼
//!    every instance)                              checkout.evt.<kind>.<event> ◀── reply, then ack
//! ```
//!
//! Each kind owns one PostgreSQL schema (its row's: `inventory`, `payment`, `orders`,
//! `notification`) and its migrations (`migrations/<row's folder>`).
//! Every action and undo commits its effect together with a processed-message row holding the
//! reply, so a redelivered command re-sends the same reply instead of acting twice. Those
//! records are deleted after a retention ([`retention`]); the business tables keep refusing a
//! second effect after that.

pub mod calls;
pub mod card_gateway;
pub mod chance;
pub mod config;
pub mod consume;
pub mod error;
pub mod handler;
pub mod inventory;
pub mod notification;
pub mod order;
pub mod payment;
pub mod retention;
mod service;

pub use config::{Faults, WorkerConfig};
pub use error::WorkerError;
pub use service::{migrate, run};
