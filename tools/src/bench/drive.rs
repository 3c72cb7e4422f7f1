//! Keeping a number of sagas in flight: for a duration (a benchmark run) or for a count (a
//! soak), recording when each ended, how long it took and how.

use indicatif::ProgressBar;
use std::future::Future;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How a saga ended, as its client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every step done.
    Completed,
    /// A step refused and every earlier step undone.
    Compensated,
    /// Stuck, timed out, or not published.
    Failed,
}

/// One saga of a load: given its index, runs it to its end.
pub trait Sagas: Clone + Send + Sync + 'static {
    /// Runs saga `index` and says how it ended.
    fn run(&self, index: u64) -> impl Future<Output = Outcome> + Send;
}

/// One ended saga.
#[derive(Debug, Clone, Copy)]
pub struct Ended {
    /// When it ended, from the start of the drive.
    pub at: Duration,
    /// How long it took, in microseconds.
    pub latency_us: u64,
    /// How.
    pub outcome: Outcome,
}

/// Upper bound on the sagas of one drive, so no loop runs unbounded whatever the options.
pub const MAX_SAGAS: u64 = 10_000_000;

/// A timed drive: the sagas that ended within the window, and those that ended while the
/// ones still in flight were drained.
#[derive(Debug, Default)]
pub struct Timed {
    /// Ended within the window.
    pub window: Vec<Ended>,
    /// Ended after it, while draining.
    pub drained: Vec<Ended>,
    /// Still in flight when the drain gave up (counted as failed, and aborted).
    pub abandoned: usize,
}

impl Timed {
    /// Every ended saga, window and drain.
    pub fn all(&self) -> impl Iterator<Item = &Ended> {
        self.window.iter().chain(&self.drained)
    }
}

fn spawn_one<S: Sagas>(tasks: &mut JoinSet<Ended>, sagas: &S, index: u64, origin: Instant) {
    let sagas = sagas.clone();
    tasks.spawn(async move {
        let begun = Instant::now();
        let outcome = sagas.run(index).await;
        let now = Instant::now();
        Ended {
            at: now - origin,
            latency_us: u64::try_from((now - begun).as_micros()).unwrap_or(u64::MAX),
            outcome,
        }
    });
}

fn joined(result: Result<Ended, tokio::task::JoinError>, origin: Instant) -> Ended {
    result.unwrap_or(Ended {
        at: origin.elapsed(),
        latency_us: 0,
        outcome: Outcome::Failed,
    })
}

/// Keeps `concurrency` sagas in flight for `duration`, then waits at most `drain` for the
/// rest. Each saga bounds its own wait, so the drain bound is a last resort.
pub async fn timed<S: Sagas>(
    sagas: &S,
    concurrency: usize,
    duration: Duration,
    drain: Duration,
    progress: &ProgressBar,
) -> Timed {
    let origin = Instant::now();
    let deadline = origin + duration;
    let mut tasks = JoinSet::new();
    let mut next = 0u64;
    let mut out = Timed::default();
    let tick = progress.length().unwrap_or(0).max(1) as f64 / duration.as_secs_f64().max(1e-3);
    while Instant::now() < deadline {
        while tasks.len() < concurrency.max(1) && next < MAX_SAGAS {
            spawn_one(&mut tasks, sagas, next, origin);
            next += 1;
        }
        tokio::select! {
            result = tasks.join_next() => match result {
                Some(result) => {
                    // `select!` may take a saga that ended just past the deadline before the
                    // deadline branch: it belongs to the drain, not to the measured window.
                    let ended = joined(result, origin);
                    if ended.at <= duration {
                        out.window.push(ended);
                    } else {
                        out.drained.push(ended);
                    }
                }
                None => break,
            },
            () = tokio::time::sleep_until(deadline) => break,
        }
        progress.set_position((origin.elapsed().as_secs_f64() * tick) as u64);
    }
    let drain_deadline = Instant::now() + drain;
    loop {
        match tokio::time::timeout_at(drain_deadline, tasks.join_next()).await {
            Ok(Some(result)) => out.drained.push(joined(result, origin)),
            Ok(None) => break,
            Err(_) => {
                out.abandoned = tasks.len();
                tasks.abort_all();
                break;
            }
        }
    }
    out
}

/// Runs `count` sagas, `concurrency` at a time, no faster than `rate` a second (0: as fast as
/// they end), calling `on_ended` for each in the order they end.
pub async fn counted<S: Sagas>(
    sagas: &S,
    count: u64,
    concurrency: usize,
    rate: f64,
    mut on_ended: impl AsyncFnMut(Ended),
) {
    let origin = Instant::now();
    let mut tasks = JoinSet::new();
    let mut next = 0u64;
    let count = count.min(MAX_SAGAS);
    while next < count || !tasks.is_empty() {
        let due = (rate > 0.0).then(|| origin + Duration::from_secs_f64(next as f64 / rate));
        let may_start = next < count && tasks.len() < concurrency.max(1);
        if may_start && due.is_none_or(|due| due <= Instant::now()) {
            spawn_one(&mut tasks, sagas, next, origin);
            next += 1;
            continue;
        }
        let wake = if may_start { due } else { None };
        tokio::select! {
            result = tasks.join_next(), if !tasks.is_empty() => {
                if let Some(result) = result {
                    on_ended(joined(result, origin)).await;
                }
            }
            () = sleep_until_some(wake) => {}
        }
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Clone)]
    struct Fake {
        in_flight: Arc<AtomicUsize>,
        most: Arc<AtomicUsize>,
    }

    impl Sagas for Fake {
        async fn run(&self, index: u64) -> Outcome {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            if index.is_multiple_of(10) {
                Outcome::Compensated
            } else {
                Outcome::Completed
            }
        }
    }

    fn fake() -> Fake {
        Fake {
            in_flight: Arc::default(),
            most: Arc::default(),
        }
    }

    #[tokio::test]
    async fn a_timed_drive_keeps_the_concurrency_and_drains() {
        let sagas = fake();
        let timed = timed(
            &sagas,
            4,
            Duration::from_millis(100),
            Duration::from_secs(5),
            &ProgressBar::hidden(),
        )
        .await;
        assert_eq!(sagas.most.load(Ordering::SeqCst), 4);
        assert!(!timed.window.is_empty());
        assert!(
            timed
                .window
                .iter()
                .all(|e| e.at <= Duration::from_millis(100))
        );
        assert_eq!(timed.abandoned, 0);
        assert_eq!(sagas.in_flight.load(Ordering::SeqCst), 0, "drained");
    }

    #[tokio::test]
    async fn a_counted_drive_runs_exactly_the_count() {
        let sagas = fake();
        let mut ended = Vec::new();
        counted(&sagas, 25, 3, 0.0, async |e| ended.push(e.outcome)).await;
        assert_eq!(ended.len(), 25);
        assert_eq!(sagas.most.load(Ordering::SeqCst), 3);
        let compensated = ended.iter().filter(|o| **o == Outcome::Compensated).count();
        assert_eq!(compensated, 3);
    }
}
