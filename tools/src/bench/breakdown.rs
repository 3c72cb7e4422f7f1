//! Where a saga's time goes, read from its spans: each hop of its critical path, from the
//! client's publish to the saga's end, split into the time a message took to reach its stream,
//! the time it waited there, and the time a service spent before it sent the next one.
//!
//! ```text
//!  client publish ─▶ stored ─▶ taken ─▶ orchestrator ─▶ publish command ─▶ stored ─▶ taken ─▶
//!  │  to broker   │ in stream │ handling (until it sends) │   to broker    │ in stream │
//!  worker (its transaction, then its reply) ─▶ stored ─▶ taken ─▶ orchestrator ... saga ends
//! ```
//!
//! A consumer's process span is the child of the producer's span (read from the headers), and
//! its `messaging.nats.stream_wait_ms` is the time from the broker's timestamp on the message
//! (given as it is stored, before the write reaches the disk) to the consumer taking it. So
//! for a message: `to broker` is from the producer span's start (before any span flush and
//! the publish) to that timestamp, `in stream` is the wait (the store's sync to disk, the
//! delivery to the consumer's pull, and the consumer's own queue), and a service's `handling` runs from taking a message to starting the
//! next publish the saga waits on. The segments partition the saga's time on one clock (one
//! machine), so their means add up to the mean total. At concurrency 1 the critical path is
//! the whole story; under load it still says where a saga waited.

use checkout_harness::{ReceivedSpan, SpanKind};
use checkout_shared::subjects;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// The segments, in the order they are shown.
const SEGMENTS: [&str; 9] = [
    "request: to broker",
    "request: in stream",
    "orchestrator: handling",
    "commands: to broker",
    "commands: in stream",
    "workers: handling, database",
    "workers: handling, other",
    "replies: to broker",
    "replies: in stream",
];

/// The mean time per saga of each segment of the critical path, over completed sagas.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Breakdown {
    /// Completed sagas whose path could be followed from the client to the saga's end.
    pub sagas: usize,
    /// Mean milliseconds per saga from the client's publish to the saga's end.
    pub total_ms: f64,
    /// Median of the same.
    pub total_p50_ms: f64,
    /// Mean milliseconds per saga, per segment, in the order of [`SEGMENTS`].
    pub segments: Vec<(String, f64)>,
    /// Messages on the critical path per saga (mean).
    pub hops: f64,
}

/// One saga's path: its segments (ms) and hops.
#[derive(Debug, Default)]
struct Path {
    segments: BTreeMap<&'static str, f64>,
    hops: usize,
    total_ms: f64,
}

/// The breakdown of every completed saga among `spans` (any order, several traces).
pub fn of(spans: &[ReceivedSpan]) -> Option<Breakdown> {
    let mut traces: HashMap<&str, Vec<&ReceivedSpan>> = HashMap::new();
    for span in spans {
        traces.entry(&span.trace_id).or_default().push(span);
    }
    let paths: Vec<Path> = traces.values().filter_map(|t| path(t)).collect();
    if paths.is_empty() {
        return None;
    }
    let n = paths.len() as f64;
    let mean = |f: &dyn Fn(&Path) -> f64| paths.iter().map(f).sum::<f64>() / n;
    let mut totals: Vec<f64> = paths.iter().map(|p| p.total_ms).collect();
    totals.sort_by(f64::total_cmp);
    Some(Breakdown {
        sagas: paths.len(),
        total_ms: mean(&|p| p.total_ms),
        total_p50_ms: totals[totals.len() / 2],
        segments: SEGMENTS
            .iter()
            .map(|s| {
                let ms = mean(&|p| p.segments.get(s).copied().unwrap_or(0.0));
                ((*s).to_owned(), ms)
            })
            .collect(),
        hops: mean(&|p| p.hops as f64),
    })
}

fn ms(nanos: i128) -> f64 {
    nanos as f64 / 1e6
}

/// Follows one trace's critical path; `None` unless it is a completed saga whose every hop is
/// there.
fn path(trace: &[&ReceivedSpan]) -> Option<Path> {
    let saga = trace
        .iter()
        .find(|s| s.attr("checkout.outcome") == Some("completed") && s.attr("saga.id").is_some())?;
    let saga_end = i128::from(saga.end_unix_nanos);
    let mut children: HashMap<&str, Vec<&ReceivedSpan>> = HashMap::new();
    for span in trace {
        if let Some(parent) = &span.parent_span_id {
            children.entry(parent).or_default().push(span);
        }
    }
    for list in children.values_mut() {
        list.sort_by_key(|s| s.start_unix_nanos);
    }
    let consumer_of = |producer: &ReceivedSpan| -> Option<&ReceivedSpan> {
        let list = children.get(producer.span_id.as_str())?;
        list.iter().copied().find(|s| s.kind == SpanKind::Consumer)
    };
    let mut producer = *trace
        .iter()
        .find(|s| s.parent_span_id.is_none() && s.kind == SpanKind::Producer)?;
    let start = i128::from(producer.start_unix_nanos);
    let mut path = Path::default();
    let mut from_client = true;
    loop {
        let consumer = consumer_of(producer)?;
        let taken = i128::from(consumer.start_unix_nanos);
        let waited: f64 = consumer
            .attr("messaging.nats.stream_wait_ms")
            .and_then(|w| w.parse().ok())
            .unwrap_or(0.0);
        let to_broker = (ms(taken - i128::from(producer.start_unix_nanos)) - waited).max(0.0);
        let worker = consumer.service_name != "orchestrator";
        let (to, wait) = match (from_client, worker) {
            (true, _) => ("request: to broker", "request: in stream"),
            (false, true) => ("commands: to broker", "commands: in stream"),
            (false, false) => ("replies: to broker", "replies: in stream"),
        };
        *path.segments.entry(to).or_default() += to_broker;
        *path.segments.entry(wait).or_default() += waited;
        path.hops += 1;
        from_client = false;
        // The next message the saga waits on: the first command or reply published after
        // this consumer took its message and before the saga ended (lifecycle events are not
        // waited on). Not necessarily below this span: the orchestrator sends a command under
        // its step's span once the transition is stored.
        let next = trace
            .iter()
            .copied()
            .filter(|s| s.kind == SpanKind::Producer && carries_work(s))
            .filter(|s| s.start_unix_nanos >= consumer.start_unix_nanos)
            .filter(|s| i128::from(s.start_unix_nanos) < saga_end)
            .min_by_key(|s| s.start_unix_nanos);
        let mut below = Vec::new();
        descendants(consumer, &children, &mut below);
        let until = next.map_or(saga_end, |p| i128::from(p.start_unix_nanos));
        let handling = ms(until - taken).max(0.0);
        if worker {
            let database: f64 = below
                .iter()
                .filter(|s| s.kind == SpanKind::Client && s.attr("db.system.name").is_some())
                .filter(|s| i128::from(s.end_unix_nanos) <= until)
                .map(|s| ms(i128::from(s.duration_nanos())))
                .sum::<f64>()
                .min(handling);
            *path
                .segments
                .entry("workers: handling, database")
                .or_default() += database;
            *path.segments.entry("workers: handling, other").or_default() += handling - database;
        } else {
            *path.segments.entry("orchestrator: handling").or_default() += handling;
        }
        match next {
            Some(p) => producer = p,
            None => break,
        }
        if path.hops > 64 {
            return None;
        }
    }
    path.total_ms = ms(saga_end - start);
    Some(path)
}

/// Whether a producer span sends a command or a reply, whose taking the saga then waits on.
fn carries_work(span: &ReceivedSpan) -> bool {
    let subject = span.attr("messaging.destination.name").unwrap_or_default();
    [subjects::COMMANDS, subjects::EVENTS].iter().any(|prefix| {
        subject
            .strip_prefix(prefix)
            .is_some_and(|r| r.starts_with('.'))
    })
}

fn descendants<'a>(
    span: &ReceivedSpan,
    children: &HashMap<&str, Vec<&'a ReceivedSpan>>,
    out: &mut Vec<&'a ReceivedSpan>,
) {
    for child in children.get(span.span_id.as_str()).into_iter().flatten() {
        out.push(child);
        descendants(child, children, out);
    }
}

/// The breakdown as a table: mean ms per saga and share of the total, per segment.
pub fn table(label: &str, breakdown: &Breakdown, client_p50_ms: f64) -> String {
    let mut out = format!(
        "where the time of a saga goes, {label}: {} completed sagas, {:.1} messages on the \
         path each; client publish to saga end {:.2} ms mean, {:.2} ms p50 (the client heard \
         the end at {:.2} ms p50)\n",
        breakdown.sagas, breakdown.hops, breakdown.total_ms, breakdown.total_p50_ms, client_p50_ms
    );
    out.push_str(&format!("  {:32} {:>8} {:>6}\n", "segment", "ms", "share"));
    for (segment, ms) in &breakdown.segments {
        let share = if breakdown.total_ms > 0.0 {
            100.0 * ms / breakdown.total_ms
        } else {
            0.0
        };
        out.push_str(&format!("  {segment:32} {ms:>8.2} {share:>5.1}%\n"));
    }
    out
}

#[cfg(test)]
mod tests;
