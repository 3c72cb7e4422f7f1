//! The dice of fault injection: a number uniform in [0, 1) per (saga, fault kind, attempt),
//! the same on every delivery, machine and release.
//!
//! ```text
//!  (saga id, kind, attempt) ──SHA-256──▶ first 53 bits ──▶ u in [0, 1) ──▶ u < rate: fault
//! ```
//!
//! The whole id is hashed, never a field of it: a version 4 UUID has fixed version and variant
//! bits, and reading those made some faults impossible at some rates. Each kind and each
//! attempt is its own input to the hash, so their draws are independent of one another.
//! SHA-256 (not `std`'s hasher, whose output may change between Rust releases) keeps a saga's
//! faults the same after an upgrade, so a redelivery decides as the first delivery did.

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Separates these draws from any other use of the same hash over saga ids.
const DOMAIN: &[u8] = b"checkout.fault.v1";

/// A kind of injected fault. Each has its own number, hashed with the saga id, so each kind
/// picks its sagas independently of the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The card gateway declines a charge (payment).
    Decline,
    /// An order creation is refused (order).
    OrderRefusal,
    /// An attempt at the mail service fails (notification); each attempt draws again.
    NotificationAttempt,
    /// Which code a declined charge gets, from the configured mix (payment).
    DeclineCode,
}

impl FaultKind {
    /// The kind's number in the hash (also [`crate::Faults::hits`]'s `salt`). Never change
    /// one: the sagas each kind picks would change with it.
    pub const fn number(self) -> u32 {
        match self {
            FaultKind::Decline => 1,
            FaultKind::OrderRefusal => 2,
            FaultKind::NotificationAttempt => 3,
            FaultKind::DeclineCode => 4,
        }
    }
}

/// The draw of fault number `kind` for `saga_id`'s `attempt`: uniform in [0, 1) over saga
/// ids, and a pure function of its arguments.
pub fn uniform(saga_id: Uuid, kind: u32, attempt: u32) -> f64 {
    let digest = Sha256::new()
        .chain_update(DOMAIN)
        .chain_update(saga_id.as_bytes())
        .chain_update(kind.to_be_bytes())
        .chain_update(attempt.to_be_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // 53 bits: every value is exactly an f64, and the largest is below 1.
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether `saga_id`'s `attempt` meets a fault of `kind` configured at `rate` (0: never, 1 or
/// more: always).
pub fn hits(rate: f64, saga_id: Uuid, kind: FaultKind, attempt: u32) -> bool {
    uniform(saga_id, kind.number(), attempt) < rate
}

/// For tests: asserts that `observed` of `n` independent trials is a plausible count at
/// probability `p`, within 5 standard deviations of the binomial's mean (a false alarm about
/// once in 1.7 million runs).
#[cfg(test)]
pub(crate) fn assert_rate(observed: usize, n: usize, p: f64, what: &str) {
    let mean = n as f64 * p;
    let bound = 5.0 * (n as f64 * p * (1.0 - p)).sqrt();
    assert!(
        (observed as f64 - mean).abs() <= bound,
        "{what}: {observed} of {n}, expected {mean} ± {bound:.0} at rate {p}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: usize = 4_000;

    fn ids() -> Vec<Uuid> {
        (0..N).map(|_| Uuid::new_v4()).collect()
    }

    #[test]
    fn each_kind_hits_at_its_rate_on_every_attempt() {
        let ids = ids();
        for kind in [
            FaultKind::Decline,
            FaultKind::OrderRefusal,
            FaultKind::NotificationAttempt,
            FaultKind::DeclineCode,
        ] {
            for attempt in 1..=3 {
                for rate in [0.1, 0.5] {
                    let hit = ids
                        .iter()
                        .filter(|id| hits(rate, **id, kind, attempt))
                        .count();
                    assert_rate(hit, N, rate, &format!("{kind:?} attempt {attempt}"));
                }
            }
        }
        assert!(!ids.iter().any(|id| hits(0.0, *id, FaultKind::Decline, 1)));
        assert!(ids.iter().all(|id| hits(1.0, *id, FaultKind::Decline, 1)));
    }

    #[test]
    fn kinds_and_attempts_draw_independently() {
        let ids = ids();
        let pairs = [
            ((FaultKind::Decline, 1), (FaultKind::OrderRefusal, 1)),
            ((FaultKind::Decline, 1), (FaultKind::NotificationAttempt, 1)),
            ((FaultKind::Decline, 1), (FaultKind::DeclineCode, 1)),
            (
                (FaultKind::OrderRefusal, 1),
                (FaultKind::NotificationAttempt, 1),
            ),
            (
                (FaultKind::NotificationAttempt, 1),
                (FaultKind::NotificationAttempt, 2),
            ),
            (
                (FaultKind::NotificationAttempt, 2),
                (FaultKind::NotificationAttempt, 3),
            ),
        ];
        for ((a, i), (b, j)) in pairs {
            let both = ids
                .iter()
                .filter(|id| hits(0.5, **id, a, i) && hits(0.5, **id, b, j))
                .count();
            // Independent: a quarter meet both; the same draw would give a half, opposite
            // draws none.
            assert_rate(both, N, 0.25, &format!("{a:?} {i} and {b:?} {j}"));
        }
    }

    #[test]
    fn a_draw_depends_on_its_arguments_alone_and_never_changes() {
        let id = Uuid::from_u128(0x0123_4567_89ab_4def_8123_4567_89ab_cdef);
        let first = uniform(id, 1, 1);
        for _ in 0..100 {
            assert_eq!(uniform(id, 1, 1), first);
        }
        // Pinned: a new hash, byte order or input layout would re-pick every saga's faults,
        // and a redelivery after an upgrade would decide differently from its first delivery.
        assert_eq!(first, PINNED);
        assert_ne!(uniform(id, 2, 1), first);
        assert_ne!(uniform(id, 1, 2), first);
    }

    /// The draw above, computed apart from this code: SHA-256 of the domain, the id's 16
    /// bytes, then kind and attempt as big-endian `u32`s; its first 8 bytes, big-endian, less
    /// their low 11 bits, over 2^53 (Python: `hashlib.sha256`).
    const PINNED: f64 = 0.6926051921253946;
}
