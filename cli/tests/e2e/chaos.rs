//! The chaos runner as users run it: workers of every kind, the orchestrator and the broker
//! killed under load; every invariant must hold.

use serde_json::Value;
use std::process::Command;

#[test]
fn chaos_kills_every_kind_of_process_and_every_invariant_holds() {
    let output = Command::new(env!("CARGO_BIN_EXE_checkout"))
        .args([
            "chaos",
            "--count",
            "500",
            "--duration",
            "30",
            "--kill-every",
            "1.5",
            "--seed",
            "7",
            "--json",
        ])
        .output()
        .expect("run checkout chaos");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stdout.lines().last().unwrap_or_default();
    let report: Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("no JSON report ({e}); stdout:\n{stdout}\nstderr:\n{stderr}"));
    assert!(
        output.status.success(),
        "chaos failed:\n{stderr}\n{report:#}"
    );
    assert_eq!(report["invariants_ok"], true, "{report:#}");
    assert!(report["sagas"].as_i64() >= Some(500), "{report:#}");
    assert!(
        report["kills"].as_u64() >= Some(10),
        "at least ten kills: {report:#}"
    );
    assert!(report["broker_restarts"].as_u64() >= Some(1), "{report:#}");
    for kind in ["inventory", "payment", "order", "orchestrator"] {
        assert!(
            report["kills_by_kind"][kind].as_u64() >= Some(1),
            "{kind} never killed: {report:#}"
        );
    }
    for zero in ["lost", "stuck", "duplicate_effects", "incomplete_traces"] {
        assert_eq!(report[zero], 0, "{zero}: {report:#}");
    }
}
