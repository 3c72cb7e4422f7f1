//! The checkout saga, declared in one place: which steps each plan runs, in what order, and
//! what each step's action and undo send. Read top to bottom, it is the checkout: reserve the
//! stock, charge the card, create the order — then, once the checkout has completed, send the
//! confirmation without waiting for it (a follow-up step, as its declaration says:
//! `checkout_shared::Step::def`).
//!
//! A saga records the plan it started under and where it is by step name, so a release that
//! adds, removes or reorders steps in a new plan leaves every saga in flight on its own plan:
//! it finishes as it began. Keep a plan here as long as sagas may run under it.

use checkout_shared::messages::{CheckoutRequested, Command};
use checkout_shared::{Phase, Step};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// A version of the checkout's plan. New sagas start under [`PlanId::CURRENT`].
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    strum::Display,
    strum::EnumString,
    strum::VariantArray,
    serde_with::SerializeDisplay,
    serde_with::DeserializeFromStr,
)]
#[strum(serialize_all = "snake_case")]
pub enum PlanId {
    /// Reserve, charge, create the order; then confirm.
    CheckoutV1,
    /// Test-only: the steps of a release before the order existed.
    #[cfg(test)]
    TestBeforeOrder,
    /// Test-only: that release's successor, which gained the order step before payment.
    #[cfg(test)]
    TestWithOrderFirst,
}

impl PlanId {
    /// The plan new sagas start under.
    pub const CURRENT: PlanId = PlanId::CheckoutV1;

    /// The plan's steps in the order they run: the steps the checkout waits for, then its
    /// follow-ups.
    pub fn steps(self) -> &'static [Step] {
        use Step::*;
        match self {
            PlanId::CheckoutV1 => &[Inventory, Payment, Order, Notification],
            #[cfg(test)]
            PlanId::TestBeforeOrder => &[Inventory, Payment, Notification],
            #[cfg(test)]
            PlanId::TestWithOrderFirst => &[Inventory, Order, Payment, Notification],
        }
    }

    /// The first step.
    pub fn first(self) -> Step {
        self.steps()[0]
    }

    /// Whether `step` is one of the plan's.
    pub fn contains(self, step: Step) -> bool {
        self.steps().contains(&step)
    }

    fn position(self, step: Step) -> usize {
        self.steps()
            .iter()
            .position(|s| *s == step)
            .unwrap_or(self.steps().len())
    }

    /// The step after `step`, if any.
    pub fn after(self, step: Step) -> Option<Step> {
        self.steps().get(self.position(step) + 1).copied()
    }

    /// The last step with an undo before `step`, or up to and including it.
    pub fn undoable_before(self, step: Step, inclusive: bool) -> Option<Step> {
        let end = self.position(step) + usize::from(inclusive);
        self.steps()[..end.min(self.steps().len())]
            .iter()
            .rev()
            .copied()
            .find(|s| s.has_undo())
    }

    /// The plan's first follow-up step, if any.
    pub fn first_follow_up(self) -> Option<Step> {
        self.steps().iter().copied().find(|s| s.is_follow_up())
    }
}

/// What the saga knows: the request, and what each step created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "SagaDataWire")]
pub struct SagaData {
    /// The checkout as the client sent it.
    pub request: CheckoutRequested,
    /// What each step's action created (reservation, charge, order), by step.
    pub references: BTreeMap<Step, Uuid>,
}

impl SagaData {
    /// The data of a saga that has not run any step yet.
    pub fn new(request: CheckoutRequested) -> Self {
        SagaData {
            request,
            references: BTreeMap::new(),
        }
    }

    /// What `step`'s action created, if anything yet.
    pub fn reference(&self, step: Step) -> Option<Uuid> {
        self.references.get(&step).copied()
    }

    /// Records what a step's action created.
    pub fn record(&mut self, step: Step, reference: Option<Uuid>) {
        if let Some(reference) = reference {
            self.references.insert(step, reference);
        }
    }
}

/// Saga data as stored: releases before `references` kept one field per step.
#[derive(Deserialize)]
struct SagaDataWire {
    request: CheckoutRequested,
    #[serde(default)]
    references: BTreeMap<Step, Uuid>,
    #[serde(default)]
    reservation_id: Option<Uuid>,
    #[serde(default)]
    charge_id: Option<Uuid>,
    #[serde(default)]
    order_id: Option<Uuid>,
}

impl From<SagaDataWire> for SagaData {
    fn from(wire: SagaDataWire) -> Self {
        let mut data = SagaData {
            request: wire.request,
            references: wire.references,
        };
        data.record(Step::Inventory, wire.reservation_id);
        data.record(Step::Payment, wire.charge_id);
        data.record(Step::Order, wire.order_id);
        data
    }
}

/// Whether the command that does or undoes `step` carries the payment token: the charge
/// alone, as [`command`] builds it. The saga keeps the token only while it may still send
/// such a command ([`crate::machine::SagaState`] forgets it in the transition after which it
/// cannot), so a token is never kept past the charge's decision.
pub fn carries_token(step: Step, phase: Phase) -> bool {
    matches!((step, phase), (Step::Payment, Phase::Do))
}

/// The command that does or undoes `step`; `None` for the undo of a step without one.
/// Exhaustive: a new step does not compile until it says what it sends.
pub fn command(step: Step, phase: Phase, data: &SagaData) -> Option<Command> {
    let request = &data.request;
    let command = match (step, phase) {
        (Step::Inventory, Phase::Do) => Command::ReserveInventory {
            items: request.items.clone(),
        },
        (Step::Inventory, Phase::Undo) => Command::ReleaseInventory,
        (Step::Payment, Phase::Do) => Command::ChargePayment {
            customer_id: request.customer_id.clone(),
            payment_token: request.payment_token.clone(),
            amount_cents: request.amount_cents,
        },
        (Step::Payment, Phase::Undo) => Command::RefundPayment,
        (Step::Order, Phase::Do) => Command::CreateOrder {
            customer_id: request.customer_id.clone(),
            items: request.items.clone(),
            amount_cents: request.amount_cents,
        },
        (Step::Order, Phase::Undo) => Command::CancelOrder,
        (Step::Notification, Phase::Do) => Command::SendNotification {
            customer_id: request.customer_id.clone(),
            order_id: data.reference(Step::Order),
            amount_cents: request.amount_cents,
            currency: request.currency.clone(),
        },
        (Step::Notification, Phase::Undo) => return None,
    };
    Some(command)
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::VariantArray;

    fn data() -> SagaData {
        SagaData::new(CheckoutRequested {
            checkout_id: Uuid::nil(),
            customer_id: "c".into(),
            items: vec![],
            payment_token: "t".into(),
            amount_cents: 1,
            currency: "EUR".into(),
        })
    }

    #[test]
    fn every_command_performs_its_step_and_only_steps_with_an_undo_have_one() {
        for &step in Step::ALL {
            let action = command(step, Phase::Do, &data()).map(|c| c.step_phase());
            assert_eq!(action, Some((step, Phase::Do)));
            let undo = command(step, Phase::Undo, &data()).map(|c| c.step_phase());
            assert_eq!(
                undo,
                step.has_undo().then_some((step, Phase::Undo)),
                "{step}"
            );
        }
    }

    #[test]
    fn every_plan_runs_its_awaited_steps_before_its_follow_ups_each_once() {
        for &plan in PlanId::VARIANTS {
            let steps = plan.steps();
            assert!(!steps.is_empty() && !steps[0].is_follow_up(), "{plan}");
            let first_follow_up = steps.iter().position(|s| s.is_follow_up());
            if let Some(i) = first_follow_up {
                assert!(steps[i..].iter().all(|s| s.is_follow_up()), "{plan}");
            }
            let distinct: std::collections::BTreeSet<_> = steps.iter().collect();
            assert_eq!(distinct.len(), steps.len(), "{plan}");
        }
    }

    #[test]
    fn undos_are_found_backwards_skipping_steps_without_one() {
        let plan = PlanId::CheckoutV1;
        assert_eq!(
            plan.undoable_before(Step::Order, false),
            Some(Step::Payment)
        );
        assert_eq!(plan.undoable_before(Step::Order, true), Some(Step::Order));
        assert_eq!(plan.undoable_before(Step::Inventory, false), None);
        assert_eq!(plan.after(Step::Order), Some(Step::Notification));
        assert_eq!(plan.after(Step::Notification), None);
        assert_eq!(plan.first_follow_up(), Some(Step::Notification));
    }

    #[test]
    fn data_stored_with_one_field_per_step_still_reads() {
        let raw = serde_json::json!({
            "request": serde_json::to_value(&data().request).unwrap(),
            "reservation_id": Uuid::nil(), "charge_id": null, "order_id": Uuid::max(),
        });
        let data: SagaData = serde_json::from_value(raw).unwrap();
        assert_eq!(data.reference(Step::Inventory), Some(Uuid::nil()));
        assert_eq!(data.reference(Step::Payment), None);
        assert_eq!(data.reference(Step::Order), Some(Uuid::max()));
        let again: SagaData = serde_json::from_value(serde_json::to_value(&data).unwrap()).unwrap();
        assert_eq!(again, data);
    }
}
