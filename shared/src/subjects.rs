//! Subject names and builders. Every subject the system uses is spelled here, once.

use crate::envelope::{Phase, Step};
use uuid::Uuid;

/// Where clients publish new checkouts.
pub const CHECKOUT_REQUESTED: &str = "checkout.requested";
/// Prefix of every command the orchestrator sends to a worker.
pub const COMMANDS: &str = "checkout.cmd";
/// Prefix of every reply a worker sends back.
pub const EVENTS: &str = "checkout.evt";
/// Prefix of the lifecycle events that watchers follow.
pub const LIFECYCLE: &str = "checkout.saga";
/// Where rejected checkout requests go, with their reason in a header.
pub const REJECTED: &str = "checkout.rejected";
/// Where messages that cannot be processed go, with their reason in a header.
pub const DEAD_LETTER: &str = "checkout.dlq";

/// The command subject for one step's action or undo, e.g. `checkout.cmd.payment.refund`
/// (`none` for the undo of a step without one, which no command is ever sent on).
pub fn command(step: Step, phase: Phase) -> String {
    format!("{COMMANDS}.{step}.{}", step.verb(phase).unwrap_or("none"))
}

/// All commands one worker kind consumes, e.g. `checkout.cmd.payment.>`.
pub fn commands_for(step: Step) -> String {
    format!("{COMMANDS}.{step}.>")
}

/// The reply subject for a step's outcome, e.g. `checkout.evt.payment.declined`.
pub fn event(step: Step, event_name: &str) -> String {
    format!("{EVENTS}.{step}.{event_name}")
}

/// Lifecycle subject for one saga, e.g. `checkout.saga.<id>.completed`.
pub fn lifecycle(saga_id: Uuid, kind: &str) -> String {
    format!("{LIFECYCLE}.{saga_id}.{kind}")
}

/// Every lifecycle event of one saga.
pub fn lifecycle_of(saga_id: Uuid) -> String {
    format!("{LIFECYCLE}.{saga_id}.>")
}

/// Prefix of the catalog of SKUs.
pub const CATALOG: &str = "checkout.catalog";

/// The catalog subject of a SKU, or `None` when the SKU cannot be a subject token (such a
/// SKU is never sold).
pub fn catalog_entry(sku: &str) -> Option<String> {
    let valid = !sku.is_empty()
        && sku
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
    valid.then(|| format!("{CATALOG}.{sku}"))
}

/// Dead-letter subject for a message that came from `origin`.
pub fn dead_letter(origin: &str) -> String {
    format!("{DEAD_LETTER}.{origin}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_subjects_match_the_design() {
        assert_eq!(
            command(Step::Inventory, Phase::Do),
            "checkout.cmd.inventory.reserve"
        );
        assert_eq!(
            command(Step::Inventory, Phase::Undo),
            "checkout.cmd.inventory.release"
        );
        assert_eq!(
            command(Step::Payment, Phase::Do),
            "checkout.cmd.payment.charge"
        );
        assert_eq!(
            command(Step::Payment, Phase::Undo),
            "checkout.cmd.payment.refund"
        );
        assert_eq!(command(Step::Order, Phase::Do), "checkout.cmd.order.create");
        assert_eq!(commands_for(Step::Order), "checkout.cmd.order.>");
        assert_eq!(
            command(Step::Notification, Phase::Do),
            "checkout.cmd.notification.send"
        );
        assert_eq!(
            catalog_entry("SKU-1").as_deref(),
            Some("checkout.catalog.SKU-1")
        );
        assert_eq!(catalog_entry("a.b"), None);
        assert_eq!(catalog_entry("*"), None);
    }
}
