//! Exactly-once effects over at-least-once delivery.
//!
//! An action's effect and a processed-message row holding its reply commit in one
//! transaction. A redelivery finds the row and gets the same reply.
//!
//! Inventory, payment and orders: each action and undo is one statement, a function its
//! worker's migration installs (`*_once`): it takes the saga's lock, replays a stored reply,
//! decides, acts and stores the reply, so no transaction stays open between round trips. The
//! calls of the messages in hand share one statement and one commit ([`crate::calls`], group
//! commit). Two deliveries of one command wait on the saga's lock (or run in order in one
//! statement) and the second finds the first's reply.
//!
//! Notification calls its function the same way, after a read-only check and its attempts at
//! the mail service (see [`crate::notification`]).
//!
//! Only decisions are stored: a success or a business refusal. A failure to act (the database
//! erred or could not be reached) is returned as a [`Failure`] and stored nowhere, so a later
//! delivery, or the same command sent afresh, still gets to decide.

use crate::calls::Db;
use crate::config::Faults;
use crate::error::Failure;
use crate::{inventory, notification, order, payment};
use checkout_shared::messages::{Command, Reply};
use checkout_shared::{Envelope, Step};
use tracing::Instrument;
use uuid::Uuid;

/// What every action's statement gets besides its own arguments.
#[derive(Debug)]
pub struct Once<'a> {
    /// The action key (`{saga_id}.{step}.{phase}`) its reply is stored under.
    pub key: &'a str,
    /// The saga, whose lock serializes its action and undo in this service.
    pub saga_id: Uuid,
    /// The reply without its outcome (saga, step, phase), which the statement completes.
    pub reply: serde_json::Value,
}

/// A decision as the statement returns it.
pub type Decided = crate::calls::Called;

/// The business logic of one worker kind.
#[derive(Debug, Clone)]
pub struct Handler {
    kind: Step,
    faults: Faults,
}

impl Handler {
    /// The handler of `kind` with the given injected faults.
    pub fn new(kind: Step, faults: Faults) -> Self {
        Handler { kind, faults }
    }

    /// The step this handler serves.
    pub fn kind(&self) -> Step {
        self.kind
    }

    /// The PostgreSQL schema this handler owns.
    pub fn schema(&self) -> &'static str {
        schema_of(self.kind)
    }

    /// One statement (inventory, payment, orders; two for notification).
    async fn apply_one_statement(
        &self,
        db: &Db,
        once: &Once<'_>,
        command: &Command,
    ) -> Result<Decided, sqlx::Error> {
        match command {
            Command::ReserveInventory { items } => inventory::reserve(db, once, items).await,
            Command::ReleaseInventory => inventory::release(db, once).await,
            Command::ChargePayment {
                customer_id,
                payment_token,
                amount_cents,
            } => {
                let charge = payment::Charge {
                    customer_id,
                    payment_token,
                    amount_cents,
                };
                payment::charge(db, once, &charge, &self.faults).await
            }
            Command::RefundPayment => payment::refund(db, once).await,
            Command::CreateOrder {
                customer_id,
                items,
                amount_cents,
            } => {
                let new = order::NewOrder {
                    customer_id,
                    items,
                    amount_cents: *amount_cents,
                };
                order::create(db, once, &new, &self.faults).await
            }
            Command::CancelOrder => order::cancel(db, once).await,
            Command::SendNotification {
                customer_id,
                order_id,
                ..
            } => {
                let confirmation = notification::Confirmation {
                    customer_id,
                    order_id: *order_id,
                };
                notification::send(db, once, &confirmation, &self.faults).await
            }
        }
    }
}

/// The schema a worker kind owns (its row of the step table).
pub fn schema_of(kind: Step) -> &'static str {
    kind.schema()
}

/// Performs `command` at most once for its action key and returns the reply to send.
/// Only failures to act come back as errors; a refusal is a reply.
pub async fn apply_once(
    db: &Db,
    handler: &Handler,
    envelope: &Envelope,
    command: &Command,
) -> Result<Reply, Failure> {
    let key = envelope.action_key();
    // The schema name comes from a closed set of constants, never from input.
    let schema = handler.schema();
    let db_span = tracing::info_span!(
        "db transaction",
        otel.name = %format!("{} {}", schema, envelope.step.verb(envelope.phase).unwrap_or("none")),
        otel.kind = "client",
        db.system.name = "postgresql",
        db.namespace = schema,
    );
    if !handler.faults.latency.is_zero() {
        tokio::time::sleep(handler.faults.latency).await;
    }
    let once = Once {
        key: &key,
        saga_id: envelope.saga_id,
        reply: serde_json::json!({
            "saga_id": envelope.saga_id,
            "step": envelope.step,
            "phase": envelope.phase,
        }),
    };
    // Any error of the statement is a failure to act (classified by `Failure`'s
    // `From<sqlx::Error>`), never a refusal: refusals come back as replies.
    let decided = handler
        .apply_one_statement(db, &once, command)
        .instrument(db_span)
        .await?;
    if decided.replayed {
        // On the process span: a trace then tells a command done under this message from one
        // done earlier, under another message of the saga (a re-send) or another delivery.
        tracing::Span::current().record("saga.replayed", true);
        tracing::info!(action_key = %key, "duplicate delivery: re-sending the stored reply");
    }
    Ok(decided.reply.0)
}
