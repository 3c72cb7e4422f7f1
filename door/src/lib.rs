//! The door of the checkout saga: the rules a checkout request must pass before it becomes a
//! saga, and the catalog they check prices against.
//!
//! ```text
//!  gateway (POST /checkout) ──────────┐
//!                                     ├─▶ validate::check ─▶ catalog (checkout.catalog.<sku>)
//!  orchestrator (checkout.requested) ─┘         │ no
//!                                               ▼
//!                                  Rejection { field, reason code }
//! ```
//!
//! Both the HTTP gateway and the orchestrator apply these rules, so what the gateway accepts
//! the orchestrator accepts too; neither depends on the other, both depend on this crate.
//! [`validate`] parses and checks a request; [`catalog`] reads each SKU's price and currency.

pub mod catalog;
pub mod validate;

#[cfg(test)]
mod fuzz;
