//! The OTLP receiver: spans from the SDK exporter and raw requests.

use super::*;

/// The SDK's batch processor exports from its own thread through tonic, which needs the Tokio
/// runtime to keep running; hence the multi-threaded test runtime and `spawn_blocking`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_receiver_gets_parent_and_child_from_sdk_exporter() {
    let receiver = OtlpReceiver::start().await.expect("start receiver");
    assert!(receiver.endpoint().starts_with("http://127.0.0.1:"));

    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(receiver.endpoint())
        .build()
        .expect("build exporter");
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("harness-test")
                .build(),
        )
        .with_batch_exporter(exporter)
        .build();
    let tracer = provider.tracer("harness-test");

    let parent = tracer
        .span_builder("checkout")
        .with_kind(OtelKind::Server)
        .start(&tracer);
    let parent_cx = Context::current_with_span(parent);
    let mut child = tracer
        .span_builder("reserve-stock")
        .with_kind(OtelKind::Client)
        .start_with_context(&tracer, &parent_cx);
    child.set_attribute(KeyValue::new("order.items", 3_i64));
    child.set_attribute(KeyValue::new("retry", true));
    child.set_attribute(KeyValue::new("sku", "A-1"));
    child.set_status(Status::error("out of stock"));
    child.end();
    parent_cx.span().end();

    tokio::task::spawn_blocking(move || provider.shutdown())
        .await
        .expect("join flush")
        .expect("flush and shut down provider");

    assert!(
        receiver.wait_for(WAIT, |spans| spans.len() >= 2).await,
        "spans did not arrive"
    );
    let spans = receiver.spans();
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let parent = find(&spans, "checkout");
    let child = find(&spans, "reserve-stock");

    assert_eq!(parent.trace_id.len(), 32);
    assert_eq!(parent.span_id.len(), 16);
    assert!(
        parent
            .trace_id
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    assert_eq!(child.trace_id, parent.trace_id);
    assert_eq!(parent.parent_span_id, None);
    assert_eq!(
        child.parent_span_id.as_deref(),
        Some(parent.span_id.as_str())
    );
    assert_eq!(parent.kind, SpanKind::Server);
    assert_eq!(child.kind, SpanKind::Client);
    assert_eq!(parent.service_name, "harness-test");
    assert_eq!(child.service_name, "harness-test");
    assert_eq!(child.attr("order.items"), Some("3"));
    assert_eq!(child.attr("retry"), Some("true"));
    assert_eq!(child.attr("sku"), Some("A-1"));
    assert!(child.error);
    assert_eq!(child.status_message, "out of stock");
    assert!(!parent.error);
    assert!(parent.start_unix_nanos <= child.start_unix_nanos);
    assert!(child.end_unix_nanos <= parent.end_unix_nanos);

    assert_eq!(receiver.trace(&parent.trace_id).len(), 2);
    assert!(
        receiver
            .trace("00000000000000000000000000000000")
            .is_empty()
    );
    assert_eq!(check_tree(&spans), Vec::<String>::new());

    let rendered = render_tree(&spans);
    let lines: Vec<&str> = rendered.lines().collect();
    assert_eq!(lines.len(), 2, "{rendered}");
    assert!(
        lines[0].starts_with("checkout [harness-test]"),
        "{rendered}"
    );
    assert!(
        lines[1].starts_with("  reserve-stock [harness-test]"),
        "{rendered}"
    );
    assert!(lines[1].ends_with("ERROR: out of stock"), "{rendered}");

    receiver.clear();
    assert!(receiver.spans().is_empty());
}

fn find<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    spans
        .iter()
        .find(|span| span.name == name)
        .unwrap_or_else(|| panic!("no span {name}"))
}

fn proto_attr(key: &str, value: Value) -> common::KeyValue {
    common::KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn proto_span(span_id: u8, parent: &[u8], kind: proto::span::SpanKind) -> proto::Span {
    proto::Span {
        trace_id: vec![0xab; 16],
        span_id: vec![span_id; 8],
        parent_span_id: parent.to_vec(),
        name: format!("span-{span_id}"),
        kind: kind as i32,
        start_time_unix_nano: 1_000,
        end_time_unix_nano: 3_000_000,
        ..Default::default()
    }
}

/// Sends a hand-built request so every conversion rule is pinned down independently of what
/// the SDK happens to emit.
#[tokio::test]
async fn otlp_receiver_flattens_raw_requests_and_caps_storage() {
    let receiver = OtlpReceiver::start().await.expect("start receiver");
    let mut client = TraceServiceClient::connect(receiver.endpoint())
        .await
        .expect("connect to receiver");

    let mut consumer = proto_span(2, &[1; 8], proto::span::SpanKind::Consumer);
    consumer.attributes = vec![
        proto_attr("int", Value::IntValue(-42)),
        proto_attr("bool", Value::BoolValue(false)),
        proto_attr("str", Value::StringValue("raw text".to_owned())),
        proto_attr("bytes", Value::BytesValue(vec![0x0f, 0xa0])),
    ];
    consumer.links = vec![proto::span::Link {
        trace_id: vec![0x01; 16],
        span_id: vec![0x02; 8],
        ..Default::default()
    }];
    consumer.status = Some(proto::Status {
        message: "bad".to_owned(),
        code: proto::status::StatusCode::Error as i32,
    });
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![proto_attr(
                    "service.name",
                    Value::StringValue("orchestrator".to_owned()),
                )],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![
                    proto_span(1, &[], proto::span::SpanKind::Producer),
                    consumer,
                    // All-zero parent bytes also mean "root" for some exporters.
                    proto_span(3, &[0; 8], proto::span::SpanKind::Unspecified),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    client.export(request.clone()).await.expect("export");

    let spans = receiver.spans();
    assert_eq!(spans.len(), 3);
    let producer = &spans[0];
    let consumer = &spans[1];
    assert_eq!(producer.trace_id, "ab".repeat(16));
    assert_eq!(producer.span_id, "01".repeat(8));
    assert_eq!(producer.parent_span_id, None);
    assert_eq!(producer.kind, SpanKind::Producer);
    assert_eq!(producer.service_name, "orchestrator");
    assert_eq!(consumer.kind, SpanKind::Consumer);
    assert_eq!(consumer.parent_span_id.as_deref(), Some("0101010101010101"));
    let expected: BTreeMap<String, String> = [
        ("bool", "false"),
        ("bytes", "0fa0"),
        ("int", "-42"),
        ("str", "raw text"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(consumer.attributes, expected);
    assert_eq!(consumer.links, vec![("01".repeat(16), "02".repeat(8))]);
    assert!(consumer.error);
    assert_eq!(consumer.status_message, "bad");
    assert_eq!(consumer.duration_nanos(), 2_999_000);
    assert_eq!(spans[2].parent_span_id, None);
    assert_eq!(spans[2].kind, SpanKind::Unspecified);
    assert_eq!(receiver.dropped(), 0);
    let json = serde_json::to_value(consumer).expect("serialize span");
    assert_eq!(json["kind"], "Consumer");

    receiver.set_capacity(4);
    client.export(request).await.expect("export over capacity");
    assert_eq!(receiver.spans().len(), 4);
    assert_eq!(receiver.dropped(), 2);

    let endpoint = receiver.endpoint();
    receiver.shutdown().await;
    let reconnect = TraceServiceClient::connect(endpoint).await;
    assert!(reconnect.is_err(), "port must be closed after shutdown");
}

#[tokio::test]
async fn otlp_wait_for_times_out() {
    let receiver = OtlpReceiver::start().await.expect("start receiver");
    let started = std::time::Instant::now();
    assert!(
        !receiver
            .wait_for(Duration::from_millis(200), |spans| !spans.is_empty())
            .await
    );
    assert!(started.elapsed() >= Duration::from_millis(200));
}

// ---------------------------------------------------------------------------------------------
// trace_check
