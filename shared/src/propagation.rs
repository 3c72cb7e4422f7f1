//! W3C trace context (`traceparent`, `tracestate`) and `baggage` in NATS headers.

use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapCompositePropagator};
use opentelemetry::{Context, global};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};

/// Installs the W3C trace-context and baggage propagators globally.
pub fn install_propagators() {
    global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ]));
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // W3C names are lowercase; NATS headers are case-sensitive, so keep them as given.
        self.0.insert(key, value);
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_ref()).collect()
    }
}

/// Writes `cx`'s span context and baggage into `headers`.
pub fn inject(cx: &Context, headers: &mut HeaderMap) {
    global::get_text_map_propagator(|p| p.inject_context(cx, &mut HeaderInjector(headers)));
}

/// Reads the remote parent context from `headers` (an empty context when there is none).
pub fn extract(headers: Option<&HeaderMap>) -> Context {
    match headers {
        Some(headers) => global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers))),
        None => Context::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };

    #[test]
    fn a_span_context_survives_the_headers() {
        install_propagators();
        let sc = SpanContext::new(
            TraceId::from(0x0af7651916cd43dd8448eb211c80319c_u128),
            SpanId::from(0xb7ad6b7169203331_u64),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        let mut headers = HeaderMap::new();
        inject(
            &Context::new().with_remote_span_context(sc.clone()),
            &mut headers,
        );
        assert_eq!(
            headers.get("traceparent").map(|v| v.as_str()),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        let cx = extract(Some(&headers));
        assert_eq!(cx.span().span_context().trace_id(), sc.trace_id());
        assert_eq!(cx.span().span_context().span_id(), sc.span_id());
        assert!(cx.span().span_context().is_remote());
    }
}
