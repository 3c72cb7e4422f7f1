//! The typed bodies of every message, serialised as JSON.
//!
//! Commands are in the imperative (`ReserveInventory`), replies in the past tense
//! (`StepSucceeded` carries what the step produced, `StepFailed` why it refused).

use crate::envelope::{Phase, Step};
use crate::vocabulary::{FailureCode, RejectionCode, SagaStatus, StepOutcome};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

mod refusal;
pub use refusal::{Refusal, RefusalCode};

/// The largest checkout request body accepted, in bytes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// One line of a cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineItem {
    /// Stock-keeping unit, e.g. `SKU-RED-MUG`.
    pub sku: String,
    /// How many; must be positive.
    pub quantity: i32,
    /// The unit price the customer saw, in cents. Required in a checkout request (a price that
    /// changed since is refused as `price_mismatch`); optional in the type so that lines stored
    /// before prices existed still decode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_price_cents: Option<i64>,
}

/// A customer's checkout, as published on `checkout.requested`.
///
/// The client picks `checkout_id`; it becomes the saga id, so a client can follow its
/// checkout before the orchestrator has seen it, and a republish is a duplicate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequested {
    /// The saga id to be.
    pub checkout_id: Uuid,
    /// Who is buying.
    pub customer_id: String,
    /// What they buy.
    pub items: Vec<LineItem>,
    /// An opaque payment token; `tok_decline` is always declined. A secret: it never appears
    /// in a span, a log line, an event or a metric.
    pub payment_token: String,
    /// The total to charge, in cents; must equal the sum of the lines.
    pub amount_cents: i64,
    /// ISO 4217 code of the amount and the line prices, e.g. `EUR`. Required in a request;
    /// empty only in sagas stored before currencies existed.
    #[serde(default)]
    pub currency: String,
}

/// One SKU of the catalog, as the inventory service publishes it on `checkout.catalog.<sku>`
/// and the door (gateway, orchestrator) and shop clients read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    /// The SKU.
    pub sku: String,
    /// Its unit price, in cents.
    pub price_cents: i64,
    /// ISO 4217 code of the price.
    pub currency: String,
}

/// A command the orchestrator sends to a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Hold stock for every line.
    ReserveInventory {
        /// What to hold.
        items: Vec<LineItem>,
    },
    /// Give back whatever this saga holds (a no-op, remembered, if it holds nothing).
    ReleaseInventory,
    /// Take the money.
    ChargePayment {
        /// Who pays.
        customer_id: String,
        /// How.
        payment_token: String,
        /// How much, in cents.
        amount_cents: i64,
    },
    /// Give the money back (a no-op, remembered, if nothing was charged).
    RefundPayment,
    /// Record the order.
    CreateOrder {
        /// Who ordered.
        customer_id: String,
        /// What.
        items: Vec<LineItem>,
        /// For how much, in cents.
        amount_cents: i64,
    },
    /// Cancel the order (a no-op, remembered, if none was created).
    CancelOrder,
    /// Send the order confirmation (fire-and-forget: never undone, and its failure never
    /// fails the checkout).
    SendNotification {
        /// To whom.
        customer_id: String,
        /// The order it confirms.
        order_id: Option<Uuid>,
        /// For how much, in cents.
        amount_cents: i64,
        /// ISO 4217 code of the amount.
        currency: String,
    },
}

impl Command {
    /// The step and phase this command performs.
    pub fn step_phase(&self) -> (Step, Phase) {
        match self {
            Command::ReserveInventory { .. } => (Step::Inventory, Phase::Do),
            Command::ReleaseInventory => (Step::Inventory, Phase::Undo),
            Command::ChargePayment { .. } => (Step::Payment, Phase::Do),
            Command::RefundPayment => (Step::Payment, Phase::Undo),
            Command::CreateOrder { .. } => (Step::Order, Phase::Do),
            Command::CancelOrder => (Step::Order, Phase::Undo),
            Command::SendNotification { .. } => (Step::Notification, Phase::Do),
        }
    }
}

/// The body of a command message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandMessage {
    /// The saga it belongs to.
    pub saga_id: Uuid,
    /// What to do.
    #[serde(flatten)]
    pub command: Command,
}

/// How a step went, as a worker reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The action or undo took effect (or had already).
    StepSucceeded {
        /// The id of what the step created (reservation, charge, order), if anything.
        reference: Option<Uuid>,
    },
    /// A business "no": out of stock, card declined, order refused. Never a failure to act
    /// (a database that did not answer): that is retried, not replied.
    StepFailed {
        /// Why: a stable code for programs and a message for people.
        reason: Refusal,
    },
}

/// The body of a reply message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// The saga it belongs to.
    pub saga_id: Uuid,
    /// The step it reports on.
    pub step: Step,
    /// Action or undo.
    pub phase: Phase,
    /// What happened.
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl Reply {
    /// The past-tense event name used in the reply subject: `reserved`, `declined`, ...,
    /// from the step's declaration ([`Step::def`]).
    pub fn event_name(&self) -> &'static str {
        let def = self.step.def();
        match (self.phase, &self.outcome, def.undo) {
            (Phase::Do, Outcome::StepSucceeded { .. }, _) => def.action.done,
            (Phase::Do, Outcome::StepFailed { .. }, _) => def.action.refused,
            // An undo has no refusal event: an undeliverable undo answers on its own subject.
            (Phase::Undo, _, Some(undo)) => undo.done,
            // An undo of a step without one is never sent; should a forged one be answered,
            // it reads as the refusal it is.
            (Phase::Undo, _, None) => def.action.refused,
        }
    }
}

crate::vocabulary::state_word! {
    /// The kind of a lifecycle event on `checkout.saga.<id>.<kind>`.
    pub enum LifecycleKind {
        /// The saga was accepted and its first command sent.
        Started,
        /// A step or undo finished.
        Step,
        /// Every step the checkout waits for succeeded.
        Completed,
        /// A step failed and every undo ran.
        Compensated,
        /// Refused before anything that needs undoing happened.
        Failed,
        /// An undo could not be completed for a long time; it is still retried, and an
        /// operator may retry it now.
        Stuck,
        /// Refused at the door: the request broke a rule (its `rejection` code, the `field`
        /// at fault, the reason in `detail`) and never became a saga. A request sent again
        /// gets this same event again.
        Rejected,
    }
}

impl LifecycleKind {
    /// Whether the saga has ended (stuck sagas wait for an operator).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            LifecycleKind::Completed
                | LifecycleKind::Compensated
                | LifecycleKind::Failed
                | LifecycleKind::Rejected
        )
    }
}

/// A step's action or undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StepRef {
    /// The step.
    pub step: Step,
    /// Action or undo.
    pub phase: Phase,
}

/// What watchers receive on `checkout.saga.<id>.*`: each says where the saga stands after
/// it, so a watcher needs no copy of the saga's plan to follow it ([`crate::saga_view`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleEvent {
    /// The saga.
    pub saga_id: Uuid,
    /// What happened.
    pub kind: LifecycleKind,
    /// The saga's status after it (absent in events of older releases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<SagaStatus>,
    /// The step concerned, for `step` events.
    pub step: Option<Step>,
    /// Action or undo, for `step` events.
    pub phase: Option<Phase>,
    /// How the step's action or undo ended, for `step` events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<StepOutcome>,
    /// The action or undo the saga is now waiting for, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<StepRef>,
    /// Why the checkout failed, by code, once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_code: Option<FailureCode>,
    /// Why the door refused the checkout, by code, for `rejected` events (the `reason` of
    /// the gateway's problem response for the same cart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejection: Option<RejectionCode>,
    /// The field at fault, as a path into the request (`items[1].sku`), for `rejected`
    /// events that name one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// A human-readable detail (the failure reason), or `ok`.
    pub detail: String,
    /// The saga's trace id, so a watcher can link to the trace.
    pub trace_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_tagged_json() {
        let msg = CommandMessage {
            saga_id: Uuid::nil(),
            command: Command::RefundPayment,
        };
        let json = serde_json::to_value(&msg).unwrap();
        assert_eq!(json["type"], "refund_payment");
        assert_eq!(serde_json::from_value::<CommandMessage>(json).unwrap(), msg);
    }

    #[test]
    fn a_request_with_an_unknown_field_is_refused() {
        let raw = r#"{"checkout_id":"00000000-0000-0000-0000-000000000000","customer_id":"c",
            "items":[],"payment_token":"t","amount_cents":1,"coupon":"FREE"}"#;
        assert!(serde_json::from_str::<CheckoutRequested>(raw).is_err());
    }

    #[test]
    fn reply_event_names_read_in_the_past_tense() {
        let reply = Reply {
            saga_id: Uuid::nil(),
            step: Step::Payment,
            phase: Phase::Do,
            outcome: Outcome::StepFailed {
                reason: Refusal::new(RefusalCode::CardDeclined, "card declined"),
            },
        };
        assert_eq!(reply.event_name(), "declined");
    }

    #[test]
    fn a_refusal_has_a_stable_code_on_the_wire_and_reads_as_code_and_message() {
        let reply = Reply {
            saga_id: Uuid::nil(),
            step: Step::Inventory,
            phase: Phase::Do,
            outcome: Outcome::StepFailed {
                reason: Refusal::new(RefusalCode::OutOfStock, "SKU-A wants 3, 1 available"),
            },
        };
        let json = serde_json::to_value(&reply).unwrap();
        assert_eq!(json["outcome"], "step_failed");
        assert_eq!(json["reason"]["code"], "out_of_stock");
        assert_eq!(json["reason"]["message"], "SKU-A wants 3, 1 available");
        assert_eq!(serde_json::from_value::<Reply>(json).unwrap(), reply);
        let Outcome::StepFailed { reason } = &reply.outcome else {
            unreachable!()
        };
        assert_eq!(
            reason.to_string(),
            "out_of_stock: SKU-A wants 3, 1 available"
        );
        // as_str and serde agree for every code, so logs and the wire say the same thing.
        for code in [
            RefusalCode::OutOfStock,
            RefusalCode::UnknownSku,
            RefusalCode::CardDeclined,
            RefusalCode::InsufficientFunds,
            RefusalCode::ExpiredCard,
            RefusalCode::NotificationFailed,
            RefusalCode::OrderRefused,
            RefusalCode::CancelledBeforeDone,
            RefusalCode::AlreadyDone,
            RefusalCode::Undeliverable,
            RefusalCode::Unspecified,
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }

    #[test]
    fn a_refusal_stored_as_a_bare_string_still_reads() {
        let raw = r#"{"saga_id":"00000000-0000-0000-0000-000000000000","step":"payment",
            "phase":"do","outcome":"step_failed","reason":"card declined"}"#;
        let reply: Reply = serde_json::from_str(raw).unwrap();
        assert_eq!(
            reply.outcome,
            Outcome::StepFailed {
                reason: Refusal::new(RefusalCode::Unspecified, "card declined")
            }
        );
    }
}
