//! The steps of the checkout, in one table: each row is one step's identity.
//!
//! ```text
//!  STEPS ─┬─▶ Step::{service, action, name, schema, ...}   (envelope.rs)
//!         ├─▶ subjects::{command, commands_for, event}      checkout.cmd.<service>.<verb>
//!         ├─▶ Reply::event_name                             checkout.evt.<service>.<event>
//!         ├─▶ the consumers of nats/jetstream.json          (checked against it by a test)
//!         ├─▶ the workers' schema and migrations folder     (workers/migrations/<folder>)
//!         └─▶ the CLI's worker kinds and process lists      (checkout worker <service>)
//! ```
//!
//! Adding a step is a row here (and its [`Step`] variant, which the table indexes), a handler
//! module in `workers` with its `Command` variants, and a migration folder. Everything else
//! reads the row.

use crate::envelope::Step;

/// One step's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepRow {
    /// The step.
    pub step: Step,
    /// The service that performs it: the subject token, the worker kind
    /// (`checkout worker <service>`), its durable consumer and its `OTEL_SERVICE_NAME`.
    pub service: &'static str,
    /// The verb of its action (`checkout.cmd.<service>.<verb>`).
    pub do_verb: &'static str,
    /// The verb of its undo; `None` for a fire-and-forget step, which is never undone.
    pub undo_verb: Option<&'static str>,
    /// The reply event of a done action (`checkout.evt.<service>.<event>`).
    pub done_event: &'static str,
    /// The reply event of a refused action.
    pub refused_event: &'static str,
    /// The reply event of a finished undo (`None` without an undo).
    pub undone_event: Option<&'static str>,
    /// The PostgreSQL schema the service owns.
    pub schema: &'static str,
    /// Its migrations folder, under `workers/migrations/`.
    pub migrations: &'static str,
    /// Whether the saga ends without waiting for it: its failure never fails or compensates
    /// the checkout (it is recorded, counted and left at that).
    pub fire_and_forget: bool,
}

/// Every step, in the order the saga runs them; row `i` is the step whose discriminant is `i`.
pub const STEPS: [StepRow; 4] = [
    StepRow {
        step: Step::Inventory,
        service: "inventory",
        do_verb: "reserve",
        undo_verb: Some("release"),
        done_event: "reserved",
        refused_event: "unavailable",
        undone_event: Some("released"),
        schema: "inventory",
        migrations: "inventory",
        fire_and_forget: false,
    },
    StepRow {
        step: Step::Payment,
        service: "payment",
        do_verb: "charge",
        undo_verb: Some("refund"),
        done_event: "charged",
        refused_event: "declined",
        undone_event: Some("refunded"),
        schema: "payment",
        migrations: "payment",
        fire_and_forget: false,
    },
    StepRow {
        step: Step::Order,
        service: "order",
        do_verb: "create",
        undo_verb: Some("cancel"),
        done_event: "created",
        refused_event: "failed",
        undone_event: Some("cancelled"),
        schema: "orders",
        migrations: "orders",
        fire_and_forget: false,
    },
    StepRow {
        step: Step::Notification,
        service: "notification",
        do_verb: "send",
        undo_verb: None,
        done_event: "sent",
        refused_event: "failed",
        undone_event: None,
        schema: "notification",
        migrations: "notification",
        fire_and_forget: true,
    },
];

/// The worker kinds, one per step, in saga order: what `checkout worker <kind>` accepts and
/// what every process list starts.
pub fn worker_kinds() -> impl Iterator<Item = &'static str> {
    STEPS.iter().map(|row| row.service)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn row_i_is_the_step_with_discriminant_i() {
        for (i, row) in STEPS.iter().enumerate() {
            assert_eq!(row.step as usize, i);
            assert_eq!(Step::ALL[i], row.step);
        }
        assert_eq!(Step::ALL.len(), STEPS.len());
    }

    #[test]
    fn names_are_unique_and_fire_and_forget_steps_have_no_undo() {
        let services: BTreeSet<_> = worker_kinds().collect();
        assert_eq!(services.len(), STEPS.len());
        let schemas: BTreeSet<_> = STEPS.iter().map(|r| r.schema).collect();
        assert_eq!(schemas.len(), STEPS.len());
        for row in STEPS {
            assert_eq!(
                row.fire_and_forget,
                row.undo_verb.is_none(),
                "{}",
                row.service
            );
            assert_eq!(row.undo_verb.is_none(), row.undone_event.is_none());
            assert_ne!(row.done_event, row.refused_event);
        }
        // A fire-and-forget step runs after the checkout has completed, so it must come
        // after every step the checkout waits for.
        let first = STEPS.iter().position(|r| r.fire_and_forget);
        if let Some(first) = first {
            assert!(STEPS[first..].iter().all(|r| r.fire_and_forget));
        }
    }
}
