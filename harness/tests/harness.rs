//! Integration tests for the harness against the real dependencies: nats-server, PostgreSQL,
//! tonic/OTLP and Unix processes. Each test owns its resources, so they run in parallel.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use async_nats::jetstream;
use checkout_harness::trace_check::{check_tree, render_tree};
use checkout_harness::{NatsServer, OtlpReceiver, ReceivedSpan, Service, SpanKind, TestDb};
use opentelemetry::trace::{
    Span as _, SpanKind as OtelKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{self as common, AnyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{self as proto, ResourceSpans, ScopeSpans};
use sqlx::Connection as _;

const WAIT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// NATS

#[tokio::test]
async fn nats_stream_survives_kill_and_restart() {
    let mut nats = NatsServer::start().expect("start nats-server");
    assert!(nats.is_running());
    assert_eq!(nats.url(), format!("nats://127.0.0.1:{}", nats.port()));
    let store = nats.store_dir().to_path_buf();
    assert!(store.is_dir());

    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = jetstream::new(client.clone());
    js.create_stream(jetstream::stream::Config {
        name: "ORDERS".to_owned(),
        subjects: vec!["orders.>".to_owned()],
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .expect("create stream");
    js.publish("orders.1", "hello".into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    drop(js);
    drop(client);
    // No pause before the kill: an acknowledged message must already be in the store files
    // (the page cache survives SIGKILL), which is exactly what crash tests rely on.

    let port = nats.port();
    nats.kill();
    assert!(!nats.is_running());
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "port must be closed after kill"
    );

    nats.restart().expect("restart nats-server");
    assert!(nats.is_running());
    assert_eq!(nats.port(), port, "restart keeps the port");
    assert_eq!(nats.store_dir(), store, "restart keeps the store");

    let js = jetstream::new(async_nats::connect(nats.url()).await.expect("reconnect"));
    let mut stream = js
        .get_stream("ORDERS")
        .await
        .expect("stream recovered from store");
    assert_eq!(stream.info().await.expect("stream info").state.messages, 1);
    let message = stream.get_raw_message(1).await.expect("message 1");
    assert_eq!(&message.payload[..], b"hello");
    assert_eq!(message.subject.as_str(), "orders.1");

    drop(nats);
    assert!(!store.exists(), "dropping the server removes its store");
}

#[tokio::test]
async fn nats_async_start_and_restart() {
    let mut nats = NatsServer::start_async().await.expect("start nats-server");
    let log = nats.log_path().to_path_buf();
    nats.restart_async().await.expect("restart while running");
    assert!(nats.is_running());
    async_nats::connect(nats.url())
        .await
        .expect("connect after restart");
    assert!(log.is_file(), "server output goes to the log file");
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

fn admin_url() -> String {
    std::env::var(checkout_harness::db::DATABASE_ADMIN_URL_ENV)
        .unwrap_or_else(|_| checkout_harness::db::DEFAULT_ADMIN_URL.to_owned())
}

async fn database_exists(name: &str) -> bool {
    let mut admin = sqlx::PgConnection::connect(&admin_url())
        .await
        .expect("admin connection");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_one(&mut admin)
        .await
        .expect("query pg_database");
    count == 1
}

#[tokio::test]
async fn test_db_create_and_drop() {
    let db = TestDb::create().await.expect("create database");
    let name = db.name().to_owned();
    assert!(
        name.starts_with("checkout_") && name.len() == "checkout_".len() + 12,
        "{name}"
    );
    assert!(db.url().ends_with(&format!("/{name}")), "{}", db.url());
    assert!(database_exists(&name).await);

    // The URL must point at the new database, and an open session must not block the drop.
    let mut conn = sqlx::PgConnection::connect(&db.url())
        .await
        .expect("connect to test db");
    let current: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut conn)
        .await
        .expect("current_database");
    assert_eq!(current, name);

    db.drop_db().await.expect("drop database");
    assert!(
        !database_exists(&name).await,
        "{name} still exists after drop_db"
    );
}

#[tokio::test]
async fn test_db_is_dropped_on_drop_and_kept_on_keep() {
    let dropped = TestDb::create().await.expect("create database");
    let dropped_name = dropped.name().to_owned();
    drop(dropped);
    assert!(
        !database_exists(&dropped_name).await,
        "Drop must remove {dropped_name}"
    );

    let kept = TestDb::create().await.expect("create database");
    let kept_name = kept.name().to_owned();
    kept.keep();
    assert!(
        database_exists(&kept_name).await,
        "keep must leave {kept_name}"
    );
    let mut admin = sqlx::PgConnection::connect(&admin_url())
        .await
        .expect("admin connection");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE \"{kept_name}\" WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .expect("clean up kept database");
}

// ---------------------------------------------------------------------------------------------
// OTLP receiver

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

fn span(id: &str, parent: Option<&str>, trace: &str) -> ReceivedSpan {
    ReceivedSpan {
        trace_id: trace.to_owned(),
        span_id: id.to_owned(),
        parent_span_id: parent.map(str::to_owned),
        name: format!("op-{id}"),
        kind: SpanKind::Internal,
        service_name: "svc".to_owned(),
        attributes: BTreeMap::new(),
        error: false,
        status_message: String::new(),
        start_unix_nanos: 0,
        end_unix_nanos: 1_000_000,
        links: Vec::new(),
        events: Vec::new(),
    }
}

#[test]
fn check_tree_accepts_a_whole_tree() {
    let spans = [
        span("a", None, "t"),
        span("b", Some("a"), "t"),
        span("c", Some("b"), "t"),
    ];
    assert_eq!(check_tree(&spans), Vec::<String>::new());
}

#[test]
fn check_tree_finds_missing_parent() {
    let spans = [span("a", None, "t"), span("b", Some("lost"), "t")];
    let problems = check_tree(&spans);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("parent lost"), "{problems:?}");
}

#[test]
fn check_tree_finds_two_roots() {
    let spans = [span("a", None, "t"), span("b", None, "t")];
    let problems = check_tree(&spans);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("exactly one root span, found 2"),
        "{problems:?}"
    );
}

#[test]
fn check_tree_finds_duplicates_foreign_traces_and_no_root() {
    let spans = [
        span("a", Some("b"), "t1"),
        span("b", Some("a"), "t2"),
        span("b", Some("a"), "t1"),
    ];
    let problems = check_tree(&spans);
    assert!(
        problems.iter().any(|p| p.contains("2 traces")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("found 0")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("span id b appears 2 times")),
        "{problems:?}"
    );
    assert_eq!(check_tree(&[]), vec!["no spans to check".to_owned()]);
    // Cycles must not hang or lose spans in the rendering.
    assert_eq!(render_tree(&spans).lines().count(), 3);
}

#[test]
fn render_tree_orders_children_by_start_and_marks_orphans() {
    let mut late = span("late", Some("root"), "t");
    late.start_unix_nanos = 500_000;
    let mut early = span("early", Some("root"), "t");
    early.start_unix_nanos = 100_000;
    let root = span("root", None, "t");
    let orphan = span("orphan", Some("gone"), "t");
    let rendered = render_tree(&[late, orphan, early, root]);
    let lines: Vec<&str> = rendered.lines().collect();
    assert_eq!(lines.len(), 4, "{rendered}");
    assert!(lines[0].starts_with("op-orphan [svc]") || lines[0].starts_with("op-root [svc]"));
    assert!(rendered.contains("op-orphan [svc] +0.000 ms 1.000 ms (orphan: parent gone missing)"));
    let root_line = lines
        .iter()
        .position(|l| l.starts_with("op-root"))
        .expect("root line");
    assert!(
        lines[root_line + 1].starts_with("  op-early [svc] +0.100 ms"),
        "{rendered}"
    );
    assert!(
        lines[root_line + 2].starts_with("  op-late [svc] +0.500 ms"),
        "{rendered}"
    );
}

// ---------------------------------------------------------------------------------------------
// Service

fn sh(script: &str) -> Vec<String> {
    vec!["-c".to_owned(), script.to_owned()]
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).expect("read log")
}

#[test]
fn service_terminate_restart_and_kill() {
    let logs = tempfile::tempdir().expect("tempdir");
    let script = "echo started $GREETING; trap 'echo bye; exit 7' TERM; \
                  while true; do sleep 0.05; done";
    let env = [("GREETING".to_owned(), "hi".to_owned())];
    let mut service = Service::spawn(
        "worker",
        Path::new("/bin/sh"),
        &sh(script),
        &env,
        logs.path(),
    )
    .expect("spawn");
    assert_eq!(service.name(), "worker");
    assert!(service.is_running());
    let first_pid = service.pid().expect("pid");
    // Let the shell install its trap before signalling it.
    wait_for_log(service.log_path(), "started hi", 1);

    let code = service
        .terminate(Duration::from_secs(5))
        .expect("terminate");
    assert_eq!(code, Some(7), "SIGTERM handler's exit code");
    assert!(!service.is_running());
    assert_eq!(service.pid(), None);

    service.restart().expect("restart");
    assert!(service.is_running());
    assert_ne!(service.pid(), Some(first_pid));
    wait_for_log(service.log_path(), "started hi", 2);
    let log = read(service.log_path());
    assert_eq!(
        log.matches("=== harness: starting worker").count(),
        2,
        "{log}"
    );
    assert!(log.contains("bye"), "{log}");

    service.kill();
    assert!(!service.is_running());
    assert!(process_gone(first_pid));
}

#[test]
fn service_terminate_escalates_to_sigkill() {
    let logs = tempfile::tempdir().expect("tempdir");
    let script = "trap '' TERM; echo ready; while true; do sleep 0.05; done";
    let mut service = Service::spawn(
        "stubborn",
        Path::new("/bin/sh"),
        &sh(script),
        &[],
        logs.path(),
    )
    .expect("spawn");
    wait_for_log(service.log_path(), "ready", 1);
    let pid = service.pid().expect("pid");
    let code = service
        .terminate(Duration::from_millis(300))
        .expect("terminate");
    assert_eq!(code, None, "killed by SIGKILL has no exit code");
    assert!(process_gone(pid));
}

#[test]
fn service_drop_kills_and_exit_is_noticed() {
    let logs = tempfile::tempdir().expect("tempdir");
    let service = Service::spawn(
        "sleeper",
        Path::new("/bin/sleep"),
        &["30".to_owned()],
        &[],
        logs.path(),
    )
    .expect("spawn");
    let pid = service.pid().expect("pid");
    drop(service);
    assert!(process_gone(pid));

    let mut quick =
        Service::spawn("quick", Path::new("/bin/true"), &[], &[], logs.path()).expect("spawn");
    let deadline = std::time::Instant::now() + WAIT;
    while quick.is_running() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!quick.is_running());

    let missing = Service::spawn(
        "missing",
        Path::new("/nonexistent/bin"),
        &[],
        &[],
        logs.path(),
    );
    let message = format!(
        "{:#}",
        missing.expect_err("spawning a missing binary must fail")
    );
    assert!(message.contains("/nonexistent/bin"), "{message}");
}

fn wait_for_log(path: &Path, needle: &str, count: usize) {
    let deadline = std::time::Instant::now() + WAIT;
    while read(path).matches(needle).count() < count {
        assert!(
            std::time::Instant::now() < deadline,
            "log never showed {needle:?} x{count}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// True when no process (not even a zombie) has this pid any more, i.e. it was reaped.
fn process_gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}
