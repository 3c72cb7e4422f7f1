//! How long faults held progress back: a sampler of ended sagas (for the hold-up after each
//! fault) and each saga's own wait (for the slowest saga beyond the run's median).
//!
//! The sampler reads the database directly, which is itself under attack in a chaos run: a
//! failed sample is tolerated for a while (the database is being restarted) but a sampler that
//! could not see for long, or not at all, fails the run rather than report a hold-up of 0.

use super::faults::Fault;
use sqlx::PgPool;
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The longest time without a sample before the sampler counts as failed. A restart of the
/// database takes a few seconds; this is several times that.
const MAX_BLIND: Duration = Duration::from_secs(20);

/// Samples the number of ended sagas every 100 ms.
pub struct Sampler {
    stop: CancellationToken,
    task: JoinHandle<Samples>,
}

/// What the sampler saw.
#[derive(Debug, Default)]
pub struct Samples {
    /// (when, sagas ended by then).
    pub points: Vec<(Instant, i64)>,
    /// Samples that failed.
    pub errors: usize,
    /// The longest stretch without a sample (including the start and the end).
    pub blind: Duration,
    /// Why the samples cannot be trusted, if they cannot.
    pub failure: Option<String>,
}

impl Sampler {
    /// Starts sampling.
    pub fn start(pool: PgPool) -> Self {
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let mut samples = Samples::default();
            let mut last = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while !token.is_cancelled() && samples.points.len() < 100_000 {
                tick.tick().await;
                let ended = tokio::time::timeout(
                    Duration::from_secs(2),
                    sqlx::query_scalar::<_, i64>(
                        "SELECT count(*) FROM saga.sagas \
                         WHERE status IN ('completed', 'compensated', 'failed')",
                    )
                    .fetch_one(&pool),
                )
                .await;
                match ended {
                    Ok(Ok(ended)) => {
                        let now = Instant::now();
                        samples.blind = samples.blind.max(now - last);
                        last = now;
                        samples.points.push((now, ended));
                    }
                    _ => samples.errors += 1,
                }
            }
            samples.blind = samples.blind.max(last.elapsed());
            samples
        });
        Sampler { stop, task }
    }

    /// Stops and returns the samples, with a failure when they cannot be trusted.
    pub async fn stop(self) -> Samples {
        self.stop.cancel();
        let mut samples = match self.task.await {
            Ok(samples) => samples,
            Err(err) => Samples {
                failure: Some(format!("the sampler task failed: {err}")),
                ..Samples::default()
            },
        };
        if samples.failure.is_none() {
            if samples.points.is_empty() {
                samples.failure = Some(format!("no sample at all ({} failed)", samples.errors));
            } else if samples.blind > MAX_BLIND {
                samples.failure = Some(format!(
                    "no sample for {:.1} s ({} failed)",
                    samples.blind.as_secs_f64(),
                    samples.errors
                ));
            }
        }
        samples
    }
}

/// Hold-up after each fault: from the fault until the count of ended sagas grew again. The
/// baseline is the first sample after the fault, so a saga that ended just before it does not
/// count as progress (the figure errs long, by at most one sampling period). A fault after
/// which all `total` sagas had already ended has nothing to hold up. Returns the longest, and
/// the faults after which progress never came back.
pub fn recovery(faults: &[Fault], samples: &[(Instant, i64)], total: i64) -> (u64, Vec<String>) {
    let mut longest = 0;
    let mut never = Vec::new();
    for fault in faults {
        let mut after = samples.iter().filter(|(t, _)| *t >= fault.at);
        let Some((_, baseline)) = after.next() else {
            never.push(fault.action.clone());
            continue;
        };
        if *baseline >= total {
            continue;
        }
        match after.find(|(_, n)| n > baseline) {
            Some((t, _)) => {
                let ms = u64::try_from(t.duration_since(fault.at).as_millis()).unwrap_or(u64::MAX);
                longest = longest.max(ms);
            }
            None => never.push(fault.action.clone()),
        }
    }
    (longest, never)
}

/// Each saga's wait from its publication to its end, summarised.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct SagaWaits {
    /// The median wait, in ms.
    pub median_ms: u64,
    /// The 99th percentile, in ms.
    pub p99_ms: u64,
    /// The slowest saga's wait, in ms.
    pub max_ms: u64,
    /// How long the slowest saga waited beyond the median, in ms.
    pub holdup_ms: u64,
    /// The slowest saga.
    pub slowest: Option<Uuid>,
}

/// Waits of every ended saga from its publication time.
pub async fn saga_waits(
    pool: &PgPool,
    published: &HashMap<Uuid, SystemTime>,
) -> anyhow::Result<SagaWaits> {
    let ended: Vec<(Uuid, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("SELECT saga_id, finished_at FROM saga.sagas WHERE finished_at IS NOT NULL")
            .fetch_all(pool)
            .await?;
    let mut waits: Vec<(u64, Uuid)> = ended
        .into_iter()
        .filter_map(|(id, finished)| {
            let sent = chrono::DateTime::<chrono::Utc>::from(*published.get(&id)?);
            let ms = (finished - sent).num_milliseconds().max(0);
            Some((u64::try_from(ms).unwrap_or(0), id))
        })
        .collect();
    Ok(summarise(&mut waits))
}

fn summarise(waits: &mut [(u64, Uuid)]) -> SagaWaits {
    waits.sort_unstable();
    let Some(&(max_ms, slowest)) = waits.last() else {
        return SagaWaits::default();
    };
    let at = |q: f64| waits[((waits.len() - 1) as f64 * q).round() as usize].0;
    let median_ms = at(0.5);
    SagaWaits {
        median_ms,
        p99_ms: at(0.99),
        max_ms,
        holdup_ms: max_ms - median_ms,
        slowest: Some(slowest),
    }
}

#[cfg(test)]
mod tests {
    use super::super::faults::FaultKind;
    use super::*;

    #[test]
    fn recovery_is_measured_from_the_fault_to_the_next_progress() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let samples = vec![
            (at(0), 10),
            (at(100), 11),
            (at(200), 11),
            (at(300), 11),
            (at(400), 12),
        ];
        let fault = |ms, action: &str| Fault {
            kind: FaultKind::Orchestrator,
            action: action.to_owned(),
            at: at(ms),
            down: Duration::ZERO,
            error: None,
        };
        assert_eq!(
            recovery(&[fault(50, "kill orchestrator")], &samples, 20),
            (350, vec![])
        );
        let (longest, never) = recovery(&[fault(450, "kill nats")], &samples, 20);
        assert_eq!((longest, never), (0, vec!["kill nats".to_owned()]));
        // Every saga had ended before the fault: nothing was held up.
        let (longest, never) = recovery(&[fault(350, "table unusable")], &samples, 12);
        assert_eq!((longest, never), (0, vec![]));
    }

    #[test]
    fn the_slowest_saga_is_measured_against_the_median() {
        let ids: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
        let mut waits: Vec<(u64, Uuid)> = [100, 120, 90, 5_000, 110]
            .into_iter()
            .zip(ids.iter().copied())
            .collect();
        let summary = summarise(&mut waits);
        assert_eq!(summary.median_ms, 110);
        assert_eq!(summary.max_ms, 5_000);
        assert_eq!(summary.holdup_ms, 4_890);
        assert_eq!(summary.slowest, Some(ids[3]));
        assert_eq!(summarise(&mut []).holdup_ms, 0);
    }
}
