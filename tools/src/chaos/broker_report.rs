//! The broker's side of a chaos run: what it ran on (nodes, version, whether acked messages
//! are on disk before the ack) and the cluster faults it took (node kills, the busiest
//! leader's among them, nodes cut off), with the orchestrator kills that another orchestrator
//! outlived.

use super::faults::{Fault, FaultKind};
use serde::Serialize;

/// The broker and the cluster faults of a run.
#[derive(Debug, Default, Serialize)]
pub struct BrokerReport {
    /// nats-server processes (1, or the nodes of a cluster).
    pub nats_nodes: usize,
    /// The nats-server version.
    pub version: String,
    /// Every node runs with `sync_interval: always` (a SIGKILL loses nothing acked).
    pub sync_always: bool,
    /// Orchestrator processes.
    pub orchestrators: usize,
    /// nats-server kills (every node, or the single server).
    pub node_kills: usize,
    /// Of these, kills of the node leading the most streams and consumers.
    pub busiest_leader_kills: usize,
    /// Nodes cut off from the rest of the cluster.
    pub route_cuts: usize,
    /// Orchestrator kills while another orchestrator ran.
    pub orchestrator_kills_with_another_running: usize,
}

impl BrokerReport {
    /// Counts the cluster faults among `faults` (failed injections are not counted).
    pub fn of(
        faults: &[Fault],
        nats_nodes: usize,
        orchestrators: usize,
        version: String,
        sync_always: bool,
    ) -> BrokerReport {
        let done = || faults.iter().filter(|f| f.error.is_none());
        let node_kills = done().filter(|f| f.kind == FaultKind::Broker);
        BrokerReport {
            nats_nodes,
            version,
            sync_always,
            orchestrators,
            node_kills: node_kills.clone().count(),
            busiest_leader_kills: node_kills
                .filter(|f| f.action.contains("(leading "))
                .count(),
            route_cuts: done().filter(|f| f.kind == FaultKind::Partition).count(),
            orchestrator_kills_with_another_running: if orchestrators > 1 {
                done().filter(|f| f.kind == FaultKind::Orchestrator).count()
            } else {
                0
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn cluster_faults_are_counted_by_kind() {
        let fault = |kind, action: &str, error: Option<&str>| Fault {
            kind,
            action: action.to_owned(),
            at: Instant::now(),
            down: Duration::ZERO,
            error: error.map(str::to_owned),
        };
        let faults = [
            fault(FaultKind::Broker, "kill nats-n2 (leading 9 of 16)", None),
            fault(FaultKind::Broker, "kill nats-n1 (no leader known)", None),
            fault(FaultKind::Partition, "cut off nats-n3 (4 routes)", None),
            fault(FaultKind::Partition, "CutOffNode (failed: x)", Some("x")),
            fault(FaultKind::Orchestrator, "kill orchestrator-2", None),
        ];
        let report = BrokerReport::of(&faults, 3, 2, "2.15.1".into(), true);
        assert_eq!(report.node_kills, 2);
        assert_eq!(report.busiest_leader_kills, 1);
        assert_eq!(report.route_cuts, 1, "a failed cut counted");
        assert_eq!(report.orchestrator_kills_with_another_running, 1);
        let alone = BrokerReport::of(&faults, 3, 1, String::new(), true);
        assert_eq!(alone.orchestrator_kills_with_another_running, 0);
    }
}
