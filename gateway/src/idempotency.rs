//! `Idempotency-Key`: one key, one saga.
//!
//! The saga id is derived from the key (UUIDv5), so every gateway, before or after a restart,
//! gives the same key the same saga id; the orchestrator starts a saga id once and JetStream's
//! duplicate window drops a republish, so a key can never start a second checkout. What the
//! id cannot tell is whether a replay carries the *same* cart: for that the hash of the body
//! the key was first used with is kept in PostgreSQL (`gateway.idempotency_keys`), shared by
//! every gateway and durable across restarts. The first insert wins a race between gateways;
//! the loser reads the winner's row.
//!
//! A key is remembered for a retention (a day by default, as is common for Idempotency-Key),
//! then pruned ([`prune_pass`]). Used again after that, a key still names the same saga id,
//! so the orchestrator ignores it as a duplicate for as long as it keeps that saga; only the
//! 409 for another cart is lost.

use checkout_shared::retention::{self, Retention};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

/// Longest accepted key (a UUID is 36; generous for clients that compose keys).
const MAX_KEY_LEN: usize = 255;

/// The namespace of saga ids derived from idempotency keys.
const KEY_NAMESPACE: Uuid = Uuid::from_u128(0x6a1f_3c1e_9d7b_4e52_8f0a_2b6c_5d4e_3f21);

/// What a key already stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is new, or was used with this very body: go on with this saga and trace.
    Same {
        /// The key's saga.
        saga_id: Uuid,
        /// The trace of the request that first used the key.
        trace_id: String,
        /// Whether an earlier request used the key.
        replay: bool,
    },
    /// The key was first used with another body.
    Conflict {
        /// The saga the key stands for.
        saga_id: Uuid,
    },
}

/// Checks a key's syntax: 1 to 255 visible ASCII characters.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN && key.bytes().all(|b| b.is_ascii_graphic())
}

/// The saga id of a key.
pub fn saga_id(key: &str) -> Uuid {
    Uuid::new_v5(&KEY_NAMESPACE, key.as_bytes())
}

/// The hash of a cart, over its canonical JSON (keys sorted, no spaces), so that the same
/// cart sent with other whitespace or key order is the same body.
pub fn body_hash(cart: &serde_json::Value) -> Vec<u8> {
    // serde_json's map is ordered by key (the preserve_order feature is off), so the
    // serialisation is canonical.
    let canonical = serde_json::to_vec(cart).unwrap_or_default();
    Sha256::digest(&canonical).to_vec()
}

/// What `key` already stands for, if anything, given the hash of the cart now sent.
pub async fn lookup(pool: &PgPool, key: &str, hash: &[u8]) -> Result<Option<Claim>, sqlx::Error> {
    let row: Option<(Vec<u8>, Uuid, String)> = sqlx::query_as(
        "SELECT body_sha256, saga_id, trace_id FROM gateway.idempotency_keys WHERE key = $1",
    )
    .bind(key)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(stored_hash, saga_id, trace_id)| {
        if stored_hash == hash {
            Claim::Same {
                saga_id,
                trace_id,
                replay: true,
            }
        } else {
            Claim::Conflict { saga_id }
        }
    }))
}

/// Claims `key` for a cart with `hash`, to be run as saga `saga_id` in trace `trace_id`.
pub async fn claim(
    pool: &PgPool,
    key: &str,
    hash: &[u8],
    trace_id: &str,
) -> Result<Claim, sqlx::Error> {
    let saga_id = saga_id(key);
    let inserted = sqlx::query(
        "INSERT INTO gateway.idempotency_keys (key, body_sha256, saga_id, trace_id) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO NOTHING",
    )
    .bind(key)
    .bind(hash)
    .bind(saga_id)
    .bind(trace_id)
    .execute(pool)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Claim::Same {
            saga_id,
            trace_id: trace_id.to_owned(),
            replay: false,
        });
    }
    // Another gateway claimed the key in between: its row decides.
    lookup(pool, key, hash)
        .await?
        .ok_or(sqlx::Error::RowNotFound)
}

/// One bounded pass: deletes the keys first used more than `retention.keep` ago, at most
/// [`retention::BATCH`] per statement. `SKIP LOCKED`: gateways pruning side by side do not
/// wait for one another. Returns how many went.
pub async fn prune_pass(pool: &PgPool, retention: Retention) -> Result<u64, sqlx::Error> {
    retention::pass(|batch| async move {
        let done = sqlx::query(
            "DELETE FROM gateway.idempotency_keys WHERE key IN ( \
                 SELECT key FROM gateway.idempotency_keys \
                 WHERE created_at < now() - make_interval(secs => $1) \
                 ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(retention.keep_secs())
        .bind(batch)
        .execute(pool)
        .await?;
        Ok(done.rows_affected())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_always_names_the_same_saga_and_a_cart_hashes_canonically() {
        assert_eq!(saga_id("k-1"), saga_id("k-1"));
        assert_ne!(saga_id("k-1"), saga_id("k-2"));
        let a: serde_json::Value = serde_json::from_str(r#"{"a": 1, "b": [2]}"#).unwrap();
        let b: serde_json::Value = serde_json::from_str(r#"{"b":[2],"a":1}"#).unwrap();
        let c: serde_json::Value = serde_json::from_str(r#"{"b":[3],"a":1}"#).unwrap();
        assert_eq!(body_hash(&a), body_hash(&b));
        assert_ne!(body_hash(&a), body_hash(&c));
        assert!(valid_key("order-42"));
        assert!(!valid_key("") && !valid_key("has space") && !valid_key(&"k".repeat(256)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_past_their_retention_go_and_recent_ones_stay() {
        let db = checkout_harness::TestDb::create().await.unwrap();
        let pool = PgPool::connect(&db.url()).await.unwrap();
        crate::migrate(&pool).await.unwrap();
        let day = Retention {
            keep: std::time::Duration::from_secs(86_400),
            interval: std::time::Duration::from_secs(60),
        };
        for (key, hours) in [("old", 25), ("older", 24 * 30), ("recent", 23), ("new", 0)] {
            claim(&pool, key, b"hash", "trace").await.unwrap();
            sqlx::query(
                "UPDATE gateway.idempotency_keys \
                 SET created_at = now() - make_interval(hours => $2) WHERE key = $1",
            )
            .bind(key)
            .bind(hours)
            .execute(&pool)
            .await
            .unwrap();
        }
        assert_eq!(prune_pass(&pool, day).await.unwrap(), 2);
        for (key, kept) in [
            ("old", false),
            ("older", false),
            ("recent", true),
            ("new", true),
        ] {
            let found = lookup(&pool, key, b"hash").await.unwrap();
            assert_eq!(found.is_some(), kept, "{key}");
        }
        // A pruned key used again is claimed afresh, for the same saga.
        let again = claim(&pool, "old", b"other cart", "trace-2").await.unwrap();
        assert!(
            matches!(again, Claim::Same { saga_id, replay: false, .. } if saga_id == super::saga_id("old")),
            "{again:?}"
        );
        pool.close().await;
        db.drop_db().await.unwrap();
    }
}
