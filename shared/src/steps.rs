//! The steps of the checkout, each declared once: its name, its action and undo, its reply
//! events, whether the saga waits for it, and the schema its worker owns.
//!
//! ```text
//!  Step (the enum: its snake_case name is the step's one spelling)
//!   └─ Step::def ──┬─▶ subjects::{command, commands_for, event}   checkout.cmd.<step>.<verb>
//!   (exhaustive    ├─▶ Reply::event_name                          checkout.evt.<step>.<event>
//!    match)        ├─▶ the durable consumer of each worker kind   (streams.rs, nats/jetstream.json)
//!                  ├─▶ the worker's schema                        (workers: a match on Step)
//!                  ├─▶ span and metric names                      (`step payment.charge`,
//!                  │                                               checkout.step=payment)
//!                  └─▶ the orchestrator's plans                   (a list of steps per plan)
//! ```
//!
//! Adding a step is a variant and its arm in [`Step::def`], a command pair in
//! [`crate::messages::Command`], the arms the compiler then asks for (the orchestrator's
//! commands, the workers' dispatch and migrations), a handler module with its migration
//! folder, and its place in a new plan.

use strum::VariantArray;

crate::vocabulary::state_word! {
    /// One step of the checkout saga. Its text form (`inventory`, `payment`, ...) is the
    /// step's one spelling: in headers, subjects, the saga log, status, lifecycle events, span
    /// attributes and metric attributes. It is also its worker kind and durable consumer.
    pub enum Step {
        /// Reserve stock (undo: release it).
        Inventory,
        /// Charge the card (undo: refund it).
        Payment,
        /// Create the order (undo: cancel it).
        Order,
        /// Send the confirmation, after the checkout completed (never undone).
        Notification,
    }
}

crate::vocabulary::state_word! {
    /// Whether a step does or undoes its work.
    pub enum Phase {
        /// The step's action.
        Do,
        /// The step's compensation.
        Undo,
    }
}

/// A verb and the events of its replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    /// The verb (`checkout.cmd.<step>.<verb>`), e.g. `charge`.
    pub verb: &'static str,
    /// The reply event when it took effect (`checkout.evt.<step>.<event>`), e.g. `charged`.
    pub done: &'static str,
    /// The reply event of a business refusal, e.g. `declined`.
    pub refused: &'static str,
}

/// An undo: it has no refusal, it is retried until it succeeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Undo {
    /// The verb, e.g. `refund`.
    pub verb: &'static str,
    /// The reply event once undone, e.g. `refunded`.
    pub done: &'static str,
}

/// Whether the checkout waits for a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The checkout waits for it; its refusal (or silence) fails the checkout and undoes the
    /// steps before it.
    Awaited,
    /// Sent once the checkout has completed; its reply is recorded and never waited for, and
    /// its failure never fails or compensates the checkout.
    FollowUp,
}

/// One step's declaration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepDef {
    /// What it does.
    pub action: Action,
    /// How it is undone; `None` for a step with nothing to undo (a check, or a follow-up).
    pub undo: Option<Undo>,
    /// Whether the checkout waits for it.
    pub mode: Mode,
    /// The PostgreSQL schema its worker owns; its migrations live in
    /// `workers/migrations/<schema>`.
    pub schema: &'static str,
}

impl Step {
    /// The step's declaration. Exhaustive: a new step does not compile without one.
    pub const fn def(self) -> &'static StepDef {
        match self {
            Step::Inventory => &StepDef {
                action: Action {
                    verb: "reserve",
                    done: "reserved",
                    refused: "unavailable",
                },
                undo: Some(Undo {
                    verb: "release",
                    done: "released",
                }),
                mode: Mode::Awaited,
                schema: "inventory",
            },
            Step::Payment => &StepDef {
                action: Action {
                    verb: "charge",
                    done: "charged",
                    refused: "declined",
                },
                undo: Some(Undo {
                    verb: "refund",
                    done: "refunded",
                }),
                mode: Mode::Awaited,
                schema: "payment",
            },
            Step::Order => &StepDef {
                action: Action {
                    verb: "create",
                    done: "created",
                    refused: "failed",
                },
                undo: Some(Undo {
                    verb: "cancel",
                    done: "cancelled",
                }),
                mode: Mode::Awaited,
                schema: "orders",
            },
            Step::Notification => &StepDef {
                action: Action {
                    verb: "send",
                    done: "sent",
                    refused: "failed",
                },
                undo: None,
                mode: Mode::FollowUp,
                schema: "notification",
            },
        }
    }

    /// Every step any plan may use (the orchestrator's plans give their order).
    pub const ALL: &'static [Step] = Step::VARIANTS;

    /// The verb of the step's action or undo, `None` for the undo of a step without one.
    pub fn verb(self, phase: Phase) -> Option<&'static str> {
        match phase {
            Phase::Do => Some(self.def().action.verb),
            Phase::Undo => self.def().undo.map(|undo| undo.verb),
        }
    }

    /// The name of an action or undo, e.g. `payment.charge`, `payment.refund`: what step
    /// spans are named after (`step payment.charge`, `compensate payment.charge` name the
    /// action being done or compensated, so both use the action's).
    pub fn action_name(self) -> String {
        format!("{self}.{}", self.def().action.verb)
    }

    /// The PostgreSQL schema the step's worker owns.
    pub fn schema(self) -> &'static str {
        self.def().schema
    }

    /// Whether the step has an undo.
    pub fn has_undo(self) -> bool {
        self.def().undo.is_some()
    }

    /// Whether the checkout ends without waiting for this step.
    pub fn is_follow_up(self) -> bool {
        self.def().mode == Mode::FollowUp
    }
}

/// The worker kinds, one per step: what `checkout worker <kind>` accepts and what every
/// process list starts.
pub fn worker_kinds() -> impl Iterator<Item = &'static str> {
    Step::ALL.iter().map(|step| step.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn a_step_reads_back_from_its_one_spelling() {
        for &step in Step::ALL {
            let text = step.to_string();
            assert_eq!(text.parse::<Step>().ok(), Some(step));
            assert_eq!(serde_json::to_value(step).ok(), Some(text.clone().into()));
            assert_eq!(step.as_str(), text);
        }
        assert_eq!(Step::Payment.to_string(), "payment");
        assert!("payment.charge".parse::<Step>().is_err());
    }

    #[test]
    fn schemas_are_distinct_and_every_event_names_one_outcome() {
        let schemas: BTreeSet<_> = Step::ALL.iter().map(|s| s.schema()).collect();
        assert_eq!(schemas.len(), Step::ALL.len());
        for &step in Step::ALL {
            let def = step.def();
            assert_ne!(def.action.done, def.action.refused, "{step}");
            if let Some(undo) = def.undo {
                assert_ne!(undo.verb, def.action.verb, "{step}");
                assert_ne!(undo.done, def.action.refused, "{step}");
            }
            // A follow-up runs after the checkout has completed: nothing can undo it.
            if def.mode == Mode::FollowUp {
                assert!(def.undo.is_none(), "{step}");
            }
        }
    }
}
