//! What `checkout watch` shows, as pure state fed with events: the recent sagas with their
//! current step and state, counts and rates by outcome, and latency percentiles of the last
//! minute. The terminal view only reads it, so every number on screen is tested here.

use checkout_shared::messages::{LifecycleEvent, LifecycleKind};
use checkout_shared::saga_view::SagaView;
use checkout_shared::{Phase, SagaStatus, StepOutcome};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How many sagas the recent list keeps: a screen's worth and some, whatever the load.
pub const RECENT_CAP: usize = 200;
/// How many unfinished sagas keep their start time (for their duration). Past it, the oldest
/// starts are forgotten: a saga that never ends must not hold memory for ever.
pub const IN_FLIGHT_CAP: usize = 20_000;
/// The window of rates and percentiles.
pub const WINDOW: Duration = Duration::from_secs(60);
/// At most this many durations per window (1,000 sagas/s for a minute fits).
pub const WINDOW_CAP: usize = 60_000;
/// At most this many stuck sagas are listed (the earliest flagged kept): an outage that
/// strands more says so by their count.
pub const STUCK_CAP: usize = 1_000;

/// One thing the watcher saw.
#[derive(Debug, Clone)]
pub enum WatchEvent {
    /// A lifecycle event on `checkout.saga.<id>.*`.
    Lifecycle(LifecycleEvent),
    /// A request refused at the door (`checkout.rejected`), with its reason.
    Rejected(String),
    /// A message sent to the dead letters, with its subject and reason.
    DeadLetter(String),
}

/// One line of the recent list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaLine {
    /// The saga.
    pub saga_id: Uuid,
    /// Its state.
    pub state: SagaStatus,
    /// The step in hand (or the last one, once it ended), `undo ` prefixed for compensations.
    pub step: String,
    /// What its lifecycle events told, folded as the gateway folds them.
    pub view: SagaView,
    /// The last detail: `ok`, a failure reason, the outcome.
    pub detail: String,
    /// Its trace.
    pub trace_id: String,
    /// Start to end, when the watcher saw both.
    pub took: Option<Duration>,
}

/// The outcomes counted.
pub const OUTCOMES: [&str; 6] = [
    "completed",
    "compensated",
    "failed",
    "stuck",
    "rejected",
    "dead_letter",
];

/// The watcher's state.
#[derive(Debug)]
pub struct Model {
    started_at: Instant,
    recent: VecDeque<SagaLine>,
    starts: HashMap<Uuid, Instant>,
    start_order: VecDeque<Uuid>,
    counts: HashMap<&'static str, u64>,
    window: VecDeque<(Instant, &'static str)>,
    durations: VecDeque<(Instant, Duration)>,
    stuck: HashMap<Uuid, Stuck>,
}

/// A saga flagged stuck and not ended since, as the watcher saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck {
    /// The saga.
    pub saga_id: Uuid,
    /// When the watcher saw it flagged.
    pub since: Instant,
    /// Why (the undo that does not succeed).
    pub reason: String,
}

/// The saga running longest among those the watcher saw start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oldest {
    /// The saga.
    pub saga_id: Uuid,
    /// How long it has run.
    pub running_for: Duration,
    /// The step in hand, as its line says (empty when its line left the recent list).
    pub step: String,
}

impl Model {
    /// An empty model whose clock starts at `now`.
    pub fn new(now: Instant) -> Self {
        Model {
            started_at: now,
            recent: VecDeque::new(),
            starts: HashMap::new(),
            start_order: VecDeque::new(),
            counts: HashMap::new(),
            window: VecDeque::new(),
            durations: VecDeque::new(),
            stuck: HashMap::new(),
        }
    }

    /// Takes in one event seen at `now`.
    pub fn apply(&mut self, event: &WatchEvent, now: Instant) {
        match event {
            WatchEvent::Lifecycle(event) => self.lifecycle(event, now),
            WatchEvent::Rejected(_) => self.count("rejected", now),
            WatchEvent::DeadLetter(_) => self.count("dead_letter", now),
        }
        self.prune(now);
    }

    fn lifecycle(&mut self, event: &LifecycleEvent, now: Instant) {
        let line = self.line(event);
        line.view.apply(event);
        line.state = line.view.state;
        match line.view.current() {
            Some(now) if now.phase == Phase::Undo => line.step = format!("undo {}", now.step),
            Some(now) => line.step = now.step.to_string(),
            // Ended, or an older release's event: the last step named stays.
            None => {
                if let Some(step) = event.step {
                    line.step = match event.phase {
                        Some(Phase::Undo) => format!("undo {step}"),
                        _ => step.to_string(),
                    };
                }
            }
        }
        line.detail = match (event.kind, event.step, event.outcome) {
            (LifecycleKind::Started, _, _) => "started".into(),
            (LifecycleKind::Completed, _, _) => "completed".into(),
            (LifecycleKind::Step, Some(step), Some(StepOutcome::Succeeded)) => {
                format!("{step} ok")
            }
            (LifecycleKind::Rejected, _, _) => crate::client::describe(event),
            (LifecycleKind::Step, Some(step), _) if step.is_follow_up() => {
                format!("{step} {}", event.detail)
            }
            _ => event.detail.clone(),
        };
        let outcome = match event.kind {
            LifecycleKind::Completed => Some("completed"),
            LifecycleKind::Compensated => Some("compensated"),
            LifecycleKind::Failed => Some("failed"),
            // Not an end: an operator's retry resumes it, so its start time stays.
            LifecycleKind::Stuck => {
                self.count("stuck", now);
                if self.stuck.len() < STUCK_CAP {
                    let reason = event.detail.clone();
                    let saga_id = event.saga_id;
                    let flagged = Stuck {
                        saga_id,
                        since: now,
                        reason,
                    };
                    self.stuck.entry(saga_id).or_insert(flagged);
                }
                None
            }
            // Counted by its request on `checkout.rejected` (once, however often the same
            // checkout is refused again), with the requests that have no checkout id.
            LifecycleKind::Started | LifecycleKind::Step | LifecycleKind::Rejected => None,
        };
        if event.kind == LifecycleKind::Started {
            self.remember_start(event.saga_id, now);
        }
        if let Some(outcome) = outcome {
            self.finish(event.saga_id, outcome, now);
        }
    }

    /// The saga's line, moved to the front (created if unseen or evicted).
    fn line(&mut self, event: &LifecycleEvent) -> &mut SagaLine {
        let line = match self.recent.iter().position(|l| l.saga_id == event.saga_id) {
            Some(i) => self.recent.remove(i),
            None => None,
        };
        let line = line.unwrap_or_else(|| SagaLine {
            saga_id: event.saga_id,
            state: SagaStatus::Running,
            step: String::new(),
            view: SagaView::new(event.saga_id),
            detail: String::new(),
            trace_id: event.trace_id.clone(),
            took: None,
        });
        self.recent.push_front(line);
        self.recent.truncate(RECENT_CAP);
        &mut self.recent[0]
    }

    fn remember_start(&mut self, saga_id: Uuid, now: Instant) {
        if self.starts.insert(saga_id, now).is_none() {
            self.start_order.push_back(saga_id);
        }
        while self.start_order.len() > IN_FLIGHT_CAP {
            if let Some(oldest) = self.start_order.pop_front() {
                self.starts.remove(&oldest);
            }
        }
    }

    fn finish(&mut self, saga_id: Uuid, outcome: &'static str, now: Instant) {
        self.count(outcome, now);
        self.stuck.remove(&saga_id);
        // A saga that started before the watcher did has no known duration: leave it out.
        if let Some(start) = self.starts.remove(&saga_id) {
            let took = now.saturating_duration_since(start);
            self.durations.push_back((now, took));
            if self.durations.len() > WINDOW_CAP {
                self.durations.pop_front();
            }
            if let Some(line) = self.recent.iter_mut().find(|l| l.saga_id == saga_id) {
                line.took = Some(took);
            }
        }
    }

    fn count(&mut self, outcome: &'static str, now: Instant) {
        *self.counts.entry(outcome).or_default() += 1;
        self.window.push_back((now, outcome));
        if self.window.len() > WINDOW_CAP {
            self.window.pop_front();
        }
    }

    /// Forgets what left the window (call on every tick, so rates fall when nothing happens).
    pub fn prune(&mut self, now: Instant) {
        let old = |at: Instant| now.saturating_duration_since(at) > WINDOW;
        while self.window.front().is_some_and(|(at, _)| old(*at)) {
            self.window.pop_front();
        }
        while self.durations.front().is_some_and(|(at, _)| old(*at)) {
            self.durations.pop_front();
        }
        // Start order and the map agree except for sagas that finished: drop those ids too.
        while let Some(id) = self.start_order.front() {
            if self.starts.contains_key(id) {
                break;
            }
            self.start_order.pop_front();
        }
    }

    /// The recent sagas, most recently changed first.
    pub fn recent(&self) -> impl Iterator<Item = &SagaLine> {
        self.recent.iter()
    }

    /// How many of `outcome` were seen since the watcher started.
    pub fn count_of(&self, outcome: &str) -> u64 {
        self.counts.get(outcome).copied().unwrap_or(0)
    }

    /// `outcome` per second over the last minute (or since the start, if that is shorter).
    pub fn rate_of(&self, outcome: &str, now: Instant) -> f64 {
        let span = now
            .saturating_duration_since(self.started_at)
            .clamp(Duration::from_secs(1), WINDOW);
        let recent = self.window.iter().filter(|(_, o)| *o == outcome).count();
        recent as f64 / span.as_secs_f64()
    }

    /// The `q`-quantile (0..=1) of the durations of sagas that ended in the last minute.
    pub fn percentile(&self, q: f64) -> Option<Duration> {
        let mut sorted: Vec<Duration> = self.durations.iter().map(|(_, d)| *d).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_unstable();
        // Nearest rank: the smallest value with at least q of the samples at or below it.
        let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
        sorted.get(rank.min(sorted.len()) - 1).copied()
    }

    /// How many sagas are running or compensating (among those seen start).
    pub fn in_flight(&self) -> usize {
        self.starts.len()
    }

    /// The sagas flagged stuck and not ended since, the earliest flagged first.
    pub fn stuck(&self) -> Vec<&Stuck> {
        let mut stuck: Vec<&Stuck> = self.stuck.values().collect();
        stuck.sort_by_key(|s| (s.since, s.saga_id));
        stuck
    }

    /// The saga running longest, among those seen start and not ended, as of `now`.
    pub fn oldest_running(&self, now: Instant) -> Option<Oldest> {
        let (saga_id, started) = self
            .start_order
            .iter()
            .find_map(|id| self.starts.get(id).map(|at| (*id, *at)))?;
        let step = self
            .recent
            .iter()
            .find(|l| l.saga_id == saga_id)
            .map(|l| l.step.clone())
            .unwrap_or_default();
        Some(Oldest {
            saga_id,
            running_for: now.saturating_duration_since(started),
            step,
        })
    }
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
