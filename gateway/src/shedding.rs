//! Load shedding at the door: when the system is behind, a checkout is refused at once with a
//! time to retry, rather than queued without bound.
//!
//! ```text
//!  POST /checkout ─▶ a slot free? (max concurrent checkouts here) ──no──▶ 429, Retry-After
//!                        │ yes
//!                        ▼
//!        work waiting in the system ≤ max backlog? ──no──▶ 503 overloaded, Retry-After
//!        (requests + commands + replies not yet
//!         handled, sampled from the broker)
//!                        │ yes
//!                        ▼
//!        ... the door's checks ... publish, acked within the publish timeout? ──no──▶ 503
//! ```
//!
//! The backlog is read from the broker's work queues, which every gateway and orchestrator
//! shares, so every gateway sheds alike and none counts what another accepted. It is sampled
//! in the background (a request never waits on it); while it cannot be read the publish's own
//! timeout is what refuses. A refused request costs a permit check and an atomic load.

use crate::problem::{Problem, Reason};
use async_nats::jetstream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// The work queues whose messages are checkouts waiting to be taken up or in flight: each
/// in-flight saga has at most one command or reply waiting in them.
const WORK_QUEUES: [&str; 3] = ["CHECKOUT_REQUESTS", "CHECKOUT_COMMANDS", "CHECKOUT_EVENTS"];
/// How often the backlog is read.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// The backlog while it is unknown: nothing is shed on its account.
const UNKNOWN: u64 = u64::MAX;

/// The gateway's limits (settings: `checkout gateway --help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Checkouts this gateway handles at once; one more is answered 429.
    pub max_concurrent: usize,
    /// Messages waiting in the work queues (requests, commands, replies) above which a new
    /// checkout is answered 503.
    pub max_backlog: u64,
    /// How long a publish may wait for the broker's acknowledgement before the checkout is
    /// answered 503.
    pub publish_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_concurrent: 256,
            max_backlog: 5_000,
            publish_timeout: Duration::from_secs(2),
        }
    }
}

/// The door's admission: its slots and the last backlog read.
pub(crate) struct Shedding {
    limits: Limits,
    slots: Arc<Semaphore>,
    backlog: AtomicU64,
}

impl Shedding {
    /// No checkout in hand, the backlog not read yet.
    pub fn new(limits: Limits) -> Self {
        Shedding {
            limits,
            slots: Arc::new(Semaphore::new(limits.max_concurrent.max(1))),
            backlog: AtomicU64::new(UNKNOWN),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Admits one checkout, holding its slot until the permit is dropped; or refuses it with
    /// a problem that says when to retry.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, Problem> {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            let detail = format!(
                "this gateway is handling {} checkouts already; retry shortly",
                self.limits.max_concurrent
            );
            return Err(shed(Reason::TooManyRequests, detail));
        };
        let backlog = self.backlog.load(Ordering::Relaxed);
        if backlog != UNKNOWN && backlog > self.limits.max_backlog {
            let detail = format!(
                "the system is behind: {backlog} messages wait in its work queues (the \
                 limit is {}); retry with the same Idempotency-Key",
                self.limits.max_backlog
            );
            return Err(shed(Reason::Overloaded, detail));
        }
        Ok(slot)
    }

    fn record(&self, backlog: Option<u64>) {
        self.backlog
            .store(backlog.unwrap_or(UNKNOWN), Ordering::Relaxed);
    }
}

/// A refusal to protect the system, logged at debug (a flood must not flood the logs) and
/// counted with its reason.
fn shed(reason: Reason, detail: String) -> Problem {
    tracing::debug!(reason = reason.as_str(), %detail, "checkout shed");
    checkout_shared::metrics::get().rejected(reason.as_str());
    Problem::new(reason, detail)
}

/// Reads the backlog every [`SAMPLE_EVERY`] until `shutdown`.
pub(crate) async fn watch_backlog(
    js: jetstream::Context,
    shedding: Arc<Shedding>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let read = tokio::time::timeout(SAMPLE_EVERY * 4, backlog(&js)).await;
        shedding.record(read.ok().flatten());
    }
}

async fn backlog(js: &jetstream::Context) -> Option<u64> {
    let mut total = 0u64;
    for name in WORK_QUEUES {
        // One request each: the stream's info, with its message count.
        let stream = js.get_stream(name).await.ok()?;
        total = total.saturating_add(stream.cached_info().state.messages);
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn a_full_door_answers_429_and_a_behind_system_503_both_saying_when_to_retry() {
        let shedding = Shedding::new(Limits {
            max_concurrent: 2,
            max_backlog: 10,
            ..Limits::default()
        });
        let first = shedding.admit().unwrap();
        let _second = shedding.admit().unwrap();
        let full = shedding.admit().unwrap_err();
        assert_eq!(full.status(), StatusCode::TOO_MANY_REQUESTS);
        drop(first);
        assert!(
            shedding.admit().is_ok(),
            "a slot comes back when its checkout ends"
        );
        shedding.record(Some(11));
        let behind = shedding.admit().unwrap_err();
        assert_eq!(behind.status(), StatusCode::SERVICE_UNAVAILABLE);
        shedding.record(Some(10));
        assert!(shedding.admit().is_ok(), "at the limit: admitted");
        shedding.record(None);
        assert!(
            shedding.admit().is_ok(),
            "unknown: the publish timeout decides"
        );
        use axum::response::IntoResponse;
        for problem in [full, behind] {
            let response = problem.into_response();
            assert!(response.headers().get("retry-after").is_some());
        }
    }
}
