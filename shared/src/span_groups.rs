//! Exports the spans a process makes for one message together, or not at all.
//!
//! A child span (a database call) ends before its parent (the `process` span). Exported as
//! they end, a process killed in between would leave the child exported and its parent lost:
//! an orphan that breaks the trace. [`GroupedExport`] holds every span whose parent is local
//! until the span at the top of its local tree (whose parent is remote, or absent) ends, and
//! hands the whole group to the exporter at once.

use opentelemetry::Context;
use opentelemetry::trace::{SpanId, TraceContextExt};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Spans held back at most; past this (a leak: a local root that never ends) they are
/// released rather than grow without bound.
const MAX_HELD: usize = 100_000;

#[derive(Debug, Default)]
struct Groups {
    /// Each started span's local root.
    root_of: HashMap<SpanId, SpanId>,
    /// Finished spans waiting for their local root.
    held: HashMap<SpanId, Vec<SpanData>>,
    held_count: usize,
}

/// A span processor that releases spans to `inner` one local tree at a time.
#[derive(Debug)]
pub struct GroupedExport<P> {
    inner: P,
    groups: Mutex<Groups>,
}

impl<P: SpanProcessor> GroupedExport<P> {
    /// Wraps `inner` (typically the batch processor).
    pub fn new(inner: P) -> Self {
        GroupedExport {
            inner,
            groups: Mutex::new(Groups::default()),
        }
    }
}

impl<P: SpanProcessor> SpanProcessor for GroupedExport<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        use opentelemetry::trace::Span as _;
        let id = span.span_context().span_id();
        let parent = cx.span().span_context().clone();
        if let Ok(mut groups) = self.groups.lock() {
            // A parent no longer tracked has ended (a `send failed` marker under a producer
            // span that was exported before its message left): there is nothing left to wait
            // for, so the span is a tree of its own. Held under the ended parent, it would
            // wait forever.
            let root = if parent.is_valid() && !parent.is_remote() {
                groups.root_of.get(&parent.span_id()).copied().unwrap_or(id)
            } else {
                id
            };
            groups.root_of.insert(id, root);
        }
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        let id = span.span_context.span_id();
        let release = {
            let Ok(mut groups) = self.groups.lock() else {
                self.inner.on_end(span);
                return;
            };
            let root = groups.root_of.remove(&id).unwrap_or(id);
            if root != id {
                groups.held.entry(root).or_default().push(span);
                groups.held_count += 1;
                if groups.held_count > MAX_HELD {
                    groups.held_count = 0;
                    groups.held.drain().flat_map(|(_, spans)| spans).collect()
                } else {
                    Vec::new()
                }
            } else {
                let mut group = groups.held.remove(&id).unwrap_or_default();
                groups.held_count = groups.held_count.saturating_sub(group.len());
                group.push(span);
                group
            }
        };
        for span in release {
            self.inner.on_end(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        // Whatever is still held belongs to trees that will never finish: send it anyway.
        let held: Vec<SpanData> = self
            .groups
            .lock()
            .map(|mut g| g.held.drain().flat_map(|(_, spans)| spans).collect())
            .unwrap_or_default();
        for span in held {
            self.inner.on_end(span);
        }
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{Tracer, TracerProvider as _};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SimpleSpanProcessor};

    #[test]
    fn children_wait_for_their_local_root() {
        let exporter = InMemorySpanExporter::default();
        let processor = GroupedExport::new(SimpleSpanProcessor::new(exporter.clone()));
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .build();
        let tracer = provider.tracer("test");
        let names = || -> Vec<String> {
            exporter
                .get_finished_spans()
                .unwrap()
                .iter()
                .map(|s| s.name.to_string())
                .collect()
        };
        tracer.in_span("process", |cx| {
            let mut child = tracer.start_with_context("db", &cx);
            opentelemetry::trace::Span::end(&mut child);
            assert!(
                names().iter().all(|n| n != "db"),
                "held while its root runs: {:?}",
                names()
            );
        });
        let exported = names();
        assert!(exported.contains(&"db".to_owned()) && exported.contains(&"process".to_owned()));
    }

    #[test]
    fn a_span_started_under_an_ended_local_span_is_not_held_forever() {
        let exporter = InMemorySpanExporter::default();
        let processor = GroupedExport::new(SimpleSpanProcessor::new(exporter.clone()));
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .build();
        let tracer = provider.tracer("test");
        let producer = tracer.start("publish");
        let cx = Context::current_with_span(producer);
        cx.span().end();
        let mut marker = tracer.start_with_context("send failed", &cx);
        opentelemetry::trace::Span::end(&mut marker);
        let names: Vec<String> = exporter
            .get_finished_spans()
            .unwrap()
            .iter()
            .map(|s| s.name.to_string())
            .collect();
        assert_eq!(names, ["publish", "send failed"]);
    }
}
