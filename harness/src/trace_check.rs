//! Structural checks and a text rendering for one trace's spans.
//!
//! The saga's central tracing promise is that one checkout produces one connected trace across
//! the orchestrator, the workers and NATS hops. [`check_tree`] verifies exactly that shape, and
//! [`render_tree`] shows it in a terminal for the demo and for failing assertions.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;

use crate::span::ReceivedSpan;

/// Lists every way `spans` fail to form one complete trace tree; empty means whole.
///
/// Reported problems: spans from more than one trace, not exactly one root, a parent id that is
/// not among the spans (a lost or not-yet-exported span, or broken context propagation), and
/// duplicate span ids.
pub fn check_tree(spans: &[ReceivedSpan]) -> Vec<String> {
    if spans.is_empty() {
        return vec![String::from("no spans to check")];
    }
    let mut problems = Vec::new();

    let trace_ids: BTreeSet<&str> = spans.iter().map(|span| span.trace_id.as_str()).collect();
    if trace_ids.len() > 1 {
        let listed: Vec<&str> = trace_ids.into_iter().collect();
        problems.push(format!(
            "spans belong to {} traces instead of one: {}",
            listed.len(),
            listed.join(", ")
        ));
    }

    let roots: Vec<String> = spans
        .iter()
        .filter(|span| span.parent_span_id.is_none())
        .map(describe)
        .collect();
    if roots.len() != 1 {
        problems.push(format!(
            "expected exactly one root span, found {}{}",
            roots.len(),
            if roots.is_empty() {
                String::new()
            } else {
                format!(": {}", roots.join(", "))
            }
        ));
    }

    let ids: HashSet<&str> = spans.iter().map(|span| span.span_id.as_str()).collect();
    for span in spans {
        if let Some(parent) = &span.parent_span_id
            && !ids.contains(parent.as_str())
        {
            problems.push(format!(
                "span {} has parent {parent}, which is not among the spans",
                describe(span)
            ));
        }
    }

    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for span in spans {
        *counts.entry(span.span_id.as_str()).or_default() += 1;
    }
    for (id, count) in counts.into_iter().filter(|(_, count)| *count > 1) {
        problems.push(format!("span id {id} appears {count} times"));
    }

    problems
}

/// Renders the spans as an indented waterfall, one line per span, children under their parent
/// in start order.
///
/// Each line shows the name, the service, the offset from the first span's start and the
/// duration in milliseconds, and `ERROR: message` for failed spans. Spans whose parent is
/// missing are shown at the top level, marked as orphans, so a broken trace is still readable.
pub fn render_tree(spans: &[ReceivedSpan]) -> String {
    let origin = spans
        .iter()
        .map(|span| span.start_unix_nanos)
        .min()
        .unwrap_or(0);
    let ids: HashSet<&str> = spans.iter().map(|span| span.span_id.as_str()).collect();

    let mut children: HashMap<&str, Vec<&ReceivedSpan>> = HashMap::new();
    let mut top: Vec<&ReceivedSpan> = Vec::new();
    for span in spans {
        match span.parent_span_id.as_deref() {
            Some(parent) if ids.contains(parent) && parent != span.span_id => {
                children.entry(parent).or_default().push(span);
            }
            _ => top.push(span),
        }
    }
    let by_start = |a: &&ReceivedSpan, b: &&ReceivedSpan| {
        (a.start_unix_nanos, &a.name).cmp(&(b.start_unix_nanos, &b.name))
    };
    top.sort_by(by_start);
    for list in children.values_mut() {
        list.sort_by(by_start);
    }

    let mut renderer = Renderer {
        out: String::new(),
        origin,
        ids,
        children,
        visited: HashSet::new(),
    };
    for span in top {
        renderer.render(span, 0);
    }
    // Spans reachable only through a parent cycle (possible with duplicate ids) were never
    // visited from a top-level span; list them so nothing silently disappears.
    for span in spans {
        if !renderer.visited.contains(&std::ptr::from_ref(span)) {
            renderer.render(span, 0);
        }
    }
    renderer.out
}

/// Recursive waterfall writer; `visited` guards against cycles and repeated output.
struct Renderer<'a> {
    out: String,
    origin: u64,
    ids: HashSet<&'a str>,
    children: HashMap<&'a str, Vec<&'a ReceivedSpan>>,
    visited: HashSet<*const ReceivedSpan>,
}

impl<'a> Renderer<'a> {
    fn render(&mut self, span: &'a ReceivedSpan, depth: usize) {
        if !self.visited.insert(std::ptr::from_ref(span)) {
            return;
        }
        let offset_ms = millis(span.start_unix_nanos.saturating_sub(self.origin));
        let duration_ms = millis(span.duration_nanos());
        // Writing to a String cannot fail.
        let _ = write!(
            self.out,
            "{:indent$}{} [{}] +{offset_ms:.3} ms {duration_ms:.3} ms",
            "",
            span.name,
            span.service_name,
            indent = depth * 2
        );
        if depth == 0
            && let Some(parent) = &span.parent_span_id
        {
            if self.ids.contains(parent.as_str()) {
                let _ = write!(self.out, " (parent cycle via {parent})");
            } else {
                let _ = write!(self.out, " (orphan: parent {parent} missing)");
            }
        }
        if span.error {
            let _ = write!(self.out, " ERROR: {}", span.status_message);
        }
        self.out.push('\n');
        let kids = self
            .children
            .get(span.span_id.as_str())
            .cloned()
            .unwrap_or_default();
        for child in kids {
            self.render(child, depth + 1);
        }
    }
}

/// Nanoseconds to milliseconds for display; precision loss is irrelevant at that scale.
fn millis(nanos: u64) -> f64 {
    nanos as f64 / 1_000_000.0
}

fn describe(span: &ReceivedSpan) -> String {
    format!("'{}' ({}, {})", span.name, span.span_id, span.service_name)
}
