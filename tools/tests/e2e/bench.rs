//! `checkout-tools bench` as users run it, tiny: every figure the issue names is in the JSON,
//! and every span of every saga arrived. Timings are never asserted (the machine is shared).

use crate::json_report::run_json_report;

#[test]
fn a_tiny_bench_reports_every_figure_and_loses_no_span() {
    let (succeeded, stdout, stderr, report) = run_json_report(&[
        "bench",
        "--duration",
        "3",
        "--warmup",
        "1",
        "--concurrency",
        "4",
        "--json",
    ]);
    assert!(succeeded, "bench failed:\n{stderr}\n{report:#}");
    assert!(
        stdout.contains("sagas/s"),
        "a table before the JSON:\n{stdout}"
    );
    let runs = report["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 1, "{report:#}");
    let run = &runs[0];
    for field in [
        "concurrency",
        "tracing",
        "throughput_per_s",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "max_ms",
        "cpu_ms_per_saga",
        "skeleton_throughput_per_s",
        "spans_per_s",
        "spans_per_saga",
        "pg_commits_per_saga",
        "js_messages_per_saga",
        "group_fallbacks",
        "pg_deadlocks",
    ] {
        assert!(
            run[field].is_number() || run[field].is_string(),
            "{field}: {run:#}"
        );
    }
    assert_eq!(run["concurrency"], 4);
    assert_eq!(run["tracing"], "on");
    assert!(run["sagas"].as_u64() > Some(0), "{run:#}");
    assert_eq!(run["failed"], 0, "{run:#}");
    assert_eq!(run["spans_missing"], 0, "every span arrived: {run:#}");
    // One worker per kind: its batches wait for nothing of another instance's.
    assert_eq!(run["group_fallbacks"], 0, "{run:#}");
    assert_eq!(run["pg_deadlocks"], 0, "{run:#}");
    assert_eq!(
        run["spans_per_saga"], run["spans_expected_per_saga"],
        "{run:#}"
    );
    let processes: Vec<&str> = run["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .filter_map(|p| p["process"].as_str())
        .collect();
    let workers = checkout_shared::steps::worker_kinds();
    for process in ["nats-server", "postgres", "orchestrator"]
        .into_iter()
        .chain(workers)
    {
        assert!(processes.contains(&process), "{process} in {processes:?}");
    }
    // The skeleton's pattern, by construction: 7 messages per saga.
    let skeleton = &report["skeleton_runs"][0];
    assert_eq!(skeleton["js_messages_per_saga"], 7.0, "{skeleton:#}");
}

#[test]
fn the_matrix_runs_r1_and_r3_with_one_and_two_workers_per_kind() {
    let (succeeded, stdout, stderr, report) = run_json_report(&[
        "bench",
        "--matrix",
        "--duration",
        "2",
        "--warmup",
        "1",
        "--concurrency",
        "4",
        "--json",
    ]);
    assert!(succeeded, "bench --matrix failed:\n{stderr}\n{report:#}");
    assert!(
        stdout.contains("CPU ms/saga"),
        "a table before the JSON:\n{stdout}"
    );
    let cells = report["matrix"].as_array().expect("matrix");
    let shape: Vec<(u64, u64, u64)> = cells
        .iter()
        .map(|c| {
            let n = |k: &str| c[k].as_u64().unwrap_or_else(|| panic!("{k}: {c:#}"));
            (n("nats_nodes"), n("replicas"), n("workers_per_kind"))
        })
        .collect();
    assert_eq!(shape, [(1, 1, 1), (1, 1, 2), (3, 3, 1), (3, 3, 2)]);
    for cell in cells {
        // Each cell ran as many nats-server processes as it names, and measured them.
        assert_eq!(cell["nats_processes"], cell["nats_nodes"], "{cell:#}");
        assert!(
            cell["nats_cpu_ms_per_saga"].as_f64() > Some(0.0),
            "{cell:#}"
        );
        assert!(cell["sagas_per_s"].as_f64() > Some(0.0), "{cell:#}");
        assert_eq!(cell["failed"], 0, "{cell:#}");
    }
}

/// `--broker-hops`: nats-server traces every message of the traced run and the bridge turns
/// each trace event into a span; the bench expects a broker span per hop, and every one
/// arrives, and the bridge's CPU has its own row.
#[test]
fn with_broker_hops_every_hop_has_its_span_and_the_bridge_its_row() {
    let (succeeded, _stdout, stderr, report) = run_json_report(&[
        "bench",
        "--duration",
        "3",
        "--warmup",
        "1",
        "--concurrency",
        "4",
        "--tracing",
        "on",
        "--skeleton",
        "false",
        "--broker-hops",
        "--json",
    ]);
    assert!(succeeded, "bench failed:\n{stderr}\n{report:#}");
    let run = &report["runs"][0];
    assert!(run["sagas"].as_u64() > Some(0), "{run:#}");
    assert_eq!(run["failed"], 0, "{run:#}");
    assert_eq!(run["spans_missing"], 0, "every span arrived: {run:#}");
    assert_eq!(
        run["spans_off_by_service"],
        serde_json::json!({}),
        "the broker's spans as many as its hops: {run:#}"
    );
    // 40 spans and 9 hops a completed saga, 31 and 7 a compensated one.
    let expected = run["spans_expected_per_saga"].as_f64().unwrap_or_default();
    assert!(expected > 45.0, "the hops expected: {run:#}");
    let processes: Vec<&str> = run["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .filter_map(|p| p["process"].as_str())
        .collect();
    assert!(processes.contains(&"nats-bridge"), "{processes:?}");
}
