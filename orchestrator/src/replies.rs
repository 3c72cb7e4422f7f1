//! Workers' replies as they arrive: each is applied to its saga only when it answers a
//! command the saga sent and waits for; every other is refused with a reason, and every one
//! is settled once, so nothing loops and nothing vanishes without a word.
//!
//! ```text
//!  checkout.evt.<step>.<event> ─▶ envelope + body readable? ──no──▶ dead letter (undecodable)
//!                                   │ yes
//!                                   ▼
//!                      headers and body agree? ──no──▶ dead letter (mismatch)
//!                                   │ yes
//!                                   ▼
//!   the subject its step's worker answers this outcome on? ──no──▶ refused: reply_wrong_subject
//!                                   │ yes
//!                                   ▼
//!          names the command it answers (Saga-Command-Id)? ──no──▶ refused: reply_unkeyed
//!                                   │ yes
//!                                   ▼
//!        executor: on the saga's current version, answers what the saga sent and waits for?
//!                                   │ yes                        │ no
//!                                   ▼                            ▼
//!                         applied, acked          refused (reply_not_awaited, reply_unsent, ...)
//! ```
//!
//! A refusal is acked (a forged or stale reply redelivered forever would be a loop), logged
//! at warn with the reply's trace id, its saga, the code and what the reply named against
//! what the saga waits for, and counted in `checkout.rejections` under the code. The subject
//! check is what ties a reply to an identity: the broker lets only a step's own worker
//! publish on `checkout.evt.<step>.>`, so a reply whose body speaks for another step is
//! refused here rather than trusted.

use crate::executor::{Answered, ExecError, Executor};
use async_nats::jetstream::{self, AckKind};
use checkout_shared::envelope::Envelope;
use checkout_shared::messages::Reply;
use checkout_shared::{CommandId, ReplyRefusal, json_error, messaging, metrics, subjects};
use opentelemetry::trace::TraceContextExt;
use std::time::Duration;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Applies or refuses one reply; the settlement of its message. `retry_after` is the
/// consumer's redelivery delay for this delivery, used when the saga store could not be
/// reached (the reply is then retried, never dropped).
pub async fn on_reply(
    executor: &Executor,
    js: &jetstream::Context,
    message: &jetstream::Message,
    retry_after: Duration,
) -> AckKind {
    let decoded = Envelope::read(message.headers.as_ref())
        .map_err(|e| e.to_string())
        .and_then(|envelope| {
            serde_json::from_slice::<Reply>(&message.payload)
                .map_err(|e| format!("malformed reply: {}", json_error::describe(&e)))
                .map(|reply| (envelope, reply))
        });
    let (envelope, reply) = match decoded {
        Ok(decoded) => decoded,
        Err(reason) => return dead_letter(js, message, "undecodable", &reason).await,
    };
    let span = tracing::Span::current();
    span.record("saga.id", reply.saga_id.to_string());
    span.record("saga.step", reply.step.as_str());
    span.record("saga.phase", reply.phase.as_str());
    if (envelope.saga_id, envelope.step, envelope.phase) != (reply.saga_id, reply.step, reply.phase)
    {
        let reason = "the body does not match the Saga-Id, Saga-Step or Saga-Phase header";
        return dead_letter(js, message, "mismatch", reason).await;
    }
    let expected = subjects::event(reply.step, reply.event_name());
    if message.subject.as_str() != expected {
        let detail = format!(
            "a {} {} reply came on {}, where its worker answers on {expected}",
            reply.step, reply.phase, message.subject
        );
        return refuse(&reply, ReplyRefusal::ReplyWrongSubject, &detail);
    }
    let command = match CommandId::of_reply(message.headers.as_ref()) {
        Some(Ok(command)) => command,
        Some(Err(err)) => return refuse(&reply, ReplyRefusal::ReplyUnkeyed, &err.to_string()),
        None => {
            let detail = "it names no command it answers (no Saga-Command-Id)";
            return refuse(&reply, ReplyRefusal::ReplyUnkeyed, detail);
        }
    };
    let saga_id = reply.saga_id;
    match executor.apply_reply(reply.clone(), &command).await {
        Ok(Answered::Applied(_)) => AckKind::Ack,
        Ok(Answered::Refused { refusal, detail }) => refuse(&reply, refusal, &detail),
        // Applied; the command it implied was not sent, and its deadline re-sends it.
        Err(ExecError::Publish(_)) => AckKind::Ack,
        Err(err) => {
            tracing::warn!(%saga_id, error = %err, "reply not applied; retrying");
            metrics::get().redelivered("store_unavailable");
            AckKind::Nak(Some(retry_after))
        }
    }
}

/// Refuses a reply: logged with the trace it came in, counted, and acked, never applied.
fn refuse(reply: &Reply, refusal: ReplyRefusal, detail: &str) -> AckKind {
    let trace_id = tracing::Span::current()
        .context()
        .span()
        .span_context()
        .trace_id();
    tracing::warn!(
        %trace_id,
        saga_id = %reply.saga_id,
        reason = refusal.as_str(),
        %detail,
        "reply refused, not applied"
    );
    metrics::get().reply_refused(refusal);
    AckKind::Ack
}

/// Dead-letters a reply; `code` is the stable reason for the metric, `reason` the detail.
async fn dead_letter(
    js: &jetstream::Context,
    message: &jetstream::Message,
    code: &'static str,
    reason: &str,
) -> AckKind {
    messaging::mark_error(&tracing::Span::current(), reason);
    tracing::error!(subject = %message.subject, %reason, "dead-lettering message");
    let seq = message.info().map(|i| i.stream_sequence).unwrap_or(0);
    let key = format!("{}.{seq}", message.subject);
    let payload = message.payload.clone();
    let outgoing = messaging::dead_letter(
        &message.subject,
        &key,
        message.headers.as_ref(),
        payload,
        reason,
    );
    match messaging::send(js, outgoing).await {
        Ok(()) => {
            metrics::get().dead_lettered(code);
            AckKind::Term
        }
        Err(_) => {
            metrics::get().redelivered("dead_letter_not_stored");
            AckKind::Nak(Some(Duration::from_secs(1)))
        }
    }
}
