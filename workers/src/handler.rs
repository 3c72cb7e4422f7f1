//! Exactly-once effects over at-least-once delivery.
//!
//! An action's effect and a processed-message row holding its reply commit in one
//! transaction. A redelivery finds the row and gets the same reply.
//!
//! Inventory, payment and orders: each action and undo is one statement, a function its
//! worker's migration installs (`*_once`): it takes the saga's lock, replays a stored reply,
//! decides, acts and stores the reply, in one round trip and one commit, so no transaction
//! stays open between round trips. Two deliveries of one command wait on the saga's lock and
//! the second finds the first's reply.
//!
//! Notification keeps an explicit transaction (its attempts at the mail service run inside
//! it): the saga's lock, the replay, the send, the processed-message row; two deliveries
//! racing collide on the row's primary key and the loser is retried, to find the winner's
//! reply.
//!
//! Only decisions are stored: a success or a business refusal. A failure to act (the database
//! erred or could not be reached) is returned as a [`Failure`] and stored nowhere, so a later
//! delivery, or the same command sent afresh, still gets to decide.

use crate::config::Faults;
use crate::error::{ApplyError, Failure, FailureCode};
use crate::{inventory, notification, order, payment};
use checkout_shared::messages::{Command, Outcome, Reply};
use checkout_shared::{Envelope, Step};
use sqlx::{AssertSqlSafe, PgConnection, PgPool};
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
#[derive(Debug, sqlx::FromRow)]
pub struct Decided {
    /// The reply stored for the action.
    pub reply: sqlx::types::Json<Reply>,
    /// Whether it was stored by an earlier delivery.
    pub replayed: bool,
}

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

    /// One statement (inventory, payment, orders).
    async fn apply_one_statement(
        &self,
        pool: &PgPool,
        once: &Once<'_>,
        command: &Command,
    ) -> Result<Decided, sqlx::Error> {
        match command {
            Command::ReserveInventory { items } => inventory::reserve(pool, once, items).await,
            Command::ReleaseInventory => inventory::release(pool, once).await,
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
                payment::charge(pool, once, &charge, &self.faults).await
            }
            Command::RefundPayment => payment::refund(pool, once).await,
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
                order::create(pool, once, &new, &self.faults).await
            }
            Command::CancelOrder => order::cancel(pool, once).await,
            Command::SendNotification { .. } => Err(sqlx::Error::Protocol(
                "a confirmation is sent in a transaction, not one statement".into(),
            )),
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
    pool: &PgPool,
    handler: &Handler,
    envelope: &Envelope,
    command: &Command,
) -> Result<Reply, Failure> {
    let key = envelope.action_key();
    // The schema name comes from a closed set of constants, never from input.
    let schema = handler.schema();
    let db_span = tracing::info_span!(
        "db transaction",
        otel.name = %format!("{} {}", schema, envelope.step.action(envelope.phase)),
        otel.kind = "client",
        db.system.name = "postgresql",
        db.namespace = schema,
    );
    if !handler.faults.latency.is_zero() {
        tokio::time::sleep(handler.faults.latency).await;
    }
    let confirmation = match command {
        Command::SendNotification {
            customer_id,
            order_id,
            ..
        } => notification::Confirmation {
            customer_id,
            order_id: *order_id,
        },
        _ => {
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
                .apply_one_statement(pool, &once, command)
                .instrument(db_span)
                .await?;
            if decided.replayed {
                tracing::info!(action_key = %key, "duplicate delivery: re-sending the stored reply");
            }
            return Ok(decided.reply.0);
        }
    };
    async {
        let mut tx = pool.begin().await?;
        // One saga's action and undo must not run side by side in this service: a charge and
        // its refund would each miss the other's uncommitted row and both commit.
        lock_saga(&mut tx, envelope.saga_id).await?;
        if let Some(stored) = stored_reply(&mut tx, schema, &key).await? {
            tx.commit().await?;
            tracing::info!(action_key = %key, "duplicate delivery: re-sending the stored reply");
            return Ok(stored);
        }
        let sent = notification::send(&mut tx, envelope.saga_id, &confirmation, &handler.faults);
        let outcome = match sent.await.map(Some) {
            Ok(reference) => Outcome::StepSucceeded { reference },
            Err(ApplyError::Refused(reason)) => {
                // Undo whatever the refused action touched, and record only the refusal.
                tx.rollback().await?;
                tx = pool.begin().await?;
                lock_saga(&mut tx, envelope.saga_id).await?;
                Outcome::StepFailed { reason }
            }
            Err(ApplyError::Failed(failure)) => return Err(failure),
        };
        let reply = Reply {
            saga_id: envelope.saga_id,
            step: envelope.step,
            phase: envelope.phase,
            outcome,
        };
        let json = serde_json::to_value(&reply)
            .map_err(|e| Failure::new(FailureCode::Encode, format!("reply: {e}")))?;
        let inserted = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {schema}.processed_messages (action_key, reply) VALUES ($1, $2) \
             ON CONFLICT (action_key) DO NOTHING"
        )))
        .bind(&key)
        .bind(json)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            // A concurrent delivery of the same command committed first; its reply wins.
            tx.rollback().await?;
            return Err(Failure::new(
                FailureCode::Conflict,
                format!("{key} was processed concurrently"),
            ));
        }
        tx.commit().await?;
        Ok(reply)
    }
    .instrument(db_span)
    .await
}

/// The reply already stored for an action, if it was performed (or refused) before.
async fn stored_reply(
    conn: &mut PgConnection,
    schema: &'static str,
    key: &str,
) -> Result<Option<Reply>, sqlx::Error> {
    let stored: Option<serde_json::Value> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT reply FROM {schema}.processed_messages WHERE action_key = $1"
    )))
    .bind(key)
    .fetch_optional(conn)
    .await?;
    stored
        .map(|json| serde_json::from_value(json).map_err(|e| sqlx::Error::Decode(Box::new(e))))
        .transpose()
}

/// Serializes one saga's work in this service until the transaction ends.
async fn lock_saga(conn: &mut PgConnection, saga_id: uuid::Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(saga_id.to_string())
        .execute(conn)
        .await?;
    Ok(())
}
