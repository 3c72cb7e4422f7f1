//! Typed configuration of a worker process. Binaries fill it; library code reads no
//! environment.

use crate::chance;
use checkout_shared::Step;
use checkout_shared::streams::ConsumerDef;
use std::time::Duration;

/// Everything a worker needs to run.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Which service this process is.
    pub kind: Step,
    /// NATS URL.
    pub nats_url: String,
    /// PostgreSQL URL.
    pub database_url: String,
    /// Messages handled at once by this process.
    pub concurrency: usize,
    /// Database connections in the pool.
    pub max_connections: u32,
    /// Stream replicas when provisioning (1 on a single server, 3 on a cluster).
    pub replicas: usize,
    /// Injected faults, for tests and demos.
    pub faults: Faults,
    /// Stock to create at start-up for SKUs that do not exist yet, with their prices
    /// (inventory only).
    pub seed_stock: Vec<crate::inventory::StockSeed>,
    /// The command consumer to use instead of the one in `nats/jetstream.json` (tests shorten
    /// its delivery budget); `None` in production. Its durable name must be this kind's.
    pub consumer: Option<ConsumerDef>,
    /// How long processed-message records are kept, and how often the pruner looks.
    pub retention: checkout_shared::retention::Retention,
}

/// Deterministic fault injection: the same saga always meets the same fault, so a
/// redelivery decides as the first delivery did. Each decision is a draw of [`chance`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Fraction of charges declined, chosen by saga id (payment).
    pub decline_rate: f64,
    /// Fraction of order creations refused, chosen by saga id (order).
    pub order_fail_rate: f64,
    /// Time added to every action and undo.
    pub latency: Duration,
    /// The simulated payment gateway's latency per charge (payment).
    pub gateway_latency: Duration,
    /// The codes of the injected declines, with weights (payment); empty: `card_declined`.
    pub decline_mix: Vec<(checkout_shared::messages::RefusalCode, u32)>,
    /// Fraction of confirmation attempts that fail, chosen by saga id and attempt
    /// (notification).
    pub notification_fail_rate: f64,
    /// Attempts at a confirmation before it is given up (notification).
    pub notification_attempts: u32,
    /// The pause after the first failed attempt, doubling (notification).
    pub notification_backoff: Duration,
    /// The simulated mail service's latency per attempt (notification).
    pub notification_latency: Duration,
}

impl Faults {
    /// Whether a saga meets the fault numbered `salt` ([`chance::FaultKind::number`]; an order
    /// refusal is 2) at `rate`, on its first attempt: [`chance::hits`] for callers that
    /// number their fault.
    pub fn hits(rate: f64, saga_id: uuid::Uuid, salt: u32) -> bool {
        chance::uniform(saga_id, salt, 1) < rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chance::FaultKind;

    #[test]
    fn a_numbered_fault_is_its_kind_on_the_first_attempt() {
        for _ in 0..1_000 {
            let id = uuid::Uuid::new_v4();
            for kind in [FaultKind::Decline, FaultKind::OrderRefusal] {
                assert_eq!(
                    Faults::hits(0.5, id, kind.number()),
                    chance::hits(0.5, id, kind, 1)
                );
            }
        }
    }

    #[test]
    fn the_order_refusal_hits_at_its_rate() {
        let ids: Vec<_> = (0..4_000).map(|_| uuid::Uuid::new_v4()).collect();
        for rate in [0.1, 0.5] {
            let hit = ids.iter().filter(|id| Faults::hits(rate, **id, 2)).count();
            chance::assert_rate(hit, ids.len(), rate, "order refusal");
        }
    }
}
