//! Beyond one machine, under faults: a 3-node JetStream cluster (streams and consumers at 3
//! replicas, the services given every node's URL), two orchestrators and two workers of each
//! kind, under a bounded load; the node leading the most streams and consumers is SIGKILLed
//! and restarted on its store, a node is cut off from the others at the runner's route
//! proxies, an orchestrator is SIGKILLed while the other runs; then the
//! chaos runner's own audit: every checkout ended, nothing lost or done twice, money and stock
//! conserved, every trace whole.

use crate::json_report::run_json_report;

#[test]
fn a_three_node_cluster_with_two_orchestrators_survives_a_leader_kill_a_route_cut_and_an_orchestrator_kill()
 {
    let (succeeded, _stdout, stderr, report) = run_json_report(&[
        "chaos",
        "--nats-nodes",
        "3",
        "--orchestrators",
        "2",
        "--workers-per-kind",
        "2",
        "--faults",
        "broker,orchestrator,partition",
        "--count",
        "100",
        "--duration",
        "10",
        "--kill-every",
        "4",
        "--seed",
        "14",
        "--settle-secs",
        "60",
        "--json",
    ]);
    assert!(
        succeeded,
        "chaos on the cluster failed:\n{stderr}\n{report:#}"
    );
    assert_eq!(report["invariants_ok"], true, "{report:#}");
    assert!(report["sagas"].as_i64() >= Some(100), "{report:#}");
    let broker = &report["broker"];
    assert_eq!(broker["nats_nodes"], 3, "{report:#}");
    assert_eq!(broker["orchestrators"], 2, "{report:#}");
    assert_eq!(
        broker["version"],
        checkout_harness::nats::PINNED_VERSION,
        "not the pinned nats-server: {report:#}"
    );
    assert_eq!(broker["sync_always"], true, "{report:#}");
    assert!(
        broker["busiest_leader_kills"].as_u64() >= Some(1),
        "the busiest leader was never killed: {report:#}"
    );
    assert!(
        broker["route_cuts"].as_u64() >= Some(1),
        "no node was cut off from its routes: {report:#}"
    );
    assert!(
        broker["orchestrator_kills_with_another_running"].as_u64() >= Some(1),
        "{report:#}"
    );
    for zero in [
        "lost",
        "stuck",
        "unfinished",
        "bad_effects",
        "incomplete_traces",
    ] {
        assert_eq!(report[zero], 0, "{zero}: {report:#}");
    }
    assert_eq!(report["stock_ok"], true, "{report:#}");
    assert_eq!(report["money_ok"], true, "{report:#}");
}
