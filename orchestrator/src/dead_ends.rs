//! Messages that ran out of deliveries without their consumer dead-lettering them (a worker
//! killed during the last delivery): JetStream announces each with a max-deliveries advisory;
//! the message is copied to the dead-letter stream with its reason and headers and removed
//! from its work queue. The saga it belongs to is looked after by its deadline.

use async_nats::jetstream;
use checkout_shared::envelope::MSG_ID;
use checkout_shared::messaging;
use futures::StreamExt;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

/// Where JetStream announces that a consumer gave up on a message.
pub const MAX_DELIVERIES_ADVISORY: &str = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.>";

/// The part of the advisory this needs.
#[derive(Debug, Deserialize)]
struct MaxDeliveries {
    stream: String,
    consumer: String,
    stream_seq: u64,
    deliveries: u64,
}

/// Moves every message JetStream gives up on to the dead-letter stream, until `shutdown`.
pub async fn watch(
    client: async_nats::Client,
    js: jetstream::Context,
    shutdown: CancellationToken,
) {
    let mut advisories = match client.subscribe(MAX_DELIVERIES_ADVISORY).await {
        Ok(subscriber) => subscriber,
        Err(err) => {
            tracing::warn!(error = %err, "cannot watch max-deliveries advisories");
            return;
        }
    };
    loop {
        let advisory = tokio::select! {
            _ = shutdown.cancelled() => return,
            advisory = advisories.next() => advisory,
        };
        let Some(advisory) = advisory else { return };
        match serde_json::from_slice::<MaxDeliveries>(&advisory.payload) {
            Ok(dead) => {
                if let Err(err) = bury(&js, &dead).await {
                    tracing::warn!(stream = %dead.stream, seq = dead.stream_seq, error = %err, "dead letter not moved");
                }
            }
            Err(err) => tracing::warn!(error = %err, "unreadable advisory"),
        }
    }
}

async fn bury(
    js: &jetstream::Context,
    dead: &MaxDeliveries,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let stream = js.get_stream_no_info(&dead.stream).await?;
    let message = match stream.get_raw_message(dead.stream_seq).await {
        Ok(message) => message,
        // Already gone: acked or terminated meanwhile.
        Err(_) => return Ok(()),
    };
    let reason = format!(
        "consumer {} gave up after {} deliveries without settling it",
        dead.consumer, dead.deliveries
    );
    tracing::error!(subject = %message.subject, %reason, "dead-lettering message");
    let key = message
        .headers
        .get(MSG_ID)
        .map(|v| v.as_str().to_owned())
        .unwrap_or_else(|| format!("{}.{}", dead.stream, dead.stream_seq));
    let payload = message.payload.clone();
    let letter = messaging::dead_letter(
        &message.subject,
        &key,
        Some(&message.headers),
        payload,
        &reason,
    );
    messaging::send(js, letter).await?;
    checkout_shared::metrics::get().dead_lettered("unsettled_max_deliveries");
    stream.delete_message(dead.stream_seq).await?;
    Ok(())
}
