use super::*;
use chrono::TimeZone as _;

fn at(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(1_700_000_000_000 + ms)
        .single()
        .expect("valid time")
}

fn row(ms: i64, step: Option<&str>, event: &str, detail: Option<&str>) -> LogRow {
    LogRow {
        step: step.map(str::to_owned),
        event: event.parse().expect("a log event"),
        detail: detail.map(str::to_owned),
        at: at(ms),
    }
}

#[test]
fn a_compensated_saga_reads_as_its_steps_then_its_undos() {
    let log = [
        row(0, Some("inventory"), "started", None),
        row(10, Some("inventory"), "succeeded", None),
        row(10, Some("payment"), "started", None),
        row(25, Some("payment"), "failed", Some("card declined")),
        row(25, Some("inventory"), "undo_started", None),
        row(40, Some("inventory"), "undo_finished", None),
        row(40, None, "compensated", Some("card declined")),
    ];
    let entries = timeline(&log);
    let summary: Vec<(&str, &str, &str, Option<f64>)> = entries
        .iter()
        .map(|e| (e.phase, e.step.as_str(), e.outcome, e.millis()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("do", "inventory", "ok", Some(10.0)),
            ("do", "payment", "failed", Some(15.0)),
            ("undo", "inventory", "ok", Some(15.0)),
        ]
    );
    assert_eq!(entries[1].reason.as_deref(), Some("card declined"));
    assert_eq!(entries[0].reason, None);
    assert_eq!(
        line(at(0), &entries[1]),
        "     +10.0 ms  do   payment               15.0 ms  failed  card declined"
    );
}

#[test]
fn re_sends_and_failed_undo_attempts_are_counted_with_the_last_reason() {
    let log = [
        row(0, Some("inventory"), "started", None),
        row(
            5_000,
            Some("inventory"),
            "retried",
            Some("no reply; re-sending (attempt 2)"),
        ),
        row(5_020, Some("inventory"), "succeeded", None),
        row(5_020, Some("payment"), "started", None),
        row(5_030, Some("payment"), "failed", Some("declined")),
        row(5_030, Some("inventory"), "undo_started", None),
        row(5_040, Some("inventory"), "undo_failed", Some("db down")),
        row(5_050, Some("inventory"), "stuck", Some("db down")),
        row(9_000, Some("inventory"), "retried", Some("operator retry")),
        row(9_010, Some("inventory"), "undo_finished", None),
    ];
    let entries = timeline(&log);
    assert_eq!(entries.len(), 4, "{entries:#?}");
    assert_eq!(entries[0].attempts, 2);
    assert_eq!(entries[0].outcome, "ok");
    assert_eq!(
        entries[0].reason.as_deref(),
        Some("no reply; re-sending (attempt 2)")
    );
    assert_eq!((entries[2].outcome, entries[2].attempts), ("stuck", 2));
    assert_eq!(entries[2].reason.as_deref(), Some("db down"));
    assert_eq!((entries[3].phase, entries[3].outcome), ("undo", "ok"));
    assert_eq!(entries[3].millis(), Some(10.0));
}

#[test]
fn a_running_step_has_no_end() {
    let log = [row(0, Some("inventory"), "started", None)];
    let entries = timeline(&log);
    assert_eq!(entries[0].outcome, "running");
    assert_eq!(entries[0].millis(), None);
    assert!(
        line(at(0), &entries[0]).contains(" - "),
        "{}",
        line(at(0), &entries[0])
    );
}

#[test]
fn a_saga_refused_at_its_first_step_has_an_end_and_a_step_failure_is_not_one() {
    let refused = "out_of_stock: SKU-RARE wants 4, 3 available";
    let log = [
        row(0, Some("inventory"), "started", None),
        row(12, Some("inventory"), "failed", Some(refused)),
        row(12, None, "failed", Some(refused)),
    ];
    assert_eq!(ended_at(&log), Some(at(12)));
    assert_eq!(
        ended_at(&log[..2]),
        None,
        "a step's failure does not end the saga"
    );
    let compensating = [
        row(0, Some("payment"), "failed", Some("card_declined: no")),
        row(5, Some("inventory"), "undo_started", None),
    ];
    assert_eq!(ended_at(&compensating), None);
}

fn waiting(status: &'static str, step: &str, phase: &'static str, sends: u32) -> Waiting {
    Waiting {
        status,
        step: step.to_owned(),
        phase,
        command: format!("{step}.refund"),
        worker: step.to_owned(),
        awaited: true,
        since: at(0),
        sends,
        next_send: None,
    }
}

#[test]
fn a_running_saga_says_where_it_is_and_what_it_waits_for() {
    let mut stuck = waiting("stuck", "payment", "undo", 3);
    stuck.next_send = Some(at(20_000));
    assert_eq!(
        stuck.describe(at(12_400)),
        "stuck at undo payment: waiting 12.4 s for the payment worker's reply to payment.refund \
         (sent 3 times, next send 22:13:40.000 UTC)"
    );
    let mut follow_up = waiting("completed", "notification", "do", 1);
    follow_up.command = "notification.send".into();
    follow_up.awaited = false;
    assert_eq!(
        follow_up.describe(at(300)),
        "completed at do notification: waiting 0.3 s for the notification worker's reply to \
         notification.send (sent once, fire-and-forget)"
    );
}
