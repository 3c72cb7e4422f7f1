//! The pull loop every consumer shares: bind the durable consumer, pull in batches no larger
//! than the concurrency, handle messages concurrently, and stop fetching on shutdown while
//! finishing the messages in hand. A pull that fails, or a message stream that ends (the
//! broker went away), is logged with its reason, and the consumer is bound again with
//! backoff once the messages in hand are finished.

use crate::streams::{ConsumerDef, bind_consumer};
use async_nats::jetstream;
use futures::StreamExt;
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Runs `handle` on every message of `def`'s consumer, `concurrency` at a time, until
/// `shutdown` is cancelled. Returns only then.
pub async fn pull_loop<F, Fut>(
    js: &jetstream::Context,
    def: &ConsumerDef,
    concurrency: usize,
    shutdown: CancellationToken,
    handle: F,
) where
    F: Fn(jetstream::Message) -> Fut,
    Fut: Future<Output = ()>,
{
    let concurrency = concurrency.max(1);
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        match open(js, def, concurrency).await {
            Ok(messages) => {
                backoff = Duration::from_millis(100);
                let ended = consume(messages, def, concurrency, &shutdown, &handle).await;
                if shutdown.is_cancelled() {
                    break;
                }
                tracing::warn!(consumer = %def.durable, reason = %ended, "pulling stopped; binding the consumer again");
            }
            Err(err) => {
                tracing::warn!(consumer = %def.durable, error = %err, "cannot pull; retrying");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => break,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Handles the messages of one pull stream until shutdown, a failed pull or the stream's end;
/// finishes the messages in hand either way, and says why it stopped.
async fn consume<F, Fut>(
    messages: jetstream::consumer::pull::Stream,
    def: &ConsumerDef,
    concurrency: usize,
    shutdown: &CancellationToken,
    handle: &F,
) -> String
where
    F: Fn(jetstream::Message) -> Fut,
    Fut: Future<Output = ()>,
{
    // A failed pull (a missed heartbeat, a deleted consumer) is remembered and ends this
    // stream: some of those errors repeat forever on the same stream, and binding again
    // recreates a consumer that went missing.
    let mut failed = None::<String>;
    messages
        .take_until(shutdown.cancelled())
        .scan((), |(), message| {
            futures::future::ready(match message {
                Ok(message) => Some(message),
                Err(err) => {
                    tracing::warn!(consumer = %def.durable, error = %err, "pull failed");
                    failed = Some(format!("pull failed: {err}"));
                    None
                }
            })
        })
        .for_each_concurrent(concurrency, |message| async {
            let subject = message.subject.clone();
            let begun = std::time::Instant::now();
            handle(message).await;
            crate::metrics::get().consumed(&subject, &def.durable, begun.elapsed());
        })
        .await;
    failed.unwrap_or_else(|| "the message stream ended".to_owned())
}

async fn open(
    js: &jetstream::Context,
    def: &ConsumerDef,
    concurrency: usize,
) -> Result<jetstream::consumer::pull::Stream, Box<dyn std::error::Error + Send + Sync>> {
    let consumer = bind_consumer(js, def).await?;
    Ok(consumer
        .stream()
        .max_messages_per_batch(concurrency)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(10))
        .messages()
        .await?)
}

/// Redelivery delay after a transient failure on the `delivered`-th delivery: `base`,
/// doubling with each delivery, at most `cap`.
pub fn redelivery_delay(delivered: i64, base: Duration, cap: Duration) -> Duration {
    let doublings = u32::try_from(delivered.clamp(1, 17) - 1).unwrap_or(0);
    base.saturating_mul(1 << doublings).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redelivery_delays_double_and_are_capped() {
        let delay = |n| redelivery_delay(n, Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(delay(0), Duration::from_millis(100));
        assert_eq!(delay(1), Duration::from_millis(100));
        assert_eq!(delay(3), Duration::from_millis(400));
        assert_eq!(delay(i64::MAX), Duration::from_secs(1));
    }
}
