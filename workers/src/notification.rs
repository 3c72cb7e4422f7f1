//! Notification: sends the order confirmation (simulated), once per order, after the checkout
//! has completed. Fire-and-forget for the saga: a confirmation that cannot be sent is retried
//! here within [`Faults::notification_attempts`], then refused as `notification_failed`,
//! which the orchestrator records and counts without touching the checkout.
//!
//! ```text
//!  send ─▶ sent before? ─yes─▶ the same reply, or the same confirmation (one per order)
//!            │ no
//!            ▼
//!  attempt 1 ─fail─▶ wait ─▶ attempt 2 ─fail─▶ ... ─▶ refused: notification_failed
//!     │ ok                      │ ok
//!     └──────────┬──────────────┘
//!                ▼
//!        confirmation row and processed-message row (one statement)
//! ```
//!
//! Two statements (`notification.sent_before`, `notification.confirm_once`), with the mail
//! service called between them and outside any transaction. The mail service takes the saga
//! id as its idempotency key, so two deliveries racing past the first statement still send
//! one mail; the second statement keeps the first confirmation recorded.

use crate::calls::{self, Db};
use crate::chance::{self, FaultKind};
use crate::config::Faults;
use crate::handler::{Decided, Once};
use checkout_shared::messages::{Refusal, RefusalCode};
use checkout_shared::messaging::mark_error;
use serde_json::json;
use std::time::Duration;
use tracing::Instrument;
use uuid::Uuid;

/// What to confirm.
#[derive(Debug)]
pub struct Confirmation<'a> {
    /// To whom.
    pub customer_id: &'a str,
    /// Which order.
    pub order_id: Option<Uuid>,
}

/// Sends the confirmation of `once.saga_id`'s order, or refuses once every attempt failed.
#[tracing::instrument(name = "notification send", skip_all, fields(otel.kind = "internal"))]
pub async fn send(
    db: &Db,
    once: &Once<'_>,
    confirmation: &Confirmation<'_>,
    faults: &Faults,
) -> Result<Decided, sqlx::Error> {
    let (stored, sent): (
        Option<sqlx::types::Json<checkout_shared::messages::Reply>>,
        Option<Uuid>,
    ) = sqlx::query_as("SELECT reply, confirmation_id FROM notification.sent_before($1, $2)")
        .bind(once.key)
        .bind(once.saga_id)
        .fetch_one(db.pool())
        .await?;
    if let Some(reply) = stored {
        return Ok(Decided {
            reply,
            replayed: true,
            lines: None,
        });
    }
    // Sent before (its processed-message row was cleared): the customer has it already, and
    // the statement below answers with that confirmation.
    let (attempt, refusal) = if sent.is_some() {
        (0, None)
    } else {
        attempt_all(once.saga_id, faults).await
    };
    let args = json!([
        once.key,
        once.saga_id,
        once.reply,
        refusal,
        Uuid::new_v4(),
        confirmation.order_id,
        confirmation.customer_id,
        attempt,
    ]);
    db.call(&calls::CONFIRM, args).await
}

/// Tries the mail service up to `notification_attempts` times: the attempt that got through,
/// or the refusal once none did.
async fn attempt_all(saga_id: Uuid, faults: &Faults) -> (u32, Option<Refusal>) {
    let attempts = faults.notification_attempts.max(1);
    for attempt in 1..=attempts {
        if deliver(saga_id, attempt, faults).await {
            return (attempt, None);
        }
        if attempt < attempts {
            // Doubling pauses, so a mail server that is briefly down gets a chance.
            tokio::time::sleep(faults.notification_backoff * 2u32.pow(attempt - 1)).await;
        }
    }
    let refusal = Refusal::new(
        RefusalCode::NotificationFailed,
        format!("confirmation not sent after {attempts} attempts"),
    );
    (attempts, Some(refusal))
}

/// One attempt at the (simulated) mail service, as a client span of its own: whether it got
/// through. The failure is chosen by saga id and attempt, so a run is reproducible.
async fn deliver(saga_id: Uuid, attempt: u32, faults: &Faults) -> bool {
    let span = tracing::info_span!(
        "notification deliver",
        otel.kind = "client",
        notification.attempt = attempt,
        notification.channel = "email",
        notification.idempotency_key = %saga_id,
        otel.status_code = tracing::field::Empty,
        otel.status_message = tracing::field::Empty,
    );
    async {
        if !faults.notification_latency.is_zero() {
            tokio::time::sleep(faults.notification_latency).await;
        }
        let failed = fails(saga_id, attempt, faults);
        if failed {
            mark_error(&tracing::Span::current(), "mail service unavailable");
            tracing::warn!(attempt, "confirmation attempt failed");
        }
        !failed
    }
    .instrument(span)
    .await
}

/// Whether `attempt` at `saga_id`'s confirmation fails: a draw of its own per attempt, so a
/// saga whose first attempt failed is no likelier to fail the next.
pub(crate) fn fails(saga_id: Uuid, attempt: u32, faults: &Faults) -> bool {
    chance::hits(
        faults.notification_fail_rate,
        saga_id,
        FaultKind::NotificationAttempt,
        attempt,
    )
}

/// The pause before the second attempt when none is configured.
pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(50);

#[cfg(test)]
mod tests {
    use super::*;

    const N: usize = 4_000;

    fn failing(rate: f64) -> Faults {
        Faults {
            notification_fail_rate: rate,
            ..Faults::default()
        }
    }

    #[test]
    fn every_attempt_fails_at_the_configured_rate_the_first_too() {
        let ids: Vec<Uuid> = (0..N).map(|_| Uuid::new_v4()).collect();
        for rate in [0.1, 0.5] {
            for attempt in 1..=6 {
                let failed = ids
                    .iter()
                    .filter(|id| fails(**id, attempt, &failing(rate)))
                    .count();
                chance::assert_rate(failed, N, rate, &format!("attempt {attempt}"));
            }
        }
    }

    #[test]
    fn attempts_fail_independently_and_the_same_way_each_time() {
        let ids: Vec<Uuid> = (0..N).map(|_| Uuid::new_v4()).collect();
        let faults = failing(0.5);
        for (a, b) in [(1, 2), (2, 3), (1, 6)] {
            let both = ids
                .iter()
                .filter(|id| fails(**id, a, &faults) && fails(**id, b, &faults))
                .count();
            chance::assert_rate(both, N, 0.25, &format!("attempts {a} and {b} both"));
        }
        for id in &ids[..100] {
            for attempt in 1..=3 {
                assert_eq!(fails(*id, attempt, &faults), fails(*id, attempt, &faults));
            }
        }
    }
}
