//! The chaos runner as users run it, with every fault kind: workers of every kind, the
//! orchestrator, the broker and the database killed, a worker's table unusable for longer than
//! a command's delivery budget, connections cut and slowed down, under load; every invariant
//! must hold.

use crate::json_report::run_json_report;

#[test]
fn chaos_with_every_fault_kind_keeps_every_invariant() {
    let (succeeded, _stdout, stderr, report) = run_json_report(&[
        "chaos",
        "--count",
        "500",
        "--duration",
        "30",
        "--kill-every",
        "1.5",
        "--faults",
        "all",
        "--seed",
        "7",
        "--json",
    ]);
    assert!(succeeded, "chaos failed:\n{stderr}\n{report:#}");
    assert_eq!(report["invariants_ok"], true, "{report:#}");
    assert!(report["sagas"].as_i64() >= Some(500), "{report:#}");
    for kind in ["worker", "orchestrator", "broker", "database", "network"] {
        assert!(
            report["faults"][kind].as_u64() >= Some(1),
            "no {kind} fault: {report:#}"
        );
    }
    // The first round takes every worker kind, the orchestrator, the broker and the database
    // process; the table outage and both network faults come on top.
    for process in
        checkout_shared::steps::worker_kinds().chain(["orchestrator", "nats", "postgres"])
    {
        assert!(
            report["kills_by_kind"][process].as_u64() >= Some(1),
            "{process} never killed: {report:#}"
        );
    }
    assert!(
        report["faults"]["database"].as_u64() >= Some(2),
        "{report:#}"
    );
    assert!(
        report["faults"]["network"].as_u64() >= Some(2),
        "{report:#}"
    );
    let outage = &report["outage"];
    assert_eq!(outage["restored"], true, "{report:#}");
    assert!(
        outage["undos_started_during"].as_i64() >= Some(1),
        "the table outage met no undo: {report:#}"
    );
    for zero in ["lost", "stuck", "bad_effects", "incomplete_traces"] {
        assert_eq!(report[zero], 0, "{zero}: {report:#}");
    }
    assert_eq!(report["traces"]["conflicting_span_ids"], 0, "{report:#}");
    assert!(report["sampler_failure"].is_null(), "{report:#}");
}

/// A short run with few checkouts (the first round would not fit at `--kill-every`'s pace)
/// still tries every kind it was asked for. Without `database`, whose table outage alone lasts
/// about a minute (the test above has it).
#[test]
fn a_short_chaos_run_injects_every_kind_it_was_asked_for() {
    let kinds = ["worker", "orchestrator", "broker", "network"];
    let (succeeded, _stdout, stderr, report) = run_json_report(&[
        "chaos",
        "--count",
        "40",
        "--duration",
        "6",
        "--kill-every",
        "2.5",
        "--faults",
        &kinds.join(","),
        "--seed",
        "3",
        "--json",
    ]);
    assert!(succeeded, "chaos failed:\n{stderr}\n{report:#}");
    let faults = report["faults"].as_object().expect("faults by kind");
    assert_eq!(faults.len(), kinds.len(), "{report:#}");
    for kind in kinds {
        assert!(
            report["faults"][kind].as_u64() >= Some(1),
            "no {kind} fault: {report:#}"
        );
    }
    assert_eq!(
        report["never_injected"],
        serde_json::json!([]),
        "{report:#}"
    );
    for process in checkout_shared::steps::worker_kinds().chain(["orchestrator", "nats"]) {
        assert!(
            report["kills_by_kind"][process].as_u64() >= Some(1),
            "{process} never killed: {report:#}"
        );
    }
    assert_eq!(report["invariants_ok"], true, "{report:#}");
}
