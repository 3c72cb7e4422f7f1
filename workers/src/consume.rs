//! The consume loop every worker kind shares: pull, decode, dedupe, handle, reply, ack.
//!
//! Each outcome settles the message exactly one way (see [`MessageError`]): a decision is
//! replied, then acked once its spans are known exported (or the collector known down: a
//! missing collector costs traces, never throughput); a failure to act is nakked with a
//! capped exponential delay, on every delivery, and never replied; an undeliverable message
//! is dead-lettered and terminated.
//! Nothing loops forever: once `max_deliver` runs out, JetStream gives the command up and
//! its advisory hands it back to the orchestrator.

use crate::calls::Db;
use crate::error::{Failure, FailureCode, MessageError};
use crate::handler::{self, Handler};
use async_nats::jetstream::{self, AckKind};
use bytes::Bytes;
use checkout_shared::command_id::COMMAND_ID;
use checkout_shared::envelope::{self, Envelope, MsgType, Phase};
use checkout_shared::json_error::describe;
use checkout_shared::messages::{CommandMessage, Outcome, Refusal, RefusalCode, Reply};
use checkout_shared::messaging::{self, Outgoing};
use checkout_shared::metrics;
use checkout_shared::pull::pull_loop;
use checkout_shared::streams::ConsumerDef;
use checkout_shared::subjects;
use checkout_shared::telemetry::Flushed;
use checkout_shared::telemetry::SpanFlusher;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// What one message's handling needs.
#[derive(Clone)]
pub struct Context {
    /// JetStream, for replies and dead letters.
    pub js: jetstream::Context,
    /// The worker's database (its actions' statements by group commit).
    pub db: Db,
    /// The business logic.
    pub handler: Handler,
    /// The consumer definition (its name, `ack_wait` and nak delays).
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
        messaging::Stored::of(&message).as_ref(),
    );
    let handled = {
        let work = handle(ctx, &message, &msg_id).instrument(span.clone());
        tokio::pin!(work);
        // Long work (injected latency, a slow database) must not outlive ack_wait and be
        // redelivered to another instance meanwhile.
        // The first tick a third of ack_wait from now: awaiting an interval's immediate first
        // tick instead cost every command about a millisecond (the timer wheel's resolution;
        // seen in `bench --breakdown` as time before the worker's transaction).
        let every = Duration::from_secs(ctx.consumer.ack_wait_secs) / 3;
        let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                handled = &mut work => break handled,
                _ = progress.tick() => {
                    if let Err(err) = message.ack_with(AckKind::Progress).await {
                        tracing::warn!(error = %err, "in-progress ack failed; the command may be redelivered meanwhile");
                    }
                }
            }
        }
    };
    // End the process span (and its children) before anything that names them leaves.
    drop(span);
    settle(ctx, message, delivered, handled).await;
}

/// Decides what to do with one command: `Ok` is the reply of a decision (a success or a
/// business refusal), to send and ack.
async fn handle(
    ctx: &Context,
    message: &jetstream::Message,
    msg_id: &str,
) -> Result<Outgoing, MessageError> {
    let envelope = Envelope::read(message.headers.as_ref())
        .map_err(|err| undeliverable(format!("unreadable envelope: {err}"), None))?;
    let span = tracing::Span::current();
    span.record("saga.id", envelope.saga_id.to_string());
    span.record("saga.step", envelope.step.as_str());
    span.record("saga.phase", envelope.phase.as_str());
    if envelope.step != ctx.handler.kind() {
        // No refusal: this worker cannot decide for another step, whose own worker may
        // still get a valid copy; the saga's deadline looks after it.
        let reason = format!(
            "a {} command reached the {} worker",
            envelope.step,
            ctx.handler.kind()
        );
        return Err(undeliverable(reason, None));
    }
    let command = match decode(&message.payload, &envelope) {
        Ok(command) => command,
        Err(reason) => {
            // An action is refused, so the saga compensates rather than hangs. An undo has no
            // refusal: the saga keeps sending it, and flags itself for an operator.
            let reply = match envelope.phase {
                Phase::Do => {
                    let refusal = Refusal::new(RefusalCode::Undeliverable, reason.clone());
                    Some(outgoing(&refusal_reply(&envelope, refusal), msg_id)?)
                }
                Phase::Undo => None,
            };
            return Err(undeliverable(reason, reply));
        }
    };
    match handler::apply_once(&ctx.db, &ctx.handler, &envelope, &command.command).await {
        Ok(reply) => {
            if let Outcome::StepFailed { reason } = &reply.outcome {
                span.record("refusal.code", reason.code.as_str());
                tracing::info!(saga_id = %envelope.saga_id, refusal.code = %reason.code, reason = %reason.message, "step refused");
            }
            Ok(outgoing(&reply, msg_id)?)
        }
        Err(failure) => {
            span.record("failure.code", failure.code.as_str());
            messaging::mark_error(&span, &failure.to_string());
            Err(MessageError::Failed(failure))
        }
    }
}

fn undeliverable(reason: String, reply: Option<Outgoing>) -> MessageError {
    messaging::mark_error(&tracing::Span::current(), &reason);
    tracing::error!(%reason, "cannot be handled; to the dead letters"); // in the saga's trace
    MessageError::Undeliverable { reason, reply }
}

fn decode(payload: &Bytes, envelope: &Envelope) -> Result<CommandMessage, String> {
    let command: CommandMessage =
        serde_json::from_slice(payload).map_err(|e| format!("malformed body: {}", describe(&e)))?;
    if command.saga_id != envelope.saga_id
        || command.command.step_phase() != (envelope.step, envelope.phase)
    {
        return Err("the body does not match the Saga-* headers".to_owned());
    }
    Ok(command)
}

fn refusal_reply(envelope: &Envelope, reason: Refusal) -> Reply {
    Reply {
        saga_id: envelope.saga_id,
        step: envelope.step,
        phase: envelope.phase,
        outcome: Outcome::StepFailed { reason },
    }
}

/// The reply message, stamped with a producer span under the current (process) span. Its id
/// derives from the command's: a redelivery's reply is a duplicate JetStream drops (the first
/// is stored), while a command sent afresh (a new id) gets its reply through. It names the
/// command it answers in `Saga-Command-Id`.
fn outgoing(reply: &Reply, command_msg_id: &str) -> Result<Outgoing, Failure> {
    // Serialised first: a reply that cannot be is a failure, never an empty body.
    let payload = serde_json::to_vec(reply)
        .map(Bytes::from)
        .map_err(|e| Failure::new(FailureCode::Encode, format!("reply: {e}")))?;
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
    // The command this answers, echoed: the orchestrator applies a reply only if it names a
    // command the saga sent and waits for.
    headers.insert(COMMAND_ID, command_msg_id);
    let parent = tracing::Span::current().context();
    messaging::stamp_producer_span(&parent, &subject, &msg_id, &mut headers, vec![]);
    Ok(Outgoing {
        subject,
        msg_id,
        headers,
        payload,
    })
}

/// Settles a message as its handling decided: exactly one settlement per outcome.
async fn settle(
    ctx: &Context,
    message: jetstream::Message,
    delivered: i64,
    handled: Result<Outgoing, MessageError>,
) {
    match handled {
        Ok(reply) => {
            let flushed = ctx.flusher.flush_within(FLUSH_BEFORE_REPLY).await;
            match messaging::send(&ctx.js, reply).await {
                // Nakked once at most: a redelivery is acked whatever becomes of its spans, so
                // a collector that is slow on every flush never makes a done command run out of
                // deliveries.
                Ok(()) if delivered > 1 || spans_out(ctx, &message, flushed).await => {
                    ack(&message, AckKind::Ack).await
                }
                Ok(()) => {
                    let failure = Failure::new(
                        FailureCode::Telemetry,
                        "reply sent, spans not yet exported".to_owned(),
                    );
                    retry(ctx, &message, delivered, &failure).await;
                }
                // The decision is stored: the redelivery re-sends it.
                Err(err) => {
                    let failure =
                        Failure::new(FailureCode::Broker, format!("reply not sent: {err}"));
                    retry(ctx, &message, delivered, &failure).await;
                }
            }
        }
        Err(MessageError::Failed(failure)) => retry(ctx, &message, delivered, &failure).await,
        Err(MessageError::Undeliverable { reason, reply }) => {
            tracing::error!(subject = %message.subject, %reason, "dead-lettering message");
            let letter = dead_letter_message(&message, &reason);
            if let Err(err) = messaging::send(&ctx.js, letter).await {
                let failure = Failure::new(
                    FailureCode::Broker,
                    format!("dead letter not stored: {err}"),
                );
                retry(ctx, &message, delivered, &failure).await;
                return;
            }
            if let Some(reply) = reply {
                ctx.flusher.flush().await;
                if let Err(err) = messaging::send(&ctx.js, reply).await {
                    let failure =
                        Failure::new(FailureCode::Broker, format!("refusal not sent: {err}"));
                    retry(ctx, &message, delivered, &failure).await;
                    return;
                }
            }
            ack(&message, AckKind::Term).await;
            metrics::get().dead_lettered(crate::error::dead_letter_code(&reason));
        }
    }
}

/// How long the spans of a message may take to export before its reply leaves anyway:
/// telemetry must not hold up the business.
const FLUSH_BEFORE_REPLY: Duration = checkout_shared::flusher::FLUSH_WAIT;

/// Whether the message's spans are out (or lost whatever happens, the collector failing), so
/// that acking it cannot leave its command without a `process` span if this process dies
/// next. A flush still under way when the reply left is waited for a while longer (half an
/// `ack_wait`, after telling the broker the message is still in hand).
async fn spans_out(ctx: &Context, message: &jetstream::Message, flushed: Flushed) -> bool {
    let flushed = match flushed {
        Flushed::NotYet => {
            let _ = message.ack_with(AckKind::Progress).await;
            let wait = Duration::from_secs(ctx.consumer.ack_wait_secs) / 2;
            ctx.flusher.flush_within(wait).await
        }
        done => done,
    };
    match flushed {
        Flushed::Failing => tracing::debug!("spans not exported: the collector is failing"),
        Flushed::NotYet => tracing::warn!("spans still not exported after the reply; nak"),
        Flushed::Exported => {}
    }
    flushed != Flushed::NotYet
}

/// A failure to act: nak with the consumer's capped exponential delay. Whatever the delivery
/// count, nothing is stored or replied; JetStream gives up after `max_deliver`.
async fn retry(ctx: &Context, message: &jetstream::Message, delivered: i64, failure: &Failure) {
    let after = ctx.consumer.nak_delay(delivered);
    tracing::warn!(
        subject = %message.subject,
        failure.code = %failure.code,
        reason = %failure.detail,
        delivered,
        max_deliver = ctx.consumer.max_deliver,
        ?after,
        "could not act; nak"
    );
    metrics::get().redelivered(failure.code.as_str());
    ack(message, AckKind::Nak(Some(after))).await;
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
