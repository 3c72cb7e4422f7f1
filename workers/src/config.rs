//! Typed configuration of a worker process. Binaries fill it; library code reads no
//! environment.

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
/// redelivery decides as the first delivery did.
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
    fn fault_rates_are_roughly_right() {
        let ids: Vec<_> = (0..10_000).map(|_| uuid::Uuid::new_v4()).collect();
        let hit = ids.iter().filter(|id| Faults::hits(0.25, **id, 1)).count();
        assert!((2_000..3_000).contains(&hit), "{hit} of 10000 at 25%");
        assert!(!ids.iter().any(|id| Faults::hits(0.0, *id, 1)));
        assert!(ids.iter().all(|id| Faults::hits(1.0, *id, 1)));
    }

    #[test]
    fn a_fault_is_chosen_by_the_saga_id_alone() {
        // Fixed ids with known 16-bit fields, so a fault that depended on anything but the
        // id (a random draw, a clock) or read the wrong bits would change these answers.
        // Field 1 (bits 16..32) of `low` is 0x0001; of `high` it is 0xfff0.
        let low = uuid::Uuid::from_u128(0xffff_ffff_ffff_ffff_ffff_ffff_0001_ffff);
        let high = uuid::Uuid::from_u128(0x0000_0000_0000_0000_0000_0000_fff0_0000);
        for _ in 0..100 {
            assert!(Faults::hits(0.01, low, 1));
            assert!(!Faults::hits(0.99, high, 1));
        }
        // Field 2 (bits 32..48) of `low` is 0xffff: the order fault does not pick it.
        assert!(!Faults::hits(0.99, low, 2));
        assert!(Faults::hits(0.01, high, 2));
    }

    #[test]
    fn different_faults_pick_independent_sagas() {
        let ids: Vec<_> = (0..10_000).map(|_| uuid::Uuid::new_v4()).collect();
        let declined: Vec<_> = ids.iter().filter(|id| Faults::hits(0.5, **id, 1)).collect();
        let also_refused = declined
            .iter()
            .filter(|id| Faults::hits(0.5, ***id, 2))
            .count();
        // Independent: about half of the declined sagas also have their order refused. Were
        // the salt ignored, every one of them would.
        let share = also_refused as f64 / declined.len() as f64;
        assert!((0.4..0.6).contains(&share), "{share}");
    }
}
