//! One way to connect to NATS: retry the first connection, reconnect forever after, and name
//! the connection so that `nats-server` monitoring shows who is who.

use async_nats::{Client, ConnectOptions, jetstream};
use std::time::Duration;

/// Why NATS could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("connecting to NATS at {url}: {source}")]
pub struct ConnectFailed {
    /// The URL tried.
    pub url: String,
    /// Why.
    pub source: async_nats::ConnectError,
}

/// Connects to `url` as `name`. With `wait`, a broker that is down at start-up is waited for
/// (a service should outlive a broker restart); without it, the first failure is returned
/// (a command-line client should say so at once).
pub async fn connect(url: &str, name: &str, wait: bool) -> Result<Client, ConnectFailed> {
    let mut options = ConnectOptions::new()
        .name(name)
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(2));
    if wait {
        options = options.retry_on_initial_connect();
    }
    options.connect(url).await.map_err(|source| ConnectFailed {
        url: url.to_owned(),
        source,
    })
}

/// The JetStream context of a client, with a publish-ack timeout that outlasts a broker
/// restart's election of a new stream leader.
pub fn jetstream(client: Client) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(5))
        .build(client)
}
