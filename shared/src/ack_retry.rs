//! Sending a JetStream message again, under the same `Nats-Msg-Id`, until the stream acks it.
//!
//! On a cluster, a node's death makes the streams it led elect a new leader; for a few seconds
//! a publish gets no ack (a timeout, "no responders", a 503 from the JetStream API). Giving up
//! then would leave the message to the saga's deadline, seconds later and under a new message
//! id; sending it again at once under the *same* id is safe, because the stream's duplicate
//! window drops a copy whose first send was stored after all: a message is never doubled by a
//! retry, and never dropped while the cluster elects.
//!
//! ```text
//!  send ──ack──▶ done
//!    └─timeout / no responders / 503─▶ pause (doubling) ─▶ send again, same id ... (bounded)
//! ```

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use std::future::Future;
use std::time::Duration;

/// How often and how long a message is sent again before the error is returned.
#[derive(Debug, Clone, Copy)]
pub struct AckRetry {
    /// Sends in all, the first included.
    pub attempts: u32,
    /// The pause after the first failure; it doubles up to [`AckRetry::max_pause`].
    pub first_pause: Duration,
    /// The longest pause between two sends.
    pub max_pause: Duration,
    /// No send starts after this much time since the first (a send may still take its ack
    /// timeout beyond it), so a broker that stays down is reported, not waited for.
    pub give_up_after: Duration,
}

impl AckRetry {
    /// What every publish uses: enough to ride out a leader election (a few seconds) and a
    /// node's restart, well inside the streams' two-minute duplicate window, so a retry is
    /// never stored twice.
    pub const DEFAULT: AckRetry = AckRetry {
        attempts: 8,
        first_pause: Duration::from_millis(100),
        max_pause: Duration::from_secs(2),
        give_up_after: Duration::from_secs(20),
    };
}

/// Whether another send of the same message might be acked. A stream that refused the
/// message on its content (an expected last id or sequence, its size) would refuse it again;
/// everything
/// else (no ack in time, no responders while a leader is elected, a broken connection, the
/// API's "temporarily unavailable") may pass on the next send.
pub fn worth_retrying(err: &PublishError) -> bool {
    !matches!(
        err.kind(),
        PublishErrorKind::WrongLastMessageId
            | PublishErrorKind::WrongLastSequence
            | PublishErrorKind::MaxPayloadExceeded
    )
}

/// Runs `send` until it succeeds, fails with an error not [`worth_retrying`], or `policy`'s
/// attempts or time run out; returns the last outcome and how many sends it took.
pub async fn send_until_acked<T, F, Fut>(
    policy: AckRetry,
    mut send: F,
) -> (Result<T, PublishError>, u32)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, PublishError>>,
{
    let started = tokio::time::Instant::now();
    let mut pause = policy.first_pause;
    let mut attempt = 1;
    loop {
        let result = send().await;
        let retry = match &result {
            Ok(_) => false,
            Err(err) => {
                worth_retrying(err)
                    && attempt < policy.attempts
                    && started.elapsed() + pause < policy.give_up_after
            }
        };
        if !retry {
            return (result, attempt);
        }
        if let Err(err) = &result {
            tracing::debug!(attempt, error = %err, "no ack from the stream; sending again under the same id");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(policy.max_pause);
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn error(kind: PublishErrorKind) -> PublishError {
        PublishError::new(kind)
    }

    const FAST: AckRetry = AckRetry {
        attempts: 5,
        first_pause: Duration::from_millis(1),
        max_pause: Duration::from_millis(2),
        give_up_after: Duration::from_secs(60),
    };

    #[tokio::test]
    async fn an_election_s_timeouts_are_ridden_out() {
        let calls = Cell::new(0);
        let (result, attempts) = send_until_acked(FAST, || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move {
                match n {
                    1 => Err(error(PublishErrorKind::TimedOut)),
                    2 => Err(error(PublishErrorKind::StreamNotFound)),
                    _ => Ok(n),
                }
            }
        })
        .await;
        assert_eq!(result.expect("acked on the third send"), 3);
        assert_eq!(attempts, 3);
    }

    #[tokio::test]
    async fn a_refusal_on_content_is_not_sent_again() {
        let calls = Cell::new(0);
        let (result, attempts) = send_until_acked(FAST, || {
            calls.set(calls.get() + 1);
            async { Err::<(), _>(error(PublishErrorKind::WrongLastSequence)) }
        })
        .await;
        assert!(result.is_err());
        assert_eq!((attempts, calls.get()), (1, 1));
    }

    #[tokio::test]
    async fn the_attempts_are_bounded() {
        let calls = Cell::new(0);
        let (result, attempts) = send_until_acked(FAST, || {
            calls.set(calls.get() + 1);
            async { Err::<(), _>(error(PublishErrorKind::TimedOut)) }
        })
        .await;
        assert!(result.is_err());
        assert_eq!((attempts, calls.get()), (5, 5));
    }
}
