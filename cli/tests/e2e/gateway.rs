//! Through the HTTP gateway, as a browser calls it: the caller's trace continued through every
//! service, Idempotency-Key replays and conflicts (bad input: `gateway_input.rs`).

use crate::http::{self, Response};
use crate::support::{Options, Stack, flush_client_spans, trace_with};
use checkout_harness::trace_check::check_tree;
use checkout_harness::{ReceivedSpan, SpanKind};
use futures::StreamExt;
use opentelemetry::trace::{Span as _, SpanKind as OtelKind, Tracer as _};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;

const TRACESTATE: &str = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";
const BAGGAGE: &str = "tenant=acme";

/// A cart of `quantity` mugs at `price` (the catalog's is 2,100) and the right amount.
pub(crate) fn cart(quantity: i64, price: i64) -> Value {
    json!({
        "customer_id": "cust-http",
        "items": [{"sku": "SKU-MUG", "quantity": quantity, "unit_price_cents": price}],
        "payment_token": "tok_visa",
        "amount_cents": quantity * price,
        "currency": "EUR"
    })
}

/// The caller's span, ended and exported: returns its `traceparent` (sampled).
pub(crate) async fn caller_span() -> (String, String, String) {
    let tracer = opentelemetry::global::tracer("browser");
    let mut span = tracer
        .span_builder("checkout button")
        .with_kind(OtelKind::Client)
        .start(&tracer);
    let sc = span.span_context().clone();
    span.end();
    flush_client_spans().await;
    let (trace, id) = (sc.trace_id().to_string(), sc.span_id().to_string());
    (format!("00-{trace}-{id}-01"), trace, id)
}

pub(crate) async fn post(addr: SocketAddr, headers: &[(&str, &str)], body: &Value) -> Response {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    http::request(addr, "POST", "/checkout", &all, body.to_string().as_bytes()).await
}

pub(crate) fn one<'a>(spans: &'a [ReceivedSpan], service: &str, name: &str) -> &'a ReceivedSpan {
    let found: Vec<_> = spans
        .iter()
        .filter(|s| s.service_name == service && s.name == name)
        .collect();
    assert_eq!(found.len(), 1, "one {name:?} from {service}: {found:#?}");
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_through_the_gateway_continues_the_callers_trace_through_every_service() {
    let stack = Stack::start(Options {
        gateway: true,
        ..Options::default()
    })
    .await;
    let addr = stack.gateway.unwrap();
    let nats = stack.admin_client().await;
    let mut requested = nats.subscribe("checkout.requested").await.unwrap();
    nats.flush().await.unwrap();
    let (traceparent, trace_id, caller_id) = caller_span().await;
    let headers = [
        ("traceparent", traceparent.as_str()),
        ("tracestate", TRACESTATE),
        ("baggage", BAGGAGE),
    ];
    let response = post(addr, &headers, &cart(2, 2100)).await;
    assert_eq!(response.status, 202, "{response:?}");
    let accepted = response.json();
    assert_eq!(accepted["trace_id"], trace_id, "the caller's trace goes on");
    let saga_id = accepted["saga_id"].as_str().unwrap().to_owned();
    assert_eq!(accepted["status_url"], format!("/checkouts/{saga_id}"));

    let message = tokio::time::timeout(Duration::from_secs(10), requested.next())
        .await
        .unwrap()
        .unwrap();
    let header = |name: &str| {
        message
            .headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default()
    };
    assert!(
        header("traceparent").contains(&trace_id),
        "{}",
        header("traceparent")
    );
    assert_eq!(header("tracestate"), TRACESTATE, "tracestate reaches NATS");
    assert!(header("baggage").contains(BAGGAGE), "{}", header("baggage"));
    assert_eq!(header("Nats-Msg-Id"), saga_id);

    let events = http::events(
        addr,
        &format!("/checkouts/{saga_id}/events"),
        Duration::from_secs(60),
    )
    .await;
    let kinds: Vec<&str> = events.iter().map(|(kind, _)| kind.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"started"), "{kinds:?}");
    assert!(kinds.contains(&"completed"), "{kinds:?}");
    // Every step the saga ran, the confirmation after `completed` included, in the steps'
    // one spelling; the stream ends with the confirmation's reply.
    let steps: Vec<String> = events
        .iter()
        .filter(|(kind, _)| kind == "step")
        .map(|(_, data)| {
            let data: Value = serde_json::from_str(data).unwrap();
            data["step"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        steps,
        ["inventory", "payment", "order", "notification"],
        "{kinds:?}"
    );
    assert_eq!(
        events.last().map(|(kind, _)| kind.as_str()),
        Some("step"),
        "the stream ends with the confirmation: {kinds:?}"
    );

    let status = http::request(addr, "GET", &format!("/checkouts/{saga_id}"), &[], b"").await;
    assert_eq!(status.status, 200);
    let status = status.json();
    assert_eq!(status["state"], "completed");
    assert_eq!(status["trace_id"], trace_id);
    // Its confirmation's reply came (the event stream ended with it): nothing in hand.
    assert_eq!(status["current_step"], Value::Null, "{status}");
    let outcomes: Vec<(&str, &str)> = status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["step"].as_str().unwrap(), s["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("inventory", "succeeded"),
            ("payment", "succeeded"),
            ("order", "succeeded"),
            ("notification", "succeeded")
        ]
    );

    // Whole through every service, the confirmation included (its span ends last).
    let spans = trace_with(&trace_id, "step notification.send").await;
    let problems = check_tree(&spans);
    assert!(problems.is_empty(), "trace is not whole: {problems:#?}");
    let root: Vec<_> = spans
        .iter()
        .filter(|s| s.parent_span_id.is_none())
        .collect();
    assert_eq!(root[0].span_id, caller_id, "the caller's span is the root");
    let server = one(&spans, "gateway", "POST /checkout");
    assert_eq!(server.kind, SpanKind::Server);
    assert_eq!(server.parent_span_id.as_deref(), Some(caller_id.as_str()));
    assert_eq!(server.attr("http.request.method"), Some("POST"));
    assert_eq!(server.attr("http.route"), Some("/checkout"));
    assert_eq!(server.attr("url.path"), Some("/checkout"));
    assert_eq!(server.attr("http.response.status_code"), Some("202"));
    let publish = one(&spans, "gateway", "publish checkout.requested");
    assert_eq!(publish.parent_span_id.as_ref(), Some(&server.span_id));
    let saga = one(&spans, "orchestrator", "saga checkout started");
    assert_eq!(
        saga.parent_span_id.as_ref(),
        Some(&publish.span_id),
        "the saga hangs below"
    );
    for service in [
        "gateway",
        "orchestrator",
        "inventory",
        "payment",
        "order",
        "notification",
    ] {
        assert!(
            spans.iter().any(|s| s.service_name == service),
            "no span from {service}"
        );
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_is_one_saga_across_replays_restarts_and_gateways() {
    let mut stack = Stack::start(Options {
        gateway: true,
        ..Options::default()
    })
    .await;
    let addr = stack.gateway.unwrap();
    let key = [("Idempotency-Key", "order-7f3a")];
    let first = post(addr, &key, &cart(1, 2100)).await;
    assert_eq!(first.status, 202, "{first:?}");
    let first = first.json();
    assert_eq!(first["replayed"], false);
    // The same cart, spelled differently (key order, spacing): the same body.
    let respelled = r#"{ "currency": "EUR", "amount_cents": 2100, "payment_token": "tok_visa",
        "items": [{"unit_price_cents": 2100, "quantity": 1, "sku": "SKU-MUG"}],
        "customer_id": "cust-http" }"#;
    let all = [("Content-Type", "application/json"), key[0]];
    let again = http::request(addr, "POST", "/checkout", &all, respelled.as_bytes()).await;
    assert_eq!(again.status, 202, "{again:?}");
    let again = again.json();
    assert_eq!(again["saga_id"], first["saga_id"]);
    assert_eq!(
        again["trace_id"], first["trace_id"],
        "the saga's trace, not the replay's"
    );
    assert_eq!(again["replayed"], true);

    let conflict = post(addr, &key, &cart(2, 2100)).await;
    assert_eq!(conflict.status, 409, "{conflict:?}");
    assert_eq!(
        conflict.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(conflict.json()["reason"], "idempotency_key_reused");
    assert_eq!(conflict.json()["field"], "Idempotency-Key");

    stack
        .service("gateway")
        .terminate(Duration::from_secs(20))
        .unwrap();
    stack.service("gateway").restart().unwrap();
    stack.wait_ready(addr).await;
    let after_restart = post(addr, &key, &cart(1, 2100)).await;
    assert_eq!(after_restart.status, 202, "{after_restart:?}");
    assert_eq!(after_restart.json()["saga_id"], first["saga_id"]);
    assert_eq!(
        post(addr, &key, &cart(3, 2100)).await.status,
        409,
        "after a restart"
    );

    let other = stack.spawn_gateway("gateway-2").await;
    let elsewhere = post(other, &key, &cart(1, 2100)).await;
    assert_eq!(elsewhere.status, 202, "{elsewhere:?}");
    assert_eq!(
        elsewhere.json()["saga_id"],
        first["saga_id"],
        "another gateway"
    );
    assert_eq!(
        post(other, &key, &cart(2, 2100)).await.status,
        409,
        "another gateway"
    );

    let saga_id: uuid::Uuid = first["saga_id"].as_str().unwrap().parse().unwrap();
    let events = http::events(
        addr,
        &format!("/checkouts/{saga_id}/events"),
        Duration::from_secs(60),
    )
    .await;
    // The stream ends with the confirmation's reply, which follows `completed`.
    assert!(events.iter().any(|(k, _)| k == "completed"), "{events:?}");
    assert_eq!(
        events.last().map(|(k, _)| k.as_str()),
        Some("step"),
        "{events:?}"
    );
    let sagas: i64 = sqlx::query_scalar("SELECT count(*) FROM saga.sagas")
        .fetch_one(&stack.pool)
        .await
        .unwrap();
    assert_eq!(sagas, 1, "one key, one saga");
    assert_eq!(
        stack.ledger(saga_id).await,
        vec![("charge".into(), 2100)],
        "charged once"
    );
    stack.stop().await;
}
