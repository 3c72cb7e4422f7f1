//! A checkout the gateway accepted has a status at once, on every gateway: `accepted` until
//! the orchestrator's first lifecycle event, then the saga's; never `404`.

use crate::gateway::post;
use crate::http;
use crate::support::{Options, Stack};
use serde_json::{Value, json};
use std::time::Duration;

/// The README's cart, priced as this stack's catalog prices it.
fn readme_cart() -> Value {
    json!({
        "customer_id": "cust-ada", "payment_token": "tok_visa", "currency": "EUR",
        "items": [{"sku": "SKU-MUG", "quantity": 2, "unit_price_cents": 1299},
                  {"sku": "SKU-CAP", "quantity": 1, "unit_price_cents": 1799}],
        "amount_cents": 4397
    })
}

/// The README's catalog: what the carts above (and the OpenAPI document's example) buy.
pub(crate) const README_STOCK: &str = "SKU-MUG=1000000@1299,SKU-CAP=1000000@1799";

async fn get(addr: std::net::SocketAddr, path: &str) -> http::Response {
    http::request(addr, "GET", path, &[], b"").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_checkout_answers_at_once_on_every_gateway_and_never_404() {
    let mut stack = Stack::start(Options {
        gateway: true,
        seed_stock: README_STOCK.into(),
        ..Options::default()
    })
    .await;
    let (one, two) = (
        stack.gateway.unwrap(),
        stack.spawn_gateway("gateway-2").await,
    );

    // With no orchestrator, no saga starts: only the gateway knows the checkout.
    stack
        .service("orchestrator")
        .terminate(Duration::from_secs(20))
        .unwrap();
    let accepted = post(one, &[], &readme_cart()).await;
    assert_eq!(accepted.status, 202, "{accepted:?}");
    let location = accepted.header("location").unwrap().to_owned();
    let trace_id = accepted.json()["trace_id"].clone();
    for addr in [one, two] {
        let status = get(addr, &location).await;
        assert_eq!(status.status, 200, "{addr}: {status:?}");
        assert_eq!(status.header("content-type"), Some("application/json"));
        let status = status.json();
        assert_eq!(status["state"], "accepted", "{status}");
        assert_eq!(status["trace_id"], trace_id);
        assert_eq!(status["steps"], json!([]));
        assert_eq!(status["current_step"], Value::Null);
    }
    // Its event stream waits for the saga rather than refusing it.
    let waiting = http::events(two, &format!("{location}/events"), Duration::from_secs(1)).await;
    assert!(waiting.is_empty(), "{waiting:?}");

    // What no gateway accepted is not found, on the status and the event stream alike.
    let unknown = format!("/checkouts/{}", uuid::Uuid::new_v4());
    for path in [unknown.clone(), format!("{unknown}/events")] {
        let missing = get(two, &path).await;
        assert_eq!(missing.status, 404, "{path}: {missing:?}");
        assert_eq!(
            missing.header("content-type"),
            Some("application/problem+json")
        );
        assert_eq!(missing.json()["reason"], "not_found");
    }

    // The orchestrator back, the saga starts and ends; the status follows it.
    stack.service("orchestrator").restart().unwrap();
    let events = http::events(one, &format!("{location}/events"), Duration::from_secs(60)).await;
    // It ends with the confirmation's reply, which follows `completed`.
    assert!(
        events.iter().any(|(kind, _)| kind == "completed"),
        "{events:?}"
    );
    assert_eq!(
        events.last().map(|(kind, _)| kind.as_str()),
        Some("step"),
        "{events:?}"
    );
    assert_eq!(get(two, &location).await.json()["state"], "completed");

    // Running, every checkout read right after its 202, on the other gateway: never a 404.
    for i in 0..20 {
        let (to, from) = if i % 2 == 0 { (one, two) } else { (two, one) };
        let accepted = post(to, &[], &readme_cart()).await;
        assert_eq!(accepted.status, 202, "{accepted:?}");
        let status = get(from, accepted.header("location").unwrap()).await;
        assert_eq!(status.status, 200, "read {i}: {status:?}");
        let state = status.json()["state"].as_str().unwrap().to_owned();
        assert!(
            ["accepted", "running", "completed"].contains(&state.as_str()),
            "{state}"
        );
    }
    stack.stop().await;
}
