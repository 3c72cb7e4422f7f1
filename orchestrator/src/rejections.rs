//! Checkouts refused at the door: each is recorded once by its checkout id and answered with
//! a `rejected` lifecycle event (its reason code, the field at fault, the reason in words);
//! every later delivery of the same checkout gets that same event again, and nothing else.
//!
//! ```text
//!  refused ─▶ has a checkout id? ──no──▶ checkout.rejected (all a body without one can get)
//!                  │ yes
//!                  ▼
//!  saga.rejections has it? ──yes──▶ checkout.saga.<id>.rejected again (the stored answer)
//!                  │ no (and no saga has the id: then it is a duplicate, ignored)
//!                  ▼
//!  checkout.rejected ─▶ saga.rejections (one row) ─▶ checkout.saga.<id>.rejected
//! ```
//!
//! The stored answer stands even if the catalog changes: a request sent again after its price
//! was fixed is still the refused checkout (a new checkout has a new id), and a saga is never
//! started for a refused id (a saga and a refusal both claim the id in `saga.checkout_ids`,
//! and only the first claim stands).

use async_nats::jetstream::{self, AckKind};
use bytes::Bytes;
use checkout_door::validate::Rejection;
use checkout_shared::messages::{LifecycleEvent, LifecycleKind, MAX_REQUEST_BYTES};
use checkout_shared::messaging::{self, Outgoing};
use checkout_shared::{RejectionCode, SagaStatus, envelope, metrics, subjects};
use chrono::{DateTime, Utc};
use opentelemetry::trace::TraceContextExt;
use serde::Serialize;
use sqlx::{PgPool, Row};
use std::time::Duration;
use uuid::Uuid;

/// How soon a request whose refusal could not be recorded or announced is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// A refused checkout, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct RejectionRow {
    /// The checkout id (the saga id it would have had).
    pub saga_id: Uuid,
    /// Why, by code.
    #[sqlx(try_from = "String")]
    pub code: RejectionCode,
    /// Why, for people.
    pub reason: String,
    /// The field at fault, as a path into the request, when one is.
    pub field: Option<String>,
    /// The trace the request came with (empty if it came with none).
    pub trace_id: String,
    /// When it was refused.
    pub at: DateTime<Utc>,
}

impl RejectionRow {
    /// The record of `rejection` for checkout `saga_id`, refused now.
    pub fn new(saga_id: Uuid, rejection: &Rejection, trace_id: String) -> Self {
        RejectionRow {
            saga_id,
            code: rejection.code(),
            reason: rejection.to_string(),
            field: rejection.field(),
            trace_id,
            at: Utc::now(),
        }
    }

    /// The lifecycle event that answers every delivery of the refused checkout.
    pub fn event(&self) -> LifecycleEvent {
        LifecycleEvent {
            saga_id: self.saga_id,
            kind: LifecycleKind::Rejected,
            status: Some(SagaStatus::Rejected),
            step: None,
            phase: None,
            outcome: None,
            next: None,
            failure_code: None,
            rejection: Some(self.code),
            field: self.field.clone(),
            detail: self.reason.clone(),
            trace_id: self.trace_id.clone(),
        }
    }
}

/// What the store knows of a checkout id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Known {
    /// Refused before, with this answer.
    Rejected(RejectionRow),
    /// A saga has it (the request is a duplicate of an accepted checkout).
    Saga,
    /// Nothing yet.
    Unknown,
}

/// The columns of a [`RejectionRow`], as a literal so that queries stay static strings.
macro_rules! columns {
    () => {
        "saga_id, code, reason, field, trace_id, at"
    };
}

/// A refused checkout's record, if it has one.
pub async fn get(pool: &PgPool, saga_id: Uuid) -> Result<Option<RejectionRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM saga.rejections WHERE saga_id = $1"
    ))
    .bind(saga_id)
    .fetch_optional(pool)
    .await
}

/// Whether a checkout id was refused before, belongs to a saga, or is new (one round trip).
pub async fn known(pool: &PgPool, saga_id: Uuid) -> Result<Known, sqlx::Error> {
    let row = sqlx::query(
        "SELECT EXISTS (SELECT 1 FROM saga.sagas WHERE saga_id = $1) AS saga, \
           (SELECT to_jsonb(r) FROM saga.rejections r WHERE r.saga_id = $1) AS rejection",
    )
    .bind(saga_id)
    .fetch_one(pool)
    .await?;
    if let Some(sqlx::types::Json(stored)) =
        row.try_get::<Option<sqlx::types::Json<StoredJson>>, _>("rejection")?
    {
        return Ok(Known::Rejected(stored.into_row()?));
    }
    Ok(if row.try_get("saga")? {
        Known::Saga
    } else {
        Known::Unknown
    })
}

/// A rejection row as `to_jsonb` spells it.
#[derive(serde::Deserialize)]
struct StoredJson {
    saga_id: Uuid,
    code: String,
    reason: String,
    field: Option<String>,
    trace_id: String,
    at: DateTime<Utc>,
}

impl StoredJson {
    fn into_row(self) -> Result<RejectionRow, sqlx::Error> {
        Ok(RejectionRow {
            saga_id: self.saga_id,
            code: self
                .code
                .parse()
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            reason: self.reason,
            field: self.field,
            trace_id: self.trace_id,
            at: self.at,
        })
    }
}

/// Records a refusal unless the id already has one (or a saga); returns the answer stored for
/// the id, the new one or the earlier, or `None` when a saga has the id. The refusal claims
/// the id in `saga.checkout_ids` first, as a saga does, so that a saga and a refusal racing
/// for one id can never both commit.
pub async fn record<'e>(
    db: impl sqlx::PgExecutor<'e>,
    rejection: &RejectionRow,
) -> Result<Option<RejectionRow>, sqlx::Error> {
    // The outer SELECT reads the table as it was before the INSERT: one row either way.
    sqlx::query_as(concat!(
        "WITH claimed AS (INSERT INTO saga.checkout_ids (saga_id) VALUES ($1) \
           ON CONFLICT (saga_id) DO NOTHING RETURNING saga_id), \
         ins AS (INSERT INTO saga.rejections (",
        columns!(),
        ") SELECT $1, $2, $3, $4, $5, $6 FROM claimed \
           ON CONFLICT (saga_id) DO NOTHING RETURNING ",
        columns!(),
        ") SELECT ",
        columns!(),
        " FROM ins UNION ALL SELECT ",
        columns!(),
        " FROM saga.rejections WHERE saga_id = $1"
    ))
    .bind(rejection.saga_id)
    .bind(rejection.code.as_str())
    .bind(&rejection.reason)
    .bind(&rejection.field)
    .bind(&rejection.trace_id)
    .bind(rejection.at)
    .fetch_optional(db)
    .await
}

/// The checkout id a refused body names, if it names one: a JSON object whose `checkout_id`
/// is a UUID other than nil, whatever else is wrong with it. A body too large to be a
/// checkout is not read.
pub fn checkout_id(payload: &[u8]) -> Option<Uuid> {
    #[derive(serde::Deserialize)]
    struct Id {
        checkout_id: Uuid,
    }
    if payload.len() > MAX_REQUEST_BYTES {
        return None;
    }
    let id = serde_json::from_slice::<Id>(payload).ok()?.checkout_id;
    (!id.is_nil()).then_some(id)
}

/// Refuses a checkout request: records it, tells its watchers, and sets its body aside on
/// `checkout.rejected`; a checkout refused before gets its stored answer again.
pub async fn refuse(
    js: &jetstream::Context,
    pool: &PgPool,
    message: &jetstream::Message,
    rejection: Rejection,
) -> AckKind {
    let reason = rejection.to_string();
    messaging::mark_error(&tracing::Span::current(), &reason);
    let Some(saga_id) = checkout_id(&message.payload) else {
        tracing::warn!(kind = rejection.kind(), %reason, "checkout rejected");
        return settle(set_aside(js, message, &rejection).await);
    };
    let stored = match known(pool, saga_id).await {
        Ok(Known::Rejected(stored)) => stored,
        Ok(Known::Saga) => {
            tracing::info!(%saga_id, "duplicate of a started checkout ignored");
            return AckKind::Ack;
        }
        Ok(Known::Unknown) => {
            tracing::warn!(%saga_id, kind = rejection.kind(), %reason, "checkout rejected");
            if let Err(kind) = set_aside(js, message, &rejection).await {
                return kind;
            }
            let row = RejectionRow::new(saga_id, &rejection, trace_id(message));
            match record(pool, &row).await {
                Ok(Some(stored)) => stored,
                // A saga took the id in between: the request is its duplicate.
                Ok(None) => return AckKind::Ack,
                Err(err) => return not_recorded(&err),
            }
        }
        Err(err) => return not_recorded(&err),
    };
    settle(announce(js, &stored).await)
}

/// Answers a request whose saga was not started because its id was refused before: the
/// stored answer again. `Ack` when the id has no refusal either (a plain duplicate).
pub async fn answer_again(js: &jetstream::Context, pool: &PgPool, saga_id: Uuid) -> AckKind {
    match get(pool, saga_id).await {
        Ok(Some(stored)) => settle(announce(js, &stored).await),
        Ok(None) => AckKind::Ack,
        Err(err) => not_recorded(&err),
    }
}

fn settle(result: Result<(), AckKind>) -> AckKind {
    result.err().unwrap_or(AckKind::Ack)
}

fn not_recorded(err: &sqlx::Error) -> AckKind {
    metrics::get().redelivered("store_unavailable");
    tracing::warn!(error = %err, "rejection not recorded; retrying the request");
    AckKind::Nak(Some(RETRY))
}

/// The trace of the request, from its headers.
fn trace_id(message: &jetstream::Message) -> String {
    let cx = checkout_shared::propagation::extract(message.headers.as_ref());
    let span = cx.span();
    let context = span.span_context();
    if context.is_valid() {
        context.trace_id().to_string()
    } else {
        String::new()
    }
}

/// Publishes the refused checkout's lifecycle event, stored in the lifecycle stream (once
/// within the duplicate window: every copy still reaches the watchers following it live).
async fn announce(js: &jetstream::Context, stored: &RejectionRow) -> Result<(), AckKind> {
    let payload = serde_json::to_vec(&stored.event()).map_err(|err| {
        tracing::error!(error = %err, "rejected event not serialisable");
        AckKind::Term
    })?;
    let kind = LifecycleKind::Rejected.as_str();
    let outgoing = Outgoing {
        subject: subjects::lifecycle(stored.saga_id, kind),
        msg_id: format!("{}.{kind}", stored.saga_id),
        headers: async_nats::HeaderMap::new(),
        payload: Bytes::from(payload),
    };
    messaging::send(js, outgoing).await.map_err(|err| {
        metrics::get().redelivered("rejection_not_announced");
        tracing::warn!(error = %err, "rejected event not published; retrying the request");
        AckKind::Nak(Some(RETRY))
    })
}

/// Keeps the refused body on `checkout.rejected`, with its reason and code in headers.
async fn set_aside(
    js: &jetstream::Context,
    message: &jetstream::Message,
    rejection: &Rejection,
) -> Result<(), AckKind> {
    let seq = message.info().map(|i| i.stream_sequence).unwrap_or(0);
    let mut payload = message.payload.clone();
    if payload.len() > MAX_REQUEST_BYTES {
        // Keep the evidence, not the whole oversized body.
        payload = Bytes::copy_from_slice(&payload[..1024]);
    }
    let mut outgoing = messaging::set_aside(
        subjects::REJECTED.to_owned(),
        format!("rejected.{seq}"),
        &message.subject,
        message.headers.as_ref(),
        payload,
        &rejection.to_string(),
    );
    outgoing
        .headers
        .insert(envelope::REASON_KIND, rejection.kind());
    match messaging::send(js, outgoing).await {
        Ok(()) => {
            metrics::get().rejected(rejection.kind());
            Ok(())
        }
        Err(err) => {
            metrics::get().redelivered("rejection_not_stored");
            tracing::warn!(error = %err, "rejection not recorded; retrying the request");
            Err(AckKind::Nak(Some(RETRY)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_body_names_its_checkout_id_when_it_has_a_usable_one() {
        let id = Uuid::new_v4();
        let missing_token = format!(r#"{{"checkout_id":"{id}","items":[]}}"#);
        assert_eq!(checkout_id(missing_token.as_bytes()), Some(id));
        assert_eq!(checkout_id(b"{not json"), None);
        assert_eq!(checkout_id(br#"{"checkout_id":"nope"}"#), None);
        let nil = format!(r#"{{"checkout_id":"{}"}}"#, Uuid::nil());
        assert_eq!(
            checkout_id(nil.as_bytes()),
            None,
            "the nil id is no checkout's"
        );
        let mut huge = missing_token.into_bytes();
        huge.resize(MAX_REQUEST_BYTES + 1, b' ');
        assert_eq!(checkout_id(&huge), None);
    }

    #[test]
    fn the_event_carries_the_code_the_field_and_the_reason() {
        let rejection = Rejection::UnknownSku {
            field: "items[1].sku".into(),
            sku: "SKU-NOPE".into(),
        };
        let row = RejectionRow::new(Uuid::nil(), &rejection, "t".into());
        let event = row.event();
        assert_eq!(event.kind, LifecycleKind::Rejected);
        assert_eq!(event.status, Some(SagaStatus::Rejected));
        assert_eq!(event.rejection, Some(RejectionCode::UnknownSku));
        assert_eq!(event.field.as_deref(), Some("items[1].sku"));
        assert_eq!(event.detail, r#"unknown sku "SKU-NOPE""#);
    }
}
