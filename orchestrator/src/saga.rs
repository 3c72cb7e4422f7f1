//! The checkout saga, declared in one place: each step's action, its undo, and how its reply
//! changes the saga's data, side by side and typed.

use checkout_shared::Step;
use checkout_shared::messages::{CheckoutRequested, Command};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What the saga knows: the request, and what each step created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaData {
    /// The checkout as the client sent it.
    pub request: CheckoutRequested,
    /// The inventory reservation, once made.
    pub reservation_id: Option<Uuid>,
    /// The payment charge, once made.
    pub charge_id: Option<Uuid>,
    /// The order, once created.
    pub order_id: Option<Uuid>,
}

impl SagaData {
    /// The data of a saga that has not run any step yet.
    pub fn new(request: CheckoutRequested) -> Self {
        SagaData {
            request,
            reservation_id: None,
            charge_id: None,
            order_id: None,
        }
    }
}

/// One step of a saga.
#[derive(Debug)]
pub struct StepDef {
    /// Which step.
    pub step: Step,
    /// The command that performs it.
    pub action: fn(&SagaData) -> Command,
    /// The command that undoes it; it must succeed whether or not the action happened.
    pub undo: fn(&SagaData) -> Command,
    /// Records what the action created.
    pub record: fn(&mut SagaData, Option<Uuid>),
}

/// The checkout: reserve inventory, charge payment, create order.
pub static CHECKOUT: [StepDef; 3] = [
    StepDef {
        step: Step::Inventory,
        action: |d| Command::ReserveInventory {
            items: d.request.items.clone(),
        },
        undo: |_| Command::ReleaseInventory,
        record: |d, reference| d.reservation_id = reference,
    },
    StepDef {
        step: Step::Payment,
        action: |d| Command::ChargePayment {
            customer_id: d.request.customer_id.clone(),
            payment_token: d.request.payment_token.clone(),
            amount_cents: d.request.amount_cents,
        },
        undo: |_| Command::RefundPayment,
        record: |d, reference| d.charge_id = reference,
    },
    StepDef {
        step: Step::Order,
        action: |d| Command::CreateOrder {
            customer_id: d.request.customer_id.clone(),
            items: d.request.items.clone(),
            amount_cents: d.request.amount_cents,
        },
        undo: |_| Command::CancelOrder,
        record: |d, reference| d.order_id = reference,
    },
];

/// The position of `step` in the saga.
pub fn index_of(step: Step) -> usize {
    CHECKOUT
        .iter()
        .position(|def| def.step == step)
        .unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use checkout_shared::Phase;

    #[test]
    fn steps_are_in_order_and_commands_match_them() {
        let data = SagaData::new(CheckoutRequested {
            checkout_id: Uuid::nil(),
            customer_id: "c".into(),
            items: vec![],
            payment_token: "t".into(),
            amount_cents: 1,
            currency: "EUR".into(),
        });
        for (i, def) in CHECKOUT.iter().enumerate() {
            assert_eq!(index_of(def.step), i);
            assert_eq!((def.action)(&data).step_phase(), (def.step, Phase::Do));
            assert_eq!((def.undo)(&data).step_phase(), (def.step, Phase::Undo));
        }
    }
}
