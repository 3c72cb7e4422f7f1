//! The errors at the worker's boundaries. Each per-message error maps to exactly one
//! settlement of the message.

use std::time::Duration;

/// Why a worker could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// NATS could not be reached.
    #[error(transparent)]
    Connect(#[from] checkout_shared::connect::ConnectFailed),
    /// The streams or consumers could not be provisioned.
    #[error(transparent)]
    Provision(#[from] checkout_shared::streams::ProvisionError),
    /// The database could not be reached.
    #[error("connecting to PostgreSQL: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema could not be migrated.
    #[error("migrating the schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The catalog could not be published.
    #[error("publishing the catalog: {0}")]
    Catalog(String),
}

/// What a handler's action or undo can end in, besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A business "no" (out of stock, declined): the saga's step fails; reply and ack.
    #[error("{0}")]
    Refused(String),
    /// The database failed; nak and try again later.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// How one message is settled with JetStream. Every outcome of handling maps to one of these.
#[derive(Debug)]
pub enum Settlement {
    /// Send this reply, then ack.
    Reply(checkout_shared::messaging::Outgoing),
    /// Could not be handled now: nak, to be redelivered after the delay.
    Retry {
        /// Redelivery delay.
        after: Duration,
        /// Why, for the log.
        reason: String,
    },
    /// Can never be handled: record it in the dead-letter stream, send the failure reply if
    /// the saga is known (so it compensates rather than hangs), then terminate.
    DeadLetter {
        /// Why, in the `Saga-Reason` header and the log.
        reason: String,
        /// The failure reply for the saga, when its envelope could be read.
        reply: Option<checkout_shared::messaging::Outgoing>,
    },
}

/// A stable code for a dead letter's reason, for `checkout.dead_letters` (the reason itself is
/// free text with ids in it). Read from the fixed openings of the reasons `consume` writes.
pub fn dead_letter_code(reason: &str) -> &'static str {
    if reason.starts_with("gave up after") {
        "max_deliveries"
    } else if reason.contains(" command reached the ") {
        "wrong_worker"
    } else if reason.starts_with("unreadable envelope") {
        "unreadable_envelope"
    } else {
        "undecodable"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_reasons_map_to_stable_codes() {
        let code = dead_letter_code;
        assert_eq!(
            code("gave up after 5 deliveries: database: x"),
            "max_deliveries"
        );
        assert_eq!(
            code("a payment command reached the order worker"),
            "wrong_worker"
        );
        assert_eq!(
            code("unreadable envelope: missing Saga-Id"),
            "unreadable_envelope"
        );
        assert_eq!(code("malformed body: expected value"), "undecodable");
    }
}
