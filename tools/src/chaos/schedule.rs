//! What the injector does, and when. The first round takes one of each enabled fault (every
//! worker kind, an orchestrator, the broker or a node of it, the database process, a network
//! cut and a slow spell, a node cut off from its cluster) in a seeded order, at moments counted from the run's start and paced to fit in the
//! publishing window, whatever `--count` and `--duration`; and the injector goes on past the
//! publishing until that round is done, so that every kind asked for is tried. Later rounds
//! pick a kind at random, every ~`--kill-every`, while publishing lasts.
//!
//! ```text
//!  start      pace      2·pace   ...   n·pace   (pace = min(--kill-every, duration / (n+1)))
//!    │─────────┼──────────┼─────── ... ───┼────────▶ then random gaps while publishing
//!              first round: one of each, seeded order (late if a fault outlasts its slot)
//! ```

use super::faults::FaultKind;
use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use std::time::Duration;

/// At most this many faults, whatever the duration.
const MAX_FAULTS: usize = 1_000;

/// One action of the injector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// SIGKILL of a service (a worker or an orchestrator), by name.
    Kill(String),
    /// SIGKILL of nats-server, or of a node of the cluster.
    KillBroker,
    /// A node of the cluster cut off from the others.
    CutOffNode,
    /// SIGKILL of the PostgreSQL cluster.
    KillPostgres,
    /// Connections through the proxies cut.
    Cut,
    /// Connections through the proxies slowed down.
    Latency,
}

impl Action {
    /// The kind of fault this action is.
    pub fn kind(&self) -> FaultKind {
        match self {
            Action::Kill(name) if is_orchestrator(name) => FaultKind::Orchestrator,
            Action::Kill(_) => FaultKind::Worker,
            Action::KillBroker => FaultKind::Broker,
            Action::KillPostgres => FaultKind::Database,
            Action::Cut | Action::Latency => FaultKind::Network,
            Action::CutOffNode => FaultKind::Partition,
        }
    }
}

/// Whether a service is an orchestrator (`orchestrator`, `orchestrator-2`).
pub fn is_orchestrator(name: &str) -> bool {
    name.split('-').next() == Some("orchestrator")
}

/// One of `names`, chosen by `rng` when there is a choice (so that a stack of one orchestrator
/// draws what it drew before there could be several: a seed gives the same run);
/// `orchestrator` when there is none, which a stack never has.
fn one_of(rng: &mut StdRng, names: &[String]) -> String {
    let index = if names.len() > 1 {
        rng.random_range(0..names.len())
    } else {
        0
    };
    names
        .get(index)
        .cloned()
        .unwrap_or_else(|| "orchestrator".into())
}

/// The first round: one action of each enabled fault, in a seeded order, each with its moment
/// from the run's start. The moments are evenly `pace` apart, `pace` being `every` or less, so
/// that the whole round is due within `duration` (a fault that takes longer than its slot makes
/// the next ones late: see [`goes_on`]). `workers` and `orchestrators` are the services' names.
pub fn first_round(
    kinds: &[FaultKind],
    workers: &[String],
    orchestrators: &[String],
    every: Duration,
    duration: Duration,
    rng: &mut StdRng,
) -> Vec<(Duration, Action)> {
    let mut actions = Vec::new();
    for kind in kinds {
        match kind {
            FaultKind::Worker => {
                for prefix in checkout_shared::steps::worker_kinds() {
                    let of_kind: Vec<_> =
                        workers.iter().filter(|n| n.starts_with(prefix)).collect();
                    if let Some(name) = of_kind.get(rng.random_range(0..of_kind.len().max(1))) {
                        actions.push(Action::Kill((*name).clone()));
                    }
                }
            }
            FaultKind::Orchestrator => actions.push(Action::Kill(one_of(rng, orchestrators))),
            FaultKind::Broker => actions.push(Action::KillBroker),
            FaultKind::Database => actions.push(Action::KillPostgres),
            FaultKind::Network => actions.extend([Action::Cut, Action::Latency]),
            FaultKind::Partition => actions.push(Action::CutOffNode),
        }
    }
    actions.shuffle(rng);
    let slots = u32::try_from(actions.len() + 1).unwrap_or(u32::MAX);
    let pace = every.min(duration / slots);
    (1..)
        .zip(actions)
        .map(|(i, action)| (pace * i, action))
        .collect()
}

/// A fault of a later round, chosen at random among the enabled kinds.
pub fn pick(
    rng: &mut StdRng,
    kinds: &[FaultKind],
    workers: &[String],
    orchestrators: &[String],
) -> Action {
    match kinds[rng.random_range(0..kinds.len())] {
        FaultKind::Worker => Action::Kill(workers[rng.random_range(0..workers.len())].clone()),
        FaultKind::Orchestrator => Action::Kill(one_of(rng, orchestrators)),
        FaultKind::Broker => Action::KillBroker,
        FaultKind::Database => Action::KillPostgres,
        FaultKind::Network if rng.random_bool(0.5) => Action::Cut,
        FaultKind::Network => Action::Latency,
        FaultKind::Partition => Action::CutOffNode,
    }
}

/// Whether the injector goes on after `injected` faults: while publishing lasts, and past it
/// until the `first_round` is done (a finite round of bounded faults: the run is extended by
/// seconds, not without end); never beyond [`MAX_FAULTS`].
pub fn goes_on(publishing: bool, injected: usize, first_round: usize) -> bool {
    injected < MAX_FAULTS && (publishing || injected < first_round)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn orchestrators() -> Vec<String> {
        vec!["orchestrator-1".into(), "orchestrator-2".into()]
    }

    fn workers() -> Vec<String> {
        checkout_shared::steps::worker_kinds()
            .flat_map(|kind| [format!("{kind}-1"), format!("{kind}-2")])
            .collect()
    }

    #[test]
    fn the_first_round_takes_every_requested_kind_within_any_duration() {
        let every = Duration::from_secs_f64(2.5);
        let subsets = [
            FaultKind::ALL.to_vec(),
            vec![FaultKind::Orchestrator],
            vec![FaultKind::Worker, FaultKind::Network],
            vec![
                FaultKind::Orchestrator,
                FaultKind::Broker,
                FaultKind::Database,
            ],
            vec![FaultKind::Orchestrator, FaultKind::Partition],
        ];
        // As `--faults` gives them: sorted, each once.
        for kinds in &subsets {
            assert!(kinds.is_sorted());
            for secs in [0.0, 1.0, 5.0, 15.0, 30.0, 600.0] {
                let duration = Duration::from_secs_f64(secs);
                for seed in 0..20 {
                    let mut rng = StdRng::seed_from_u64(seed);
                    let round = first_round(
                        kinds,
                        &workers(),
                        &orchestrators(),
                        every,
                        duration,
                        &mut rng,
                    );
                    let at = format!("{kinds:?} over {secs} s, seed {seed}: {round:?}");
                    let mut scheduled: Vec<FaultKind> =
                        round.iter().map(|(_, a)| a.kind()).collect();
                    scheduled.sort();
                    scheduled.dedup();
                    assert_eq!(&scheduled, kinds, "{at}");
                    // Every worker kind and both network faults, each once.
                    let expected = kinds
                        .iter()
                        .map(|k| match k {
                            FaultKind::Worker => checkout_shared::steps::worker_kinds().count(),
                            FaultKind::Network => 2,
                            _ => 1,
                        })
                        .sum::<usize>();
                    assert_eq!(round.len(), expected, "{at}");
                    let moments: Vec<Duration> = round.iter().map(|(m, _)| *m).collect();
                    assert!(moments.is_sorted(), "{at}");
                    assert!(moments.iter().all(|m| *m <= duration), "{at}");
                    assert!(moments.windows(2).all(|w| w[1] - w[0] <= every), "{at}");
                }
            }
        }
    }

    #[test]
    fn the_first_round_keeps_the_pace_asked_for_when_the_duration_allows() {
        let mut rng = StdRng::seed_from_u64(1);
        let every = Duration::from_secs(2);
        let round = first_round(
            &[FaultKind::Orchestrator, FaultKind::Broker],
            &workers(),
            &orchestrators(),
            every,
            Duration::from_secs(60),
            &mut rng,
        );
        let moments: Vec<Duration> = round.iter().map(|(m, _)| *m).collect();
        assert_eq!(moments, [every, every * 2]);
    }

    #[test]
    fn every_worker_kind_is_killed_in_the_first_round() {
        let mut rng = StdRng::seed_from_u64(3);
        let round = first_round(
            &[FaultKind::Worker],
            &workers(),
            &orchestrators(),
            Duration::from_secs(1),
            Duration::from_secs(10),
            &mut rng,
        );
        for kind in checkout_shared::steps::worker_kinds() {
            assert!(
                round
                    .iter()
                    .any(|(_, a)| matches!(a, Action::Kill(n) if n.starts_with(kind))),
                "{kind} never killed: {round:?}"
            );
        }
    }

    #[test]
    fn the_injector_outlasts_the_publishing_until_the_first_round_is_done() {
        assert!(goes_on(true, 20, 9), "publishing: later rounds go on");
        assert!(
            goes_on(false, 3, 9),
            "publishing over, first round not done"
        );
        assert!(!goes_on(false, 9, 9), "publishing over, first round done");
        assert!(!goes_on(true, MAX_FAULTS, 9), "bounded");
        assert!(!goes_on(false, MAX_FAULTS, MAX_FAULTS + 1), "bounded");
    }
}
