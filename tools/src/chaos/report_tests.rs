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
