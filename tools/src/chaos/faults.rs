//! The kinds of fault the chaos runner can inject, chosen with `--faults`, and the record of
//! each one injected.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// SIGKILL of a worker process (then restarted).
    Worker,
    /// SIGKILL of the orchestrator (then restarted).
    Orchestrator,
    /// SIGKILL of nats-server, or of one node of the cluster (the first time the one leading
    /// the most streams and consumers), then restarted on the same store.
    Broker,
    /// SIGKILL of the PostgreSQL cluster (then restarted), and one worker's tables unusable for
    /// longer than a command's delivery budget.
    Database,
    /// Connections through the proxies cut (and refused for a moment), or slowed down.
    Network,
    /// One node of the cluster cut off from the others (its routes cut and refused for a
    /// moment, through the proxies on the routes) while it and its clients keep running.
    Partition,
}

impl FaultKind {
    /// Every kind; `all` is every kind but [`FaultKind::Partition`] on a single server.
    pub const ALL: [FaultKind; 6] = [
        FaultKind::Worker,
        FaultKind::Orchestrator,
        FaultKind::Broker,
        FaultKind::Database,
        FaultKind::Network,
        FaultKind::Partition,
    ];

    /// The name on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Worker => "worker",
            FaultKind::Orchestrator => "orchestrator",
            FaultKind::Broker => "broker",
            FaultKind::Database => "database",
            FaultKind::Network => "network",
            FaultKind::Partition => "partition",
        }
    }
}

/// Parses `--faults`: a comma-separated list of kinds, or `all`; `partition` needs a
/// `cluster` (it has routes to cut), and `all` includes it only there.
pub fn parse_faults(list: &str, cluster: bool) -> Result<Vec<FaultKind>, String> {
    let mut kinds = Vec::new();
    for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        if word == "all" {
            kinds.extend(
                FaultKind::ALL
                    .into_iter()
                    .filter(|k| cluster || *k != FaultKind::Partition),
            );
            continue;
        }
        let kind = FaultKind::ALL
            .into_iter()
            .find(|k| k.name() == word)
            .ok_or_else(|| {
                let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
                format!(
                    "unknown fault {word:?}; the faults are {} (or all)",
                    names.join(", ")
                )
            })?;
        if kind == FaultKind::Partition && !cluster {
            return Err(
                "the partition fault cuts a node off from the others: it needs a cluster \
                 (--nats-nodes 3)"
                    .to_owned(),
            );
        }
        kinds.push(kind);
    }
    kinds.sort();
    kinds.dedup();
    if kinds.is_empty() {
        return Err(
            "no fault named; the faults are worker, orchestrator, broker, database, \
                    network, partition (or all)"
                .to_owned(),
        );
    }
    Ok(kinds)
}

/// One fault injected.
#[derive(Debug, Clone)]
pub struct Fault {
    /// Its kind.
    pub kind: FaultKind,
    /// What was done, for the log: `kill payment-2`, `kill postgres`, `cut nats+db`,
    /// `latency db 120 ms`, `payment.ledger unusable`.
    pub action: String,
    /// When the system was hurt (for a table outage: when it was restored, since that is
    /// when progress is expected back).
    pub at: Instant,
    /// How long it lasted.
    pub down: Duration,
    /// Why it could not be injected, if it could not (then it does not count as injected).
    pub error: Option<String>,
}

impl Fault {
    /// The process killed, if this fault was a kill (`payment-2`, `orchestrator`, `nats`,
    /// `nats-n2 (leading 9 of 16)`, `postgres`).
    pub fn victim(&self) -> Option<&str> {
        self.action.strip_prefix("kill ")
    }
}

/// Faults injected per kind, every enabled kind listed (with 0 if it never happened); a fault
/// whose injection failed is not counted.
pub fn count(enabled: &[FaultKind], faults: &[Fault]) -> BTreeMap<String, usize> {
    let mut counts: BTreeMap<String, usize> =
        enabled.iter().map(|k| (k.name().to_owned(), 0)).collect();
    for fault in faults.iter().filter(|f| f.error.is_none()) {
        *counts.entry(fault.kind.name().to_owned()).or_default() += 1;
    }
    counts
}

/// The kinds of `counts` never injected: the run did not try what it was asked to.
pub fn never_injected(counts: &BTreeMap<String, usize>) -> Vec<String> {
    counts
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(kind, _)| kind.clone())
        .collect()
}

/// Kills per kind of process (`inventory`, `payment`, `order`, `orchestrator`, `nats`,
/// `postgres`): the victim's name up to its first dash.
pub fn kills_by_process(faults: &[Fault]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for victim in faults.iter().filter_map(Fault::victim) {
        let kind = victim.split('-').next().unwrap_or(victim);
        *counts.entry(kind.to_owned()).or_default() += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_lists_parse_and_unknown_names_are_refused() {
        assert_eq!(parse_faults("all", true).unwrap(), FaultKind::ALL.to_vec());
        assert_eq!(
            parse_faults("all", false).unwrap(),
            FaultKind::ALL[..5].to_vec(),
            "no partition on a single server"
        );
        assert_eq!(
            parse_faults(" network,worker,network ", false).unwrap(),
            vec![FaultKind::Worker, FaultKind::Network]
        );
        let err = parse_faults("worker,disk", false).unwrap_err();
        assert!(
            err.contains("\"disk\"") && err.contains("database"),
            "{err}"
        );
        assert!(parse_faults(",", false).is_err());
        let err = parse_faults("partition", false).unwrap_err();
        assert!(err.contains("--nats-nodes"), "{err}");
        assert_eq!(
            parse_faults("partition,broker", true).unwrap(),
            vec![FaultKind::Broker, FaultKind::Partition]
        );
    }

    #[test]
    fn counts_list_every_enabled_kind() {
        let at = Instant::now();
        let fault = |kind, action: &str| Fault {
            kind,
            action: action.to_owned(),
            at,
            down: Duration::ZERO,
            error: None,
        };
        let failed = Fault {
            error: Some("the stack has no proxies".into()),
            ..fault(FaultKind::Network, "Cut (failed: the stack has no proxies)")
        };
        let faults = [
            fault(FaultKind::Worker, "kill payment-2"),
            fault(FaultKind::Broker, "kill nats-n2 (leading 9 of 16)"),
            fault(FaultKind::Database, "kill postgres"),
            fault(FaultKind::Database, "payment.ledger unusable"),
            failed,
        ];
        let counts = count(&[FaultKind::Worker, FaultKind::Network], &faults);
        assert_eq!(counts["worker"], 1);
        assert_eq!(counts["network"], 0, "a failed injection counted");
        assert_eq!(counts["database"], 2);
        assert_eq!(never_injected(&counts), ["network"]);
        let kills = kills_by_process(&faults);
        assert_eq!(kills["payment"], 1);
        assert_eq!(kills["postgres"], 1);
        assert_eq!(kills["nats"], 1);
        assert_eq!(kills.len(), 3);
    }
}
