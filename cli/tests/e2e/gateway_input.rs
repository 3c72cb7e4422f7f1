//! Bad input at the gateway: each bad request's status and problem, nothing on the broker, and
//! a changed price refused with a `price_mismatch` event, at the gateway and at the
//! orchestrator alike.

use crate::gateway::{caller_span, cart, one, post};
use crate::http;
use crate::support::{Options, Stack, receiver, trace_with};
use checkout_harness::ReceivedSpan;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_status_and_problem_and_a_changed_price_is_refused() {
    let stack = Stack::start(Options {
        gateway: true,
        ..Options::default()
    })
    .await;
    let addr = stack.gateway.unwrap();
    let with = |key: &str, value: Value| {
        let mut body = cart(1, 2100);
        body[key] = value;
        body.to_string().into_bytes()
    };
    let mut missing = cart(1, 2100);
    missing.as_object_mut().unwrap().remove("payment_token");
    let json = "application/json";
    let cases: Vec<BadRequest> = vec![
        (
            "text body",
            vec![("Content-Type", "text/plain")],
            cart(1, 2100).to_string().into_bytes(),
            415,
            "unsupported_media_type",
            Some("Content-Type"),
        ),
        (
            "not JSON",
            vec![("Content-Type", json)],
            b"{not json".to_vec(),
            400,
            "syntax",
            None,
        ),
        (
            "too large",
            vec![("Content-Type", json)],
            vec![b' '; 70 * 1024],
            413,
            "too_large",
            None,
        ),
        (
            "missing field",
            vec![("Content-Type", json)],
            missing.to_string().into_bytes(),
            422,
            "malformed",
            Some("payment_token"),
        ),
        (
            "zero quantity",
            vec![("Content-Type", json)],
            with(
                "items",
                json!([{"sku": "SKU-MUG", "quantity": 0, "unit_price_cents": 2100}]),
            ),
            422,
            "invalid",
            Some("items[0].quantity"),
        ),
        (
            "unknown sku",
            vec![("Content-Type", json)],
            with(
                "items",
                json!([{"sku": "SKU-NOPE", "quantity": 1, "unit_price_cents": 2100}]),
            ),
            422,
            "unknown_sku",
            Some("items[0].sku"),
        ),
        (
            "wrong amount",
            vec![("Content-Type", json)],
            with("amount_cents", json!(2000)),
            422,
            "amount_mismatch",
            Some("amount_cents"),
        ),
        (
            "bad key",
            vec![("Content-Type", json), ("Idempotency-Key", "two words")],
            cart(1, 2100).to_string().into_bytes(),
            400,
            "invalid_idempotency_key",
            Some("Idempotency-Key"),
        ),
    ];
    for (name, headers, body, status, reason, field) in cases {
        let response = http::request(addr, "POST", "/checkout", &headers, &body).await;
        assert_eq!(response.status, status, "{name}: {response:?}");
        assert_eq!(
            response.header("content-type"),
            Some("application/problem+json"),
            "{name}"
        );
        let problem = response.json();
        assert_eq!(problem["status"], status, "{name}");
        assert_eq!(problem["reason"], reason, "{name}: {problem}");
        assert!(
            problem["type"].as_str().unwrap().ends_with(reason),
            "{name}: {problem}"
        );
        assert!(!problem["title"].as_str().unwrap().is_empty(), "{name}");
        assert!(!problem["detail"].as_str().unwrap().is_empty(), "{name}");
        assert_eq!(problem["field"].as_str(), field, "{name}: {problem}");
    }

    // A price that changed since the customer saw it: the catalog says 2,100.
    let (traceparent, trace_id, _) = caller_span().await;
    let stale = post(addr, &[("traceparent", &traceparent)], &cart(1, 1999)).await;
    assert_eq!(stale.status, 422, "{stale:?}");
    assert_eq!(stale.json()["reason"], "price_mismatch");
    assert_eq!(stale.json()["field"], "items[0].unit_price_cents");
    let spans = trace_with(&trace_id, "validate checkout").await;
    assert_price_mismatch(one(&spans, "gateway", "validate checkout"));

    let js = async_nats::jetstream::new(stack.admin_client().await);
    let mut requests = js.get_stream("CHECKOUT_REQUESTS").await.unwrap();
    let requests = requests.info().await.unwrap().state.clone();
    assert_eq!(
        requests.last_sequence, 0,
        "no bad request reached the broker"
    );

    // The same stale cart sent straight to the broker is refused by the orchestrator, with
    // the same event on its own validation span.
    let mut body = cart(1, 1999);
    body["checkout_id"] = json!(uuid::Uuid::new_v4());
    let client = stack.client().await;
    let direct = client
        .publish_raw("stale-1".into(), body.to_string().into())
        .await
        .unwrap();
    let spans = trace_with(&direct, "validate checkout").await;
    let validation = one(&spans, "orchestrator", "validate checkout");
    assert_price_mismatch(validation);
    assert_eq!(
        validation.attr("checkout.rejection"),
        Some("price_mismatch")
    );
    assert!(
        receiver()
            .spans()
            .iter()
            .all(|s| s.name != "saga checkout" || s.trace_id != direct)
    );
    stack.stop().await;
}

/// A bad request: name, headers, body, then the status, reason and field it must get.
type BadRequest = (
    &'static str,
    Vec<(&'static str, &'static str)>,
    Vec<u8>,
    u16,
    &'static str,
    Option<&'static str>,
);

fn assert_price_mismatch(validation: &ReceivedSpan) {
    assert!(
        validation.error,
        "the refusal is the validation span's error"
    );
    let event = validation
        .events
        .iter()
        .find(|e| e.name == "price_mismatch")
        .unwrap_or_else(|| panic!("no price_mismatch event: {validation:#?}"));
    assert_eq!(
        event.attributes.get("sku").map(String::as_str),
        Some("SKU-MUG")
    );
    assert_eq!(
        event.attributes.get("expected").map(String::as_str),
        Some("2100")
    );
    assert_eq!(
        event.attributes.get("actual").map(String::as_str),
        Some("1999")
    );
}
