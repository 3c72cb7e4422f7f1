//! The verdict: a report holds only when every invariant does, each one on its own.

use super::*;
use crate::chaos::outage::OutageReport;

/// What a run in which nothing went wrong reports.
fn clean() -> ChaosReport {
    ChaosReport {
        stock_ok: true,
        money_ok: true,
        ..ChaosReport::default()
    }
}

#[test]
fn a_report_holds_only_if_every_invariant_does() {
    assert!(clean().holds());
    type Plant = fn(&mut ChaosReport);
    let violations: [(&str, Plant); 13] = [
        ("a lost saga", |r| r.lost = 1),
        ("a stuck saga", |r| r.stuck = 1),
        ("an unfinished saga", |r| r.unfinished = 1),
        ("an unpublished checkout", |r| r.publish_failures = 1),
        ("a bad effect", |r| r.bad_effects = 1),
        ("stock that does not add up", |r| r.stock_ok = false),
        ("money that does not add up", |r| r.money_ok = false),
        ("an incomplete trace", |r| r.incomplete_traces = 1),
        ("spans sharing an id", |r| r.traces.conflicting_span_ids = 1),
        ("an unrecovered fault", |r| {
            r.unrecovered_faults.push("kill nats".into())
        }),
        ("an untrusted sampler", |r| {
            r.sampler_failure = Some("no samples".into())
        }),
        ("a table left unusable", |r| {
            r.outage = Some(OutageReport::default())
        }),
        ("an unclean exit", |r| {
            r.unclean_exits.push("order: 1".into())
        }),
    ];
    for (what, plant) in violations {
        let mut report = clean();
        plant(&mut report);
        assert!(!report.holds(), "{what} went unnoticed");
    }
    let restored = ChaosReport {
        outage: Some(OutageReport {
            restored: true,
            ..OutageReport::default()
        }),
        ..clean()
    };
    assert!(restored.holds());
}

#[test]
fn a_kind_never_injected_fails_the_run_and_is_named() {
    let at = std::time::Instant::now();
    let fault = |kind, action: &str, error: Option<&str>| Fault {
        kind,
        action: action.to_owned(),
        at,
        down: std::time::Duration::ZERO,
        error: error.map(str::to_owned),
    };
    // The orchestrator was asked for and never tried; the network's one try failed.
    let enabled = [
        FaultKind::Worker,
        FaultKind::Orchestrator,
        FaultKind::Network,
    ];
    let injected = [
        fault(FaultKind::Worker, "kill payment-1", None),
        fault(
            FaultKind::Network,
            "Cut (failed: the stack has no proxies)",
            Some("the stack has no proxies"),
        ),
    ];
    let mut report = clean();
    report.account_faults(&enabled, &injected);
    assert_eq!(report.never_injected, ["network", "orchestrator"]);
    assert_eq!(
        report.failed_injections,
        ["Cut (failed: the stack has no proxies)"]
    );
    assert!(!report.holds(), "a run that did not try network passed");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(
        json["faults"],
        serde_json::json!({"network": 0, "orchestrator": 0, "worker": 1})
    );
    report.invariants_ok = report.holds();
    let lines = std::cell::RefCell::new(Vec::new());
    print(&report, &injected, &|line| lines.borrow_mut().push(line));
    let text = lines.into_inner().join("\n");
    assert!(
        text.contains("never injected: network, orchestrator"),
        "{text}"
    );
    for (kind, n, mark) in [("worker", 1, "ok"), ("orchestrator", 0, "FAILED")] {
        let row = text.lines().find(|l| l.trim_start().starts_with(kind));
        assert!(
            row.is_some_and(|r| r.contains(&format!(" {n}  {mark}"))),
            "{kind}: {text}"
        );
    }
    assert!(text.ends_with("VIOLATED"), "{text}");

    // Every kind tried once: the run holds.
    let mut report = clean();
    let all = [
        fault(FaultKind::Worker, "kill payment-1", None),
        fault(FaultKind::Orchestrator, "kill orchestrator", None),
        fault(FaultKind::Network, "cut db", None),
    ];
    report.account_faults(&enabled, &all);
    assert!(report.never_injected.is_empty());
    assert!(report.holds());
}
