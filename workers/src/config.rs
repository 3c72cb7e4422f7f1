//! Typed configuration of a worker process. Binaries fill it; library code reads no
//! environment.

use checkout_shared::Step;
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
}

/// Deterministic fault injection: the same saga always meets the same fault, so a
/// redelivery decides as the first delivery did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Fraction of charges declined, chosen by saga id (payment).
    pub decline_rate: f64,
    /// Fraction of order creations refused, chosen by saga id (order).
    pub order_fail_rate: f64,
    /// Time added to every action and undo.
    pub latency: Duration,
}

impl Faults {
    /// Whether a saga falls in the first `rate` of the id space, using the `salt`-th
    /// 16 bits of its id so that different faults pick independent sagas.
    pub fn hits(rate: f64, saga_id: uuid::Uuid, salt: u32) -> bool {
        let bits = (saga_id.as_u128() >> (16 * salt)) & 0xffff;
        (bits as f64) < rate.clamp(0.0, 1.0) * 65_536.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_rates_are_deterministic_and_roughly_right() {
        let ids: Vec<_> = (0..10_000).map(|_| uuid::Uuid::new_v4()).collect();
        let hit = ids.iter().filter(|id| Faults::hits(0.25, **id, 1)).count();
        assert!((2_000..3_000).contains(&hit), "{hit} of 10000 at 25%");
        assert!(
            ids.iter()
                .all(|id| Faults::hits(0.25, *id, 1) == Faults::hits(0.25, *id, 1))
        );
        assert!(!ids.iter().any(|id| Faults::hits(0.0, *id, 1)));
        assert!(ids.iter().all(|id| Faults::hits(1.0, *id, 1)));
    }
}
