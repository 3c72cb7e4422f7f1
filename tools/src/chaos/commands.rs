//! Command messages in the traces: every command published needs a worker's `process` span
//! beneath one of its publish spans, with two exceptions that are not holes in a trace.
//!
//! - The publish never reached the stream: a `send failed` span beneath it says so.
//! - The broker lost it after accepting it (nats-server killed before its write reached the
//!   disk), and another send of the same action did the work. A timed-out command is re-sent under
//!   a new message id (`<saga>.<step>.<phase>[.gN].rN`), and workers do an action once per
//!   action key whatever the message: so when the action was done fresh (not replayed) under
//!   a later message of the same series, this message was never done at all, and its
//!   `process` span is not missing but never existed. A worker that replays a stored decision
//!   says so on its span (`saga.replayed`). A broker that syncs every message before its ack
//!   (`sync_interval: always`, 2.11 and later, as the harness runs it) no longer loses one,
//!   but the same picture comes from a sender SIGKILLed between exporting its publish span
//!   and sending: with two orchestrators, the survivor's deadline re-sends the command under
//!   a new id before the killed one's recovery could re-send the first (seen in the cluster
//!   test), so the excuse stays, counted apart.

use checkout_harness::{ReceivedSpan, SpanKind};
use checkout_shared::messaging;
use std::collections::{HashMap, HashSet};

/// What the audit found about command messages.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Commands {
    /// `(message id, trace id)` of each message with no process span and no excuse.
    pub holes: Vec<(String, String)>,
    /// Publishes that did not reach the stream.
    pub unsent: usize,
    /// Messages the broker lost after accepting them, done by a re-send instead.
    pub lost_by_broker: usize,
}

fn is_command_publish(span: &ReceivedSpan) -> bool {
    span.kind == SpanKind::Producer && span.name.starts_with("publish checkout.cmd.")
}

/// The retry series a command message belongs to: its id without a re-send's `.rN`.
fn series(msg_id: &str) -> &str {
    match msg_id.rsplit_once(".r") {
        Some((head, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => head,
        _ => msg_id,
    }
}

/// A delivery that did the action itself: decided (no failure to act, no error) and not
/// replayed.
fn did_the_action(span: &ReceivedSpan) -> bool {
    span.kind == SpanKind::Consumer
        && !span.error
        && span.attr("saga.replayed").is_none()
        && span.attr("failure.code").is_none()
}

/// Audits every command message among `spans`.
pub fn audit(spans: &[ReceivedSpan]) -> Commands {
    let children_of = |pred: &dyn Fn(&ReceivedSpan) -> bool| -> HashSet<&str> {
        spans
            .iter()
            .filter(|s| pred(s))
            .filter_map(|s| s.parent_span_id.as_deref())
            .collect()
    };
    let processed = children_of(&|s| s.kind == SpanKind::Consumer);
    let unsent_markers = children_of(&|s| s.name.starts_with(messaging::SEND_FAILED));
    // The message under which each series' action was done.
    let mut done_under: HashMap<&str, HashSet<&str>> = HashMap::new();
    for span in spans.iter().filter(|s| did_the_action(s)) {
        if let Some(id) = span.attr("messaging.message.id") {
            done_under.entry(series(id)).or_default().insert(id);
        }
    }
    let mut by_message: HashMap<&str, (&str, bool)> = HashMap::new();
    let mut commands = Commands::default();
    for span in spans.iter().filter(|s| is_command_publish(s)) {
        let id = span.attr("messaging.message.id").unwrap_or(&span.span_id);
        let entry = by_message.entry(id).or_insert((&span.trace_id, false));
        let done = processed.contains(span.span_id.as_str());
        let never_there = !done && unsent_markers.contains(span.span_id.as_str());
        commands.unsent += usize::from(never_there);
        entry.1 |= done || never_there;
    }
    for (id, (trace, done)) in by_message {
        if done {
            continue;
        }
        // Done under another send of its series. A later send doing it means this message
        // never reached a worker. An earlier one doing it leaves two readings: this re-send
        // was replayed and its span is missing, or the broker lost it after accepting it
        // (nats-server SIGKILLed before its write reached the disk: seen in CI under the
        // first round's broker kills). The trace cannot tell them apart, and neither left
        // work undone or done twice (the action was done once, fresh), so both count as
        // lost by the broker rather than as a hole.
        let done_by_another_send = done_under
            .get(series(id))
            .is_some_and(|under| under.iter().any(|other| other != &id));
        if done_by_another_send {
            commands.lost_by_broker += 1;
        } else {
            commands.holes.push((id.to_owned(), trace.to_owned()));
        }
    }
    commands
}

/// What the trace holds of one message, for a report that explains a hole: its publish spans
/// and any consumer span that names it (with the parent it claims), times in ms of the epoch.
pub fn message_spans(spans: &[ReceivedSpan], msg_id: &str) -> String {
    let of_message = spans
        .iter()
        .filter(|s| s.attr("messaging.message.id") == Some(msg_id))
        .filter(|s| matches!(s.kind, SpanKind::Producer | SpanKind::Consumer));
    let described: Vec<String> = of_message
        .map(|s| {
            format!(
                "{} {} by {} at {} under {}{}{}",
                if s.kind == SpanKind::Producer {
                    "publish"
                } else {
                    "process"
                },
                s.span_id,
                s.service_name,
                s.start_unix_nanos / 1_000_000,
                s.parent_span_id.as_deref().unwrap_or("-"),
                s.attr("messaging.nats.delivery_count")
                    .map(|n| format!(", delivery {n}"))
                    .unwrap_or_default(),
                if s.attr("saga.replayed").is_some() {
                    ", replayed"
                } else {
                    ""
                },
            )
        })
        .collect();
    described.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: &str, parent: Option<&str>, name: &str, kind: SpanKind, msg: &str) -> ReceivedSpan {
        ReceivedSpan {
            trace_id: "t".into(),
            span_id: id.into(),
            parent_span_id: parent.map(str::to_owned),
            name: name.into(),
            kind,
            service_name: String::new(),
            attributes: [("messaging.message.id".to_owned(), msg.to_owned())].into(),
            error: false,
            status_message: String::new(),
            start_unix_nanos: 0,
            end_unix_nanos: 0,
            links: vec![],
            events: vec![],
        }
    }

    fn publish(id: &str, msg: &str) -> ReceivedSpan {
        let name = "publish checkout.cmd.payment.charge";
        span(id, None, name, SpanKind::Producer, msg)
    }

    fn process(id: &str, parent: &str, msg: &str) -> ReceivedSpan {
        let name = "process checkout.cmd.payment.charge";
        span(id, Some(parent), name, SpanKind::Consumer, msg)
    }

    fn replayed(mut span: ReceivedSpan) -> ReceivedSpan {
        span.attributes
            .insert("saga.replayed".into(), "true".into());
        span
    }

    #[test]
    fn a_publish_without_its_process_span_is_a_hole_unless_it_never_reached_the_stream() {
        let spans = vec![
            publish("a", "s1.payment.do"),
            process("a1", "a", "s1.payment.do"),
            publish("b", "s2.payment.do"),
            span(
                "b1",
                Some("b"),
                "send failed checkout.cmd.payment.charge",
                SpanKind::Internal,
                "s2.payment.do",
            ),
            publish("c", "s3.payment.do"),
        ];
        let found = audit(&spans);
        assert_eq!(
            found.holes,
            vec![("s3.payment.do".to_owned(), "t".to_owned())]
        );
        assert_eq!((found.unsent, found.lost_by_broker), (1, 0));
    }

    #[test]
    fn a_message_lost_by_the_broker_is_excused_only_if_its_re_send_did_the_action() {
        // The first message vanished with the broker; the re-send did the action itself.
        let lost_then_done = vec![
            publish("a", "s1.payment.do"),
            publish("b", "s1.payment.do.r1"),
            process("b1", "b", "s1.payment.do.r1"),
        ];
        let found = audit(&lost_then_done);
        assert_eq!(found.holes, vec![]);
        assert_eq!(found.lost_by_broker, 1);

        // The re-send only replayed a decision: the first message was done, and its process
        // span is missing.
        let done_then_span_lost = vec![
            publish("a", "s1.payment.do"),
            publish("b", "s1.payment.do.r1"),
            replayed(process("b1", "b", "s1.payment.do.r1")),
        ];
        let found = audit(&done_then_span_lost);
        assert_eq!(
            found.holes,
            vec![("s1.payment.do".to_owned(), "t".to_owned())]
        );
        assert_eq!(found.lost_by_broker, 0);

        // Done fresh under the first message; the re-send has no span: lost by the broker
        // after it accepted it, or replayed with its span missing. The trace cannot tell,
        // and the action was done once: counted, not a hole.
        let done_first_then_re_send_lost = vec![
            publish("a", "s1.payment.do"),
            process("a1", "a", "s1.payment.do"),
            publish("b", "s1.payment.do.r1"),
        ];
        let found = audit(&done_first_then_re_send_lost);
        assert_eq!(found.holes, vec![]);
        assert_eq!(found.lost_by_broker, 1);

        // Another saga's or another step's action excuses nothing.
        let elsewhere = vec![
            publish("a", "s1.payment.do"),
            publish("b", "s2.payment.do.r1"),
            process("b1", "b", "s2.payment.do.r1"),
        ];
        assert_eq!(audit(&elsewhere).holes.len(), 1);
    }

    #[test]
    fn a_series_is_the_message_id_without_its_re_send_number() {
        assert_eq!(series("s.payment.do.r12"), "s.payment.do");
        assert_eq!(series("s.payment.undo.g1.r2"), "s.payment.undo.g1");
        assert_eq!(series("s.payment.undo.g1"), "s.payment.undo.g1");
        assert_eq!(series("s.order.do"), "s.order.do");
    }
}
