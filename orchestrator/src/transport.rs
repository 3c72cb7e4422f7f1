//! Commands and lifecycle events over NATS: [`Transport`] for production.

use crate::ports::Transport;
use async_nats::jetstream;
use bytes::Bytes;
use checkout_shared::messaging::{self, Outgoing, PublishFailed};
use checkout_shared::telemetry::SpanFlusher;
use opentelemetry::KeyValue;

/// Commands to JetStream (deduplicated by message id), lifecycle events on core NATS.
#[derive(Clone)]
pub struct NatsTransport {
    js: jetstream::Context,
    nats: async_nats::Client,
    flusher: SpanFlusher,
}

impl NatsTransport {
    /// A transport over `nats`; `flusher` exports spans before a command names them.
    pub fn new(nats: async_nats::Client, flusher: SpanFlusher) -> Self {
        let js = checkout_shared::connect::jetstream(nats.clone());
        NatsTransport { js, nats, flusher }
    }
}

impl Transport for NatsTransport {
    async fn send_command(
        &self,
        parent: &opentelemetry::Context,
        command: Outgoing,
        attributes: Vec<KeyValue>,
    ) -> Result<(), PublishFailed> {
        messaging::publish(&self.js, &self.flusher, parent, command, attributes).await
    }

    async fn lifecycle(&self, subject: String, payload: Bytes) {
        if let Err(err) = self.nats.publish(subject, payload).await {
            tracing::debug!(error = %err, "lifecycle event not published");
        }
    }

    async fn flush_spans(&self) -> bool {
        self.flusher.flush().await
    }
}
