use super::*;

const MS: u64 = 1_000_000;

fn span(
    id: &str,
    parent: Option<&str>,
    kind: SpanKind,
    service: &str,
    start: f64,
    end: f64,
) -> ReceivedSpan {
    ReceivedSpan {
        trace_id: "t1".to_owned(),
        span_id: id.to_owned(),
        parent_span_id: parent.map(str::to_owned),
        name: id.to_owned(),
        kind,
        service_name: service.to_owned(),
        attributes: BTreeMap::new(),
        error: false,
        status_message: String::new(),
        start_unix_nanos: (start * MS as f64) as u64 + 1_000 * MS,
        end_unix_nanos: (end * MS as f64) as u64 + 1_000 * MS,
        links: Vec::new(),
        events: Vec::new(),
    }
}

/// `(id, parent, kind, service, start ms, end ms, attributes)`.
type Row<'a> = (
    &'a str,
    Option<&'a str>,
    SpanKind,
    &'a str,
    f64,
    f64,
    &'a [(&'a str, &'a str)],
);

fn spans(rows: &[Row]) -> Vec<ReceivedSpan> {
    rows.iter()
        .map(|&(id, parent, kind, service, start, end, attributes)| {
            let mut s = span(id, parent, kind, service, start, end);
            for (k, v) in attributes {
                s.attributes.insert((*k).to_owned(), (*v).to_owned());
            }
            s
        })
        .collect()
}

const WAIT: &str = "messaging.nats.stream_wait_ms";
const DEST: &str = "messaging.destination.name";

/// One step: client → orchestrator → worker → orchestrator, the saga ending at 12 ms.
fn one_step_saga() -> Vec<ReceivedSpan> {
    use SpanKind::*;
    let saga = [("saga.id", "s"), ("checkout.outcome", "completed")];
    spans(&[
        (
            "request",
            None,
            Producer,
            "checkout-client",
            0.0,
            0.1,
            &[(DEST, "checkout.requested")],
        ),
        (
            "take-request",
            Some("request"),
            Consumer,
            "orchestrator",
            2.0,
            3.5,
            &[(WAIT, "1.5")],
        ),
        (
            "saga",
            Some("take-request"),
            Internal,
            "orchestrator",
            2.2,
            12.0,
            &saga,
        ),
        (
            "command",
            Some("take-request"),
            Producer,
            "orchestrator",
            3.0,
            3.1,
            &[(DEST, "checkout.cmd.inventory.reserve")],
        ),
        (
            "take-command",
            Some("command"),
            Consumer,
            "inventory",
            5.0,
            9.0,
            &[(WAIT, "1")],
        ),
        (
            "tx",
            Some("take-command"),
            Client,
            "inventory",
            5.5,
            7.0,
            &[("db.system.name", "postgresql")],
        ),
        (
            "reply",
            Some("take-command"),
            Producer,
            "inventory",
            8.0,
            8.1,
            &[(DEST, "checkout.evt.inventory.reserved")],
        ),
        (
            "take-reply",
            Some("reply"),
            Consumer,
            "orchestrator",
            10.0,
            12.5,
            &[(WAIT, "1")],
        ),
        // A lifecycle event: the saga does not wait on it.
        (
            "lifecycle",
            Some("take-reply"),
            Producer,
            "orchestrator",
            11.0,
            11.1,
            &[(DEST, "checkout.saga.s.completed")],
        ),
    ])
}

#[test]
fn the_segments_of_a_saga_partition_its_time() {
    let breakdown = of(&one_step_saga()).expect("a completed saga");
    let segment = |name: &str| {
        breakdown
            .segments
            .iter()
            .find(|(s, _)| s == name)
            .map(|(_, ms)| *ms)
            .unwrap()
    };
    let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
    assert_eq!(breakdown.sagas, 1);
    assert!(close(breakdown.total_ms, 12.0), "{breakdown:?}");
    assert!(close(segment("request: to broker"), 0.5));
    assert!(close(segment("request: in stream"), 1.5));
    // 2 → 3 before the command, then 10 → 12 after the last reply until the saga ended.
    assert!(close(segment("orchestrator: handling"), 3.0));
    assert!(close(segment("commands: to broker"), 1.0));
    assert!(close(segment("commands: in stream"), 1.0));
    assert!(close(segment("workers: handling, database"), 1.5));
    assert!(close(segment("workers: handling, other"), 1.5));
    assert!(close(segment("replies: to broker"), 1.0));
    assert!(close(segment("replies: in stream"), 1.0));
    let sum: f64 = breakdown.segments.iter().map(|(_, ms)| ms).sum();
    assert!(
        close(sum, breakdown.total_ms),
        "{sum} != {}",
        breakdown.total_ms
    );
    assert!(close(breakdown.hops, 3.0));
}

#[test]
fn a_saga_that_did_not_complete_or_lost_a_hop_is_left_out() {
    let mut compensated = one_step_saga();
    compensated[2]
        .attributes
        .insert("checkout.outcome".to_owned(), "compensated".to_owned());
    assert_eq!(of(&compensated), None);
    let mut lost = one_step_saga();
    lost.retain(|s| s.span_id != "take-command");
    assert_eq!(of(&lost), None);
}
