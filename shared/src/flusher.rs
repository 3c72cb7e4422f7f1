//! Exports a process's finished spans on demand, before a message that names them leaves:
//! concurrent requests share one flush, and a failing collector is noticed so that senders
//! stop waiting for it.

use opentelemetry_sdk::error::OTelSdkError;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Longest a sender waits for its spans to be exported before it sends anyway: telemetry
/// must never stop the business.
pub const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// Exports finished spans before a message leaves; concurrent requests share one flush.
#[derive(Clone, Debug)]
pub struct SpanFlusher {
    requests: Option<mpsc::Sender<oneshot::Sender<Flushed>>>,
    /// Set while exports fail (no collector): senders then stop waiting for them, so a missing
    /// collector costs traces, never throughput. The next successful flush clears it.
    failing: Arc<AtomicBool>,
}

impl SpanFlusher {
    /// A flusher that does nothing, for processes that do not export.
    pub fn disabled() -> Self {
        SpanFlusher {
            requests: None,
            failing: Arc::default(),
        }
    }

    pub(crate) fn start(provider: Option<SdkTracerProvider>) -> Self {
        let Some(provider) = provider else {
            return Self::disabled();
        };
        let (tx, mut rx) = mpsc::channel::<oneshot::Sender<Flushed>>(4_096);
        let failing = Arc::new(AtomicBool::new(false));
        let flag = failing.clone();
        tokio::spawn(async move {
            let mut timed_out_last = false;
            while let Some(first) = rx.recv().await {
                let mut waiters = vec![first];
                while let Ok(more) = rx.try_recv() {
                    waiters.push(more);
                }
                let provider = provider.clone();
                // force_flush blocks on the batch processor's thread; keep it off the runtime.
                let flushed = tokio::task::spawn_blocking(move || provider.force_flush()).await;
                let outcome = match &flushed {
                    Ok(Ok(())) => Flushed::Exported,
                    // Slow, not down (the batch processor gives up waiting after 5 s on a
                    // starved machine): the spans are still on their way, and senders must go
                    // on waiting for them rather than take the collector for gone. Twice in a
                    // row, it is gone in all but name (a collector that accepts connections
                    // and never answers): senders must stop waiting for it.
                    Ok(Err(err)) if timed_out(err) && !timed_out_last => Flushed::NotYet,
                    Ok(Err(_)) | Err(_) => Flushed::Failing,
                };
                timed_out_last = matches!(&flushed, Ok(Err(err)) if timed_out(err));
                let was_failing = flag.swap(outcome == Flushed::Failing, Ordering::Relaxed);
                match (was_failing, outcome) {
                    (false, Flushed::Failing) => tracing::warn!(
                        error = ?flushed,
                        "span export failing: messages leave without waiting for their spans"
                    ),
                    (true, Flushed::Exported) => tracing::info!("span export works again"),
                    _ => {}
                }
                for waiter in waiters {
                    let _ = waiter.send(outcome);
                }
            }
        });
        SpanFlusher {
            requests: Some(tx),
            failing,
        }
    }

    /// Waits (boundedly) until every span finished before this call has been exported;
    /// returns whether the export is known to have succeeded (always true when disabled).
    pub async fn flush(&self) -> bool {
        self.flush_within(FLUSH_WAIT).await == Flushed::Exported
    }

    /// Waits at most `wait` until every span finished before this call has been exported.
    pub async fn flush_within(&self, wait: Duration) -> Flushed {
        let Some(requests) = &self.requests else {
            return Flushed::Exported;
        };
        let (tx, rx) = oneshot::channel();
        if self.failing.load(Ordering::Relaxed) {
            // Still ask, so that a collector coming back is noticed, but do not wait.
            let _ = requests.try_send(tx);
            return Flushed::Failing;
        }
        if requests.send(tx).await.is_err() {
            return Flushed::Failing;
        }
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Flushed::Failing,
            Err(_) => Flushed::NotYet,
        }
    }
}

/// Whether a provider's flush error is a processor's timeout. The provider folds its
/// processors' errors into one `InternalFailure` naming them (`errs: [Err(Timeout(5s))]`),
/// so the variant is read from that text too; the unit tests go through a provider and fail
/// if the wording changes.
fn timed_out(err: &OTelSdkError) -> bool {
    match err {
        OTelSdkError::Timeout(_) => true,
        OTelSdkError::InternalFailure(text) => text.contains("Err(Timeout("),
        _ => false,
    }
}

/// What became of a flush.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flushed {
    /// Every span finished before it is exported (or nothing is exported at all).
    Exported,
    /// The collector is failing: spans are being lost whatever the caller does.
    Failing,
    /// Still under way when the wait ran out: the spans will most likely go out, but a
    /// process killed now would lose them.
    NotYet,
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::Context;
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};

    /// A processor whose flush takes `delay` and then succeeds or fails: the flusher's
    /// answers are what is under test, not an exporter.
    #[derive(Debug)]
    struct Flush {
        delay: Duration,
        result: fn() -> OTelSdkResult,
    }

    impl SpanProcessor for Flush {
        fn on_start(&self, _: &mut Span, _: &Context) {}
        fn on_end(&self, _: SpanData) {}
        fn force_flush(&self) -> OTelSdkResult {
            std::thread::sleep(self.delay);
            (self.result)()
        }
        fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
            Ok(())
        }
        fn set_resource(&mut self, _: &Resource) {}
    }

    fn flusher(delay_ms: u64, result: fn() -> OTelSdkResult) -> SpanFlusher {
        let processor = Flush {
            delay: Duration::from_millis(delay_ms),
            result,
        };
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .build();
        SpanFlusher::start(Some(provider))
    }

    #[tokio::test]
    async fn a_flush_still_under_way_is_told_apart_from_one_done() {
        let slow = flusher(300, || Ok(()));
        let short = Duration::from_millis(30);
        assert_eq!(slow.flush_within(short).await, Flushed::NotYet);
        assert_eq!(
            slow.flush_within(Duration::from_secs(5)).await,
            Flushed::Exported,
            "waited for long enough, the same flusher confirms"
        );
        assert_eq!(
            flusher(0, || Ok(())).flush_within(short * 10).await,
            Flushed::Exported
        );
    }

    #[tokio::test]
    async fn a_failing_collector_is_reported_then_not_waited_for() {
        let failing = flusher(500, || {
            Err(OTelSdkError::InternalFailure("collector down".into()))
        });
        assert_eq!(
            failing.flush_within(Duration::from_secs(5)).await,
            Flushed::Failing
        );
        let asked = std::time::Instant::now();
        assert_eq!(
            failing.flush_within(Duration::from_secs(5)).await,
            Flushed::Failing
        );
        assert!(
            asked.elapsed() < Duration::from_millis(250),
            "known failing: answered without waiting for the next flush"
        );
        assert!(!failing.flush().await);
        assert!(SpanFlusher::disabled().flush().await, "nothing to export");
    }

    #[tokio::test]
    async fn a_flush_that_timed_out_is_not_a_failing_collector() {
        let timing_out = flusher(200, || Err(OTelSdkError::Timeout(Duration::from_secs(5))));
        let wait = Duration::from_secs(5);
        assert_eq!(timing_out.flush_within(wait).await, Flushed::NotYet);
        let asked = std::time::Instant::now();
        assert_eq!(
            timing_out.flush_within(wait).await,
            Flushed::Failing,
            "a second timeout in a row: a collector that never answers is as good as gone"
        );
        assert!(
            asked.elapsed() >= Duration::from_millis(200),
            "not taken for a failing collector after one timeout: the next call waited for its own flush"
        );
    }
}
