//! The errors at the worker's boundaries.
//!
//! A command ends in exactly one of three ways, and each has exactly one settlement:
//!
//! - a decision (done, or a business refusal), `Ok(reply)`: store, reply, ack;
//! - a failure to act (the database did not let the worker decide), [`MessageError::Failed`]:
//!   nak with capped exponential backoff; never stored, never replied;
//! - undeliverable (cannot be read, wrong worker), [`MessageError::Undeliverable`]:
//!   dead-letter, tell the saga of a refused action, terminate.
//!
//! A failure to act never turns into a refusal, however many deliveries it has had: when
//! JetStream's `max_deliver` runs out, its max-deliveries advisory dead-letters the command
//! and the orchestrator's deadline sends it afresh (an undo) or undoes it (an action).

use checkout_shared::messaging::Outgoing;
use std::fmt;

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
    /// The consume loop stopped although no shutdown was asked for.
    #[error("the consume loop of {0} ended before shutdown")]
    EndedEarly(String),
}

/// Why one delivered command got no decision. Each variant is settled exactly one way.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// A failure to act: nak with capped exponential backoff, whatever the delivery count.
    #[error(transparent)]
    Failed(#[from] Failure),
    /// Can never be handled: dead-letter with the reason, send `reply` if there is one (only
    /// for an action whose saga is known: the saga then compensates rather than hangs), and
    /// terminate. An undo gets no such reply, because an undo has no refusal.
    #[error("undeliverable: {reason}")]
    Undeliverable {
        /// Why, in the `Saga-Reason` header and the log.
        reason: String,
        /// The refusal to send the saga, for an action.
        reply: Option<Outgoing>,
    },
}

/// A failure to act: the database (or the broker) did not let the worker decide. It is
/// logged and traced with its code, and the command is retried.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct Failure {
    /// What kind of failure, for logs, span attributes and metrics.
    pub code: FailureCode,
    /// The underlying error, for people.
    pub detail: String,
}

impl Failure {
    /// A failure of `code`.
    pub fn new(code: FailureCode, detail: impl Into<String>) -> Self {
        Failure {
            code,
            detail: detail.into(),
        }
    }
}

impl From<sqlx::Error> for Failure {
    fn from(err: sqlx::Error) -> Self {
        Failure::new(FailureCode::of(&err), err.to_string())
    }
}

/// The stable codes of a failure to act (the `failure.code` span attribute).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureCode {
    /// The database cannot be reached, or dropped the connection, or is shutting down.
    DatabaseUnavailable,
    /// A table, column or schema the handler needs is missing (SQLSTATE 42P01, 42703,
    /// 3F000): the schema was changed under the worker.
    MissingRelation,
    /// A statement, lock or pool wait timed out.
    Timeout,
    /// A concurrent transaction won: serialization failure, deadlock, or another delivery of
    /// the same command committed first. The retry finds the winner's reply.
    Conflict,
    /// The broker did not take the reply or the dead letter.
    Broker,
    /// The reply left but the message's spans were not yet known exported: acked now, a
    /// process killed next would leave the command without its `process` span. The
    /// redelivery replays the stored reply under a new one.
    Telemetry,
    /// A reply could not be serialised (a bug). Retried like any failure, so it ends
    /// dead-lettered by JetStream's advisory with its reason, never sent as an empty body.
    Encode,
    /// Any other database error. Still a failure to act: only a handler decides to refuse.
    Database,
}

impl FailureCode {
    /// Classifies a database error.
    pub fn of(err: &sqlx::Error) -> FailureCode {
        match err {
            sqlx::Error::Database(db) => Self::of_sqlstate(db.code().as_deref().unwrap_or("")),
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::BeginFailed => FailureCode::DatabaseUnavailable,
            sqlx::Error::PoolTimedOut => FailureCode::Timeout,
            _ => FailureCode::Database,
        }
    }

    /// Classifies a PostgreSQL SQLSTATE.
    fn of_sqlstate(code: &str) -> FailureCode {
        match code {
            "42P01" | "42703" | "3F000" => FailureCode::MissingRelation,
            // query_canceled (statement_timeout), lock_not_available (lock_timeout),
            // idle_in_transaction_session_timeout
            "57014" | "55P03" | "25P03" => FailureCode::Timeout,
            // serialization_failure, deadlock_detected
            "40001" | "40P01" => FailureCode::Conflict,
            // connection exceptions, admin/crash shutdown, cannot connect now, too many
            // connections
            c if c.starts_with("08") => FailureCode::DatabaseUnavailable,
            "57P01" | "57P02" | "57P03" | "53300" => FailureCode::DatabaseUnavailable,
            _ => FailureCode::Database,
        }
    }

    /// The code as logged and traced.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureCode::DatabaseUnavailable => "database_unavailable",
            FailureCode::MissingRelation => "missing_relation",
            FailureCode::Timeout => "timeout",
            FailureCode::Conflict => "conflict",
            FailureCode::Broker => "broker",
            FailureCode::Telemetry => "telemetry",
            FailureCode::Encode => "encode",
            FailureCode::Database => "database",
        }
    }
}

impl fmt::Display for FailureCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stable code for a dead letter's reason, for `checkout.dead_letters` (the reason itself is
/// free text with ids in it). Read from the fixed openings of the reasons `consume` writes.
pub fn dead_letter_code(reason: &str) -> &'static str {
    if reason.contains(" command reached the ") {
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
    fn sqlstates_classify_as_the_failure_they_are() {
        let of = FailureCode::of_sqlstate;
        assert_eq!(of("42P01"), FailureCode::MissingRelation);
        assert_eq!(of("57014"), FailureCode::Timeout);
        assert_eq!(of("55P03"), FailureCode::Timeout);
        assert_eq!(of("40001"), FailureCode::Conflict);
        assert_eq!(of("40P01"), FailureCode::Conflict);
        assert_eq!(of("08006"), FailureCode::DatabaseUnavailable);
        assert_eq!(of("57P01"), FailureCode::DatabaseUnavailable);
        // A constraint violation is a database error, not a business refusal.
        assert_eq!(of("23514"), FailureCode::Database);
        assert_eq!(of(""), FailureCode::Database);
    }

    #[test]
    fn connection_level_errors_are_unavailability_and_pool_waits_timeouts() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(FailureCode::of(&io), FailureCode::DatabaseUnavailable);
        assert_eq!(
            FailureCode::of(&sqlx::Error::PoolClosed),
            FailureCode::DatabaseUnavailable
        );
        assert_eq!(
            FailureCode::of(&sqlx::Error::PoolTimedOut),
            FailureCode::Timeout
        );
        assert_eq!(
            FailureCode::of(&sqlx::Error::RowNotFound),
            FailureCode::Database
        );
    }

    #[test]
    fn every_database_error_is_a_failure_to_act_never_a_refusal() {
        let err: Failure = sqlx::Error::PoolTimedOut.into();
        assert_eq!(err.code, FailureCode::Timeout);
    }

    #[test]
    fn dead_letter_reasons_map_to_stable_codes() {
        let code = dead_letter_code;
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
