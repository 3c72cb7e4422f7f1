//! The consume loop every worker kind shares: pull, decode, dedupe, handle, reply, ack.
//!
//! Each outcome settles the message exactly one way (see [`Settlement`]): a reply then an
//! ack; a nak with a delay; or a dead letter then a terminate. Nothing loops forever: a
//! message that keeps failing is dead-lettered on its last delivery.

use crate::error::Settlement;
use crate::handler::{self, Handler};
use async_nats::jetstream::{self, AckKind};
use bytes::Bytes;
use checkout_shared::envelope::{self, Envelope, MsgType};
use checkout_shared::messages::{CommandMessage, Outcome, Reply};
use checkout_shared::messaging::{self, Outgoing};
use checkout_shared::pull::{pull_loop, redelivery_delay};
use checkout_shared::streams::ConsumerDef;
use checkout_shared::subjects;
use checkout_shared::telemetry::SpanFlusher;
use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// What one message's handling needs.
#[derive(Clone)]
pub struct Context {
    /// JetStream, for replies and dead letters.
    pub js: jetstream::Context,
    /// The worker's database.
    pub pool: PgPool,
    /// The business logic.
    pub handler: Handler,
    /// The consumer definition (for its name, `ack_wait` and `max_deliver`).
    pub consumer: ConsumerDef,
    /// Exports spans before replies leave.
    pub flusher: SpanFlusher,
}

/// Pulls and handles messages, `concurrency` at a time, until `shutdown`; then finishes the
/// messages in hand.
pub async fn run(ctx: Context, concurrency: usize, shutdown: CancellationToken) {
    let def = ctx.consumer.clone();
    pull_loop(&ctx.js.clone(), &def, concurrency, shutdown, |message| {
        process(&ctx, message)
    })
    .await;
}

/// Handles one message and settles it.
pub async fn process(ctx: &Context, message: jetstream::Message) {
    let delivered = message.info().map(|info| info.delivered).unwrap_or(1);
    let subject = message.subject.to_string();
    // Without an id, the stream position stands in, so distinct messages get distinct replies.
    let msg_id = header(&message, envelope::MSG_ID).unwrap_or_else(|| stream_position(&message));
    let span = messaging::consumer_span(
        &subject,
        message.headers.as_ref(),
        &ctx.consumer.durable,
        &msg_id,
        delivered,
    );
    let settlement = {
        let work = handle(ctx, &message, &msg_id, delivered).instrument(span.clone());
        tokio::pin!(work);
        // Long work (injected latency) must not outlive ack_wait and be redelivered meanwhile.
        let ack_wait = Duration::from_secs(ctx.consumer.ack_wait_secs);
        let mut progress = tokio::time::interval(ack_wait / 3);
        progress.tick().await;
        loop {
            tokio::select! {
                settlement = &mut work => break settlement,
                _ = progress.tick() => { let _ = message.ack_with(AckKind::Progress).await; }
            }
        }
    };
    // End the process span (and its children) before anything that names them leaves.
    drop(span);
    settle(ctx, message, settlement).await;
}

async fn handle(
    ctx: &Context,
    message: &jetstream::Message,
    msg_id: &str,
    delivered: i64,
) -> Settlement {
    let envelope = match Envelope::read(message.headers.as_ref()) {
        Ok(envelope) => envelope,
        Err(err) => return dead_letter(format!("unreadable envelope: {err}"), None),
    };
    let span = tracing::Span::current();
    span.record("saga.id", envelope.saga_id.to_string());
    span.record("saga.step", envelope.step.service());
    span.record("saga.phase", envelope.phase.as_str());
    if envelope.step != ctx.handler.kind() {
        let reason = format!(
            "a {} command reached the {} worker",
            envelope.step,
            ctx.handler.kind()
        );
        return dead_letter(reason, None);
    }
    let command = match decode(&message.payload, &envelope) {
        Ok(command) => command,
        Err(reason) => {
            let reply = failure_reply(
                &envelope,
                msg_id,
                format!("undeliverable command: {reason}"),
            );
            return dead_letter(reason, Some(reply));
        }
    };
    match handler::apply_once(&ctx.pool, &ctx.handler, &envelope, &command.command).await {
        Ok(reply) => {
            if let Outcome::StepFailed { reason } = &reply.outcome {
                tracing::info!(saga_id = %envelope.saga_id, %reason, "step refused");
            }
            Settlement::Reply(outgoing(&reply, msg_id))
        }
        Err(err) if delivered >= ctx.consumer.max_deliver => {
            let reason = format!("gave up after {delivered} deliveries: {err}");
            // The refusal is recorded before it is told, so no later copy can still act; if
            // even that fails, the saga is told nothing and its deadline undoes the step.
            match handler::settle_as_refused(&ctx.pool, &ctx.handler, &envelope, reason.clone())
                .await
            {
                Ok(reply) => dead_letter(reason, Some(outgoing(&reply, msg_id))),
                Err(_) => dead_letter(reason, None),
            }
        }
        Err(err) => Settlement::Retry {
            after: retry_delay(delivered),
            reason: err.to_string(),
        },
    }
}

fn dead_letter(reason: String, reply: Option<Outgoing>) -> Settlement {
    messaging::mark_error(&tracing::Span::current(), &reason);
    Settlement::DeadLetter { reason, reply }
}

fn decode(payload: &Bytes, envelope: &Envelope) -> Result<CommandMessage, String> {
    let command: CommandMessage =
        serde_json::from_slice(payload).map_err(|e| format!("malformed body: {e}"))?;
    if command.saga_id != envelope.saga_id
        || command.command.step_phase() != (envelope.step, envelope.phase)
    {
        return Err("the body does not match the Saga-* headers".to_owned());
    }
    Ok(command)
}

fn failure_reply(envelope: &Envelope, msg_id: &str, reason: String) -> Outgoing {
    let reply = Reply {
        saga_id: envelope.saga_id,
        step: envelope.step,
        phase: envelope.phase,
        outcome: Outcome::StepFailed { reason },
    };
    outgoing(&reply, msg_id)
}

/// The reply message, stamped with a producer span under the current (process) span. Its id
/// derives from the command's: a redelivery's reply is a duplicate JetStream drops (the first
/// is stored), while a command sent afresh (a new id) gets its reply through.
fn outgoing(reply: &Reply, command_msg_id: &str) -> Outgoing {
    let event_name = reply.event_name();
    let subject = subjects::event(reply.step, event_name);
    let envelope = Envelope {
        saga_id: reply.saga_id,
        step: reply.step,
        phase: reply.phase,
        msg_type: MsgType::event(reply.step, event_name),
    };
    let msg_id = format!("{command_msg_id}.reply");
    let mut headers = async_nats::HeaderMap::new();
    envelope.write(&mut headers, &msg_id);
    let payload = serde_json::to_vec(reply)
        .map(Bytes::from)
        .unwrap_or_default();
    let parent = tracing::Span::current().context();
    messaging::stamp_producer_span(&parent, &subject, &msg_id, &mut headers, vec![]);
    Outgoing {
        subject,
        msg_id,
        headers,
        payload,
    }
}

fn retry_delay(delivered: i64) -> Duration {
    redelivery_delay(
        delivered,
        Duration::from_millis(200),
        Duration::from_secs(10),
    )
}

/// How long a command can keep failing to act before JetStream stops redelivering it: the
/// redelivery delays of every delivery but the last (processing time comes on top). The chaos
/// runner keeps a dependency down for longer than this, so that its outage outlives a
/// command's every delivery.
pub fn delivery_budget(max_deliver: i64) -> Duration {
    (1..max_deliver.max(1)).map(retry_delay).sum()
}

async fn settle(ctx: &Context, message: jetstream::Message, settlement: Settlement) {
    match settlement {
        Settlement::Reply(reply) => {
            ctx.flusher.flush().await;
            match messaging::send(&ctx.js, reply).await {
                Ok(()) => ack(&message, AckKind::Ack).await,
                Err(err) => {
                    tracing::warn!(error = %err, "reply not sent; the command will be redelivered");
                    ack(&message, AckKind::Nak(Some(Duration::from_secs(1)))).await;
                }
            }
        }
        Settlement::Retry { after, reason } => {
            tracing::warn!(subject = %message.subject, %reason, ?after, "transient failure; nak");
            ack(&message, AckKind::Nak(Some(after))).await;
        }
        Settlement::DeadLetter { reason, reply } => {
            tracing::error!(subject = %message.subject, %reason, "dead-lettering message");
            let letter = dead_letter_message(&message, &reason);
            if let Err(err) = messaging::send(&ctx.js, letter).await {
                tracing::warn!(error = %err, "dead letter not stored; will retry the message");
                ack(&message, AckKind::Nak(Some(Duration::from_secs(1)))).await;
                return;
            }
            if let Some(reply) = reply {
                ctx.flusher.flush().await;
                if let Err(err) = messaging::send(&ctx.js, reply).await {
                    tracing::warn!(error = %err, "failure reply not sent; will retry the message");
                    ack(&message, AckKind::Nak(Some(Duration::from_secs(1)))).await;
                    return;
                }
            }
            ack(&message, AckKind::Term).await;
        }
    }
}

fn dead_letter_message(message: &jetstream::Message, reason: &str) -> Outgoing {
    let key = header(message, envelope::MSG_ID).unwrap_or_else(|| stream_position(message));
    let payload = message.payload.clone();
    messaging::dead_letter(
        &message.subject,
        &key,
        message.headers.as_ref(),
        payload,
        reason,
    )
}

/// `seq.<n>`: stands in for a message id that is missing.
fn stream_position(message: &jetstream::Message) -> String {
    format!(
        "seq.{}",
        message.info().map(|i| i.stream_sequence).unwrap_or(0)
    )
}

fn header(message: &jetstream::Message, name: &str) -> Option<String> {
    message
        .headers
        .as_ref()?
        .get(name)
        .map(|v| v.as_str().to_owned())
}

async fn ack(message: &jetstream::Message, kind: AckKind) {
    if let Err(err) = message.ack_with(kind).await {
        tracing::warn!(error = %err, "settling the message failed; it will be redelivered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_and_are_bounded() {
        assert_eq!(retry_delay(1), Duration::from_millis(200));
        assert_eq!(retry_delay(2), Duration::from_millis(400));
        assert_eq!(retry_delay(100), Duration::from_secs(10));
    }
}
