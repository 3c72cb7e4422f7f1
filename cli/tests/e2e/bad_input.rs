//! Bad input at the door: each is rejected with its reason, and the next checkout completes.

use crate::support::{Options, Stack, request};
use async_nats::jetstream;
use bytes::Bytes;
use checkout_shared::envelope::REASON;
use futures::StreamExt;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_input_is_rejected_with_its_reason_and_the_next_checkout_completes() {
    let stack = Stack::start(Options::default()).await;
    let client = stack.client().await;
    let good = |overrides: serde_json::Value| {
        let mut base = json!({
            "checkout_id": uuid::Uuid::new_v4(), "customer_id": "cust-1",
            "items": [{"sku": "SKU-MUG", "quantity": 1, "unit_price_cents": 2100}],
            "payment_token": "tok_visa", "amount_cents": 2100, "currency": "EUR"
        });
        for (k, v) in overrides.as_object().unwrap() {
            if v.is_null() {
                base.as_object_mut().unwrap().remove(k);
            } else {
                base[k] = v.clone();
            }
        }
        Bytes::from(serde_json::to_vec(&base).unwrap())
    };
    let cases: Vec<(Bytes, &str)> = vec![
        (Bytes::from_static(b"{not json"), "malformed"),
        (
            good(json!({"payment_token": null})),
            "missing field `payment_token`",
        ),
        (
            good(json!({"items": [{"sku": "SKU-NOPE", "quantity": 1, "unit_price_cents": 2100}]})),
            "unknown sku \"SKU-NOPE\"",
        ),
        (
            good(json!({"items": [{"sku": "SKU-MUG", "quantity": 0, "unit_price_cents": 2100}]})),
            "quantity of SKU-MUG",
        ),
        (good(json!({"items": []})), "the cart is empty"),
        (
            good(json!({"amount_cents": -5})),
            "amount_cents must not be negative",
        ),
        (Bytes::from(vec![b'x'; 200 * 1024]), "exceeds the limit"),
        (
            good(json!({"amount_cents": 2000})),
            "the lines add up to 2100",
        ),
        (
            good(json!({"items": [{"sku": "SKU-MUG", "quantity": 1}]})),
            "unit_price_cents of SKU-MUG is required",
        ),
        (
            good(json!({"currency": null})),
            "currency must be an ISO 4217 code",
        ),
    ];
    for (i, (payload, _)) in cases.iter().enumerate() {
        client
            .publish_raw(format!("bad-{i}"), payload.clone())
            .await
            .expect("publish");
    }
    let checkout = request("cust-1", "tok_visa", &[("SKU-MUG", 1)], 2100);
    let (outcome, _) = stack.checkout(&client, &checkout).await;
    assert_eq!(outcome, "completed", "the service goes on after bad input");

    let js = jetstream::new(stack.admin_client().await);
    let stream = js.get_stream("CHECKOUT_REJECTED").await.unwrap();
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config::default())
        .await
        .unwrap();
    let mut batch = consumer
        .fetch()
        .max_messages(100)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .unwrap();
    let mut reasons = Vec::new();
    while let Some(Ok(message)) = batch.next().await {
        reasons.push(
            message
                .headers
                .as_ref()
                .and_then(|h| h.get(REASON))
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default(),
        );
    }
    assert_eq!(
        reasons.len(),
        cases.len(),
        "one rejection per bad input: {reasons:#?}"
    );
    for (_, expected) in &cases {
        assert!(
            reasons.iter().any(|r| r.contains(expected)),
            "no rejection says {expected:?}: {reasons:#?}"
        );
    }
    let pending: u64 = js
        .get_stream("CHECKOUT_REQUESTS")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages;
    assert_eq!(pending, 0, "nothing left looping in the request stream");
    stack.stop().await;
}
