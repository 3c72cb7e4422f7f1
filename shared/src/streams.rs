//! The JetStream topology, defined once in `nats/jetstream.json` and provisioned from it;
//! the workers' consumers are one template there, instantiated for every declared step.
//!
//! Every service calls [`provision`] at start-up; it creates what is missing and updates what
//! drifted, so starting any service in any order yields the same streams and consumers. The
//! file is compiled in, so an operator who provisions by hand reads the very same definition.
//!
//! # A command's delivery budget
//!
//! A worker that cannot act on a command (its database erred or is unreachable) naks it with
//! a delay of `nak_first_ms`, doubling with each delivery, at most `nak_max_ms`
//! ([`ConsumerDef::nak_delay`]); it never turns the failure into a reply. After `max_deliver`
//! deliveries JetStream gives up and announces it with its max-deliveries advisory, which the
//! orchestrator dead-letters; the saga's deadline then sends the command afresh (an undo,
//! until it succeeds) or undoes it (an action). So a dependency may be down for
//! [`ConsumerDef::delivery_budget`] (42.6 s for the workers' consumers: 0.2 + 0.4 + 0.8 +
//! 1.6 + 3.2 + 6.4 + 10 + 10 + 10 s of nak delays between ten deliveries, plus the time spent
//! on each) before a command is handed back to the orchestrator. `ack_wait_secs` bounds a
//! delivery whose worker died; a worker doing long work extends it with in-progress acks.

use crate::steps::Step;
use async_nats::jetstream::{self, consumer, stream};
use serde::Deserialize;
use std::time::Duration;

/// The topology file, as shipped in `nats/`.
pub const TOPOLOGY_JSON: &str = include_str!("../../nats/jetstream.json");

/// Durable consumer of incoming checkouts.
pub const REQUESTS_CONSUMER: &str = "orchestrator-requests";
/// Durable consumer of workers' replies.
pub const EVENTS_CONSUMER: &str = "orchestrator-events";

/// The stream of saga lifecycle events (`checkout.saga.<id>.*`), kept a day for watchers (and
/// at most `max_messages` events: under a heavy load the oldest go sooner).
pub const LIFECYCLE_STREAM: &str = "CHECKOUT_LIFECYCLE";

/// The stream where the inventory service lists the SKUs it sells (one message per SKU on
/// `checkout.catalog.<sku>`), so that the orchestrator can refuse an unknown SKU at the door
/// without reading another service's schema. A plain stream rather than a KV bucket, because
/// async-nats 0.51 cannot parse a KV bucket's creation reply from nats-server 2.9.
pub const CATALOG_STREAM: &str = "CHECKOUT_CATALOG";

/// The streams and consumers of the system.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Every stream.
    pub streams: Vec<StreamDef>,
    /// Every durable pull consumer: the file's, and one per step for its worker kind.
    pub consumers: Vec<ConsumerDef>,
}

/// The file: the workers' consumers are one template, instantiated for every step the code
/// declares, so a new step needs no edit here.
#[derive(Debug, Clone, Deserialize)]
struct TopologyFile {
    streams: Vec<StreamDef>,
    consumers: Vec<ConsumerDef>,
    worker_consumer: WorkerConsumerDef,
}

/// A worker kind's consumer, but for its name and filter (the step's).
#[derive(Debug, Clone, Deserialize)]
struct WorkerConsumerDef {
    stream: String,
    ack_wait_secs: u64,
    max_deliver: i64,
    nak_first_ms: u64,
    nak_max_ms: u64,
    max_ack_pending: i64,
}

/// One stream.
#[derive(Debug, Clone, Deserialize)]
pub struct StreamDef {
    /// Stream name.
    pub name: String,
    /// Subjects it captures.
    pub subjects: Vec<String>,
    /// `workqueue` or `limits`.
    pub retention: String,
    /// How long JetStream remembers a `Nats-Msg-Id`.
    pub duplicate_window_secs: u64,
    /// Age limit; 0 keeps messages until consumed or removed.
    pub max_age_secs: u64,
    /// Messages kept per subject; -1 for no limit.
    pub max_messages_per_subject: i64,
    /// Messages kept in the whole stream, the oldest dropped first; -1 (the default when
    /// the field is absent) for no limit. Bounds a limits stream by count as well as by age,
    /// so a burst (a soak of a million sagas in a day) cannot fill the disk within `max_age`.
    #[serde(default = "unlimited")]
    pub max_messages: i64,
    /// For operators.
    pub description: String,
}

fn unlimited() -> i64 {
    -1
}

/// One durable pull consumer.
#[derive(Debug, Clone, Deserialize)]
pub struct ConsumerDef {
    /// The stream it reads.
    pub stream: String,
    /// Its durable name, shared by every instance of the service.
    pub durable: String,
    /// The subjects it takes.
    pub filter_subject: String,
    /// How long a delivery may stay unacknowledged before it is redelivered.
    pub ack_wait_secs: u64,
    /// Deliveries before JetStream gives up on a message (and announces it with its
    /// max-deliveries advisory, which the orchestrator dead-letters); -1 retries for as long
    /// as it takes (the orchestrator's consumers: a reply or a checkout must never be dropped
    /// because the database was down for a while).
    pub max_deliver: i64,
    /// The nak delay after the first failed delivery, in milliseconds.
    pub nak_first_ms: u64,
    /// The longest nak delay, in milliseconds.
    pub nak_max_ms: u64,
    /// Bound on unacknowledged messages in flight.
    pub max_ack_pending: i64,
}

/// Why the topology could not be provisioned.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// The embedded file is not valid; a build-time mistake caught by the unit tests.
    #[error("nats/jetstream.json is invalid: {0}")]
    Definition(#[from] serde_json::Error),
    /// The topology names a consumer that is not defined.
    #[error("no consumer named {0} in nats/jetstream.json")]
    UnknownConsumer(String),
    /// JetStream refused a stream.
    #[error("provisioning stream {name}: {source}")]
    Stream {
        /// The stream.
        name: String,
        /// Why.
        source: jetstream::context::CreateStreamError,
    },
    /// JetStream refused a consumer.
    #[error("provisioning consumer {name}: {source}")]
    Consumer {
        /// The consumer.
        name: String,
        /// Why.
        source: jetstream::stream::ConsumerError,
    },
    /// A stream or consumer this process binds to (without provisioning) is not there.
    #[error(
        "{name} is not provisioned ({reason}): run `checkout provision` with the \
         administrator's identity"
    )]
    Missing {
        /// The stream, or `stream/consumer`.
        name: String,
        /// What the broker said.
        reason: String,
    },
}

impl Topology {
    /// The topology compiled into this binary.
    pub fn load() -> Result<Self, ProvisionError> {
        let file: TopologyFile = serde_json::from_str(TOPOLOGY_JSON)?;
        let template = file.worker_consumer;
        let workers = Step::ALL.iter().map(|&step| ConsumerDef {
            stream: template.stream.clone(),
            durable: step.as_str().to_owned(),
            filter_subject: crate::subjects::commands_for(step),
            ack_wait_secs: template.ack_wait_secs,
            max_deliver: template.max_deliver,
            nak_first_ms: template.nak_first_ms,
            nak_max_ms: template.nak_max_ms,
            max_ack_pending: template.max_ack_pending,
        });
        let mut consumers = file.consumers;
        consumers.extend(workers);
        Ok(Topology {
            streams: file.streams,
            consumers,
        })
    }

    /// The definition of one consumer.
    pub fn consumer(&self, durable: &str) -> Result<&ConsumerDef, ProvisionError> {
        self.consumers
            .iter()
            .find(|c| c.durable == durable)
            .ok_or_else(|| ProvisionError::UnknownConsumer(durable.to_owned()))
    }
}

impl StreamDef {
    /// The async-nats configuration of this stream (file storage, one replica by default).
    pub fn config(&self, replicas: usize) -> stream::Config {
        stream::Config {
            name: self.name.clone(),
            subjects: self.subjects.clone(),
            retention: if self.retention == "workqueue" {
                stream::RetentionPolicy::WorkQueue
            } else {
                stream::RetentionPolicy::Limits
            },
            storage: stream::StorageType::File,
            num_replicas: replicas,
            duplicate_window: Duration::from_secs(self.duplicate_window_secs),
            max_age: Duration::from_secs(self.max_age_secs),
            max_messages_per_subject: self.max_messages_per_subject,
            max_messages: self.max_messages,
            description: Some(self.description.clone()),
            ..Default::default()
        }
    }
}

impl ConsumerDef {
    /// The nak delay after a failure to act on the `delivered`-th delivery: `nak_first_ms`,
    /// doubling with each delivery, at most `nak_max_ms`.
    pub fn nak_delay(&self, delivered: i64) -> Duration {
        crate::pull::redelivery_delay(
            delivered,
            Duration::from_millis(self.nak_first_ms),
            Duration::from_millis(self.nak_max_ms),
        )
    }

    /// The nak delays a message goes through before JetStream gives up on it: how long a
    /// dependency may stay down before the command is handed back to its sender. `None` for
    /// a consumer that never gives up.
    pub fn delivery_budget(&self) -> Option<Duration> {
        if self.max_deliver < 1 {
            return None;
        }
        Some((1..self.max_deliver).map(|n| self.nak_delay(n)).sum())
    }

    /// The async-nats configuration of this consumer.
    pub fn config(&self) -> consumer::pull::Config {
        consumer::pull::Config {
            durable_name: Some(self.durable.clone()),
            filter_subject: self.filter_subject.clone(),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(self.ack_wait_secs),
            max_deliver: self.max_deliver,
            max_ack_pending: self.max_ack_pending,
            ..Default::default()
        }
    }
}

/// Creates or updates every stream and consumer. Idempotent; safe to race. An existing
/// stream gets the whole configuration of its definition (an update, not a create), so a
/// changed limit such as `max_messages` applies to streams provisioned by earlier versions.
pub async fn provision(js: &jetstream::Context, replicas: usize) -> Result<(), ProvisionError> {
    let topology = Topology::load()?;
    if !crate::access::get().provisions {
        // Not this identity's job (`checkout provision` is the administrator's): check that
        // every stream is there, and say what is missing.
        // Each consumer is checked where it is bound (`bind_consumer`): an identity may read
        // its own consumers only.
        for def in &topology.streams {
            js.get_stream(&def.name)
                .await
                .map_err(|err| ProvisionError::Missing {
                    name: def.name.clone(),
                    reason: err.to_string(),
                })?;
        }
        return Ok(());
    }
    provision_all(js, replicas, &topology).await
}

/// Creates or updates every stream and consumer, whatever the process's access says: what
/// `checkout provision` does with the administrator's identity.
pub async fn provision_as_admin(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<(), ProvisionError> {
    provision_all(js, replicas, &Topology::load()?).await
}

async fn provision_all(
    js: &jetstream::Context,
    replicas: usize,
    topology: &Topology,
) -> Result<(), ProvisionError> {
    for def in &topology.streams {
        js.create_or_update_stream(def.config(replicas))
            .await
            .map_err(|source| ProvisionError::Stream {
                name: def.name.clone(),
                source,
            })?;
    }
    for def in &topology.consumers {
        js.create_consumer_on_stream(def.config(), &def.stream)
            .await
            .map_err(|source| ProvisionError::Consumer {
                name: def.durable.clone(),
                source,
            })?;
    }
    Ok(())
}

/// Creates (or updates to match) one durable pull consumer and returns it; a process that
/// does not provision binds to the consumer as the administrator made it.
pub async fn bind_consumer(
    js: &jetstream::Context,
    def: &ConsumerDef,
) -> Result<consumer::PullConsumer, ProvisionError> {
    if !crate::access::get().provisions {
        return js
            .get_consumer_from_stream(&def.durable, &def.stream)
            .await
            .map_err(|err| ProvisionError::Missing {
                name: format!("{}/{}", def.stream, def.durable),
                reason: err.to_string(),
            });
    }
    js.create_consumer_on_stream(def.config(), &def.stream)
        .await
        .map_err(|source| ProvisionError::Consumer {
            name: def.durable.clone(),
            source,
        })
}

#[cfg(test)]
mod tests;
