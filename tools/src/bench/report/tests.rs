use super::*;
use crate::bench::procstat::Usage;

#[test]
fn percentiles_are_nearest_rank() {
    let values: Vec<u64> = (1..=100).collect();
    assert_eq!(percentile(&values, 0.50), 50);
    assert_eq!(percentile(&values, 0.99), 99);
    assert_eq!(percentile(&values, 1.0), 100);
    assert_eq!(percentile(&values, 0.0), 1);
    assert_eq!(percentile(&[7], 0.99), 7);
    assert_eq!(percentile(&[], 0.5), 0);
    assert_eq!(percentile(&[1, 2, 3], 0.9), 3);
}

fn ended(at_ms: u64, latency_ms: u64, outcome: Outcome) -> Ended {
    Ended {
        at: Duration::from_millis(at_ms),
        latency_us: latency_ms * 1000,
        outcome,
    }
}

fn run() -> (Timed, Counters) {
    let timed = Timed {
        window: vec![
            ended(100, 10, Outcome::Completed),
            ended(200, 20, Outcome::Completed),
            ended(300, 30, Outcome::Compensated),
            ended(400, 40, Outcome::Failed),
        ],
        drained: vec![ended(1100, 50, Outcome::Completed)],
        abandoned: 0,
    };
    let counters = Counters {
        usage: vec![
            Usage {
                name: "orchestrator".into(),
                cpu_s: 0.010,
                memory_mib: 30.0,
                processes: 1,
            },
            Usage {
                name: "postgres".into(),
                cpu_s: 0.015,
                memory_mib: 8.0,
                processes: 9,
            },
        ],
        commits: 35,
        deadlocks: 2,
        fallbacks: 3,
        messages: BTreeMap::from([("A".to_owned(), 50), ("B".to_owned(), 10)]),
        // 3 completed (40 spans each) and 1 compensated (31) make 151; one payment span went
        // missing.
        spans: Some(BTreeMap::from([
            ("checkout-client".to_owned(), 4),
            ("orchestrator".to_owned(), 3 * 20 + 16),
            ("inventory".to_owned(), 3 * 5 + 9),
            ("payment".to_owned(), 4 * 5 - 1),
            ("order".to_owned(), 12),
            ("notification".to_owned(), 3 * 5),
        ])),
        spans_expected: crate::bench::spans::expected_spans(timed.all(), false),
    };
    (timed, counters)
}

#[test]
fn a_run_divides_counts_by_every_saga_and_rates_by_the_window() {
    let (timed, counters) = run();
    let r = RunReport::build(
        "checkout",
        4,
        true,
        Duration::from_secs(1),
        &timed,
        &counters,
    );
    assert_eq!(
        (r.sagas, r.completed, r.compensated, r.failed),
        (3, 2, 1, 1)
    );
    assert_eq!(r.throughput_per_s, 3.0);
    assert_eq!(r.accounted_sagas, 5);
    assert_eq!(r.latency.p50_ms, 20.0);
    assert_eq!(r.latency.max_ms, 30.0);
    assert_eq!(r.pg_commits_per_saga, 7.0);
    assert_eq!(r.js_messages_per_saga, 12.0);
    assert!((r.cpu_ms_per_saga - 5.0).abs() < 1e-9);
    assert_eq!(r.spans_missing, 1);
    assert_eq!(
        (r.group_fallbacks, r.pg_deadlocks),
        (3, 2),
        "counts, not rates"
    );
    assert_eq!(
        r.spans_off_by_service,
        BTreeMap::from([("payment".into(), -1)])
    );
}

#[test]
fn untraced_runs_expect_no_spans_and_the_table_shows_the_ratio() {
    let (timed, mut counters) = run();
    counters.spans = None;
    let mut r = RunReport::build(
        "checkout",
        4,
        false,
        Duration::from_secs(1),
        &timed,
        &counters,
    );
    assert_eq!((r.spans_missing, r.spans_expected_per_saga), (0, 0.0));
    let skeleton = RunReport::build(
        "skeleton",
        4,
        false,
        Duration::from_secs(2),
        &timed,
        &counters,
    );
    r.compare(&skeleton);
    assert_eq!(r.ratio_to_skeleton, Some(2.0));
    let json = serde_json::to_value(&r).unwrap();
    for field in [
        "concurrency",
        "tracing",
        "throughput_per_s",
        "p50_ms",
        "p99_ms",
    ] {
        assert!(json.get(field).is_some(), "{field}");
    }
    assert!(json["cpu_ms_per_saga"].is_number());
    assert_eq!(json["skeleton_throughput_per_s"], 1.5);
    let text = table(&[r]);
    assert!(text.contains("checkout, tracing off"), "{text}");
    assert!(
        text.contains("one action at a time (PostgreSQL deadlocks), per run:\n  checkout, tracing off @4: 3 (2)"),
        "{text}"
    );
    assert!(text.contains("orchestrator 2.00 (30)"), "{text}");
}
