//! The gateway's decoders of untrusted input under proptest (arbitrary and mutated-valid
//! input; `cargo fuzz` needs a nightly toolchain the build machines cannot fetch): the
//! request's headers (content type, `Idempotency-Key`), the caller's trace context, and the
//! body as JSON and as a cart. Each answers a value or a problem with a reason and a status
//! of its kind, never a panic, and its detail is bounded. The case counts keep it to seconds.

use crate::cart_input::{decode, read_headers};
use crate::http_span::caller_context;
use crate::idempotency;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn valid_cart() -> Vec<u8> {
    serde_json::json!({
        "customer_id": "cust-ada", "payment_token": "tok_visa", "currency": "EUR",
        "items": [{"sku": "SKU-MUG", "quantity": 2, "unit_price_cents": 1299}],
        "amount_cents": 2598
    })
    .to_string()
    .into_bytes()
}

/// A valid cart with byte-level edits: overwrite, insert, delete, truncate.
fn mutated_cart() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..4), 0..8).prop_map(|edits| {
        let mut bytes = valid_cart();
        for (at, byte, op) in edits {
            let at = if bytes.is_empty() {
                0
            } else {
                at % bytes.len()
            };
            match op {
                0 if !bytes.is_empty() => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                2 if !bytes.is_empty() => {
                    bytes.remove(at);
                }
                _ => bytes.truncate(at),
            }
        }
        bytes
    })
}

/// A valid cart with one field's value replaced by arbitrary JSON (type confusion).
fn confused_cart() -> impl Strategy<Value = Vec<u8>> {
    let field = prop::sample::select(vec![
        "customer_id",
        "payment_token",
        "currency",
        "items",
        "amount_cents",
        "unknown",
    ]);
    let value = prop_oneof![
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        any::<String>().prop_map(serde_json::Value::from),
        any::<bool>().prop_map(serde_json::Value::from),
        Just(serde_json::Value::Null),
        Just(serde_json::json!([{"sku": 1}])),
        Just(serde_json::json!({"a": []})),
    ];
    (field, value).prop_map(|(field, value)| {
        let mut cart: serde_json::Value = serde_json::from_slice(&valid_cart()).unwrap_or_default();
        cart[field] = value;
        cart.to_string().into_bytes()
    })
}

fn check_body(raw: &[u8]) -> Result<(), TestCaseError> {
    if let Err(problem) = decode(raw) {
        let status = problem.status();
        prop_assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::UNPROCESSABLE_ENTITY,
            "{status}"
        );
        let body = problem.body();
        let detail = body["detail"].as_str().unwrap_or_default();
        prop_assert!(!detail.is_empty(), "a refusal says why");
        prop_assert!(detail.len() <= raw.len() + 200, "bounded: {detail}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_body_is_a_cart_or_a_400_or_422_with_a_reason(
        raw in prop::collection::vec(any::<u8>(), 0..4096)
    ) {
        check_body(&raw)?;
    }

    #[test]
    fn mutated_and_mistyped_carts_are_carts_or_refused_with_a_reason(
        raw in prop_oneof![mutated_cart(), confused_cart()]
    ) {
        check_body(&raw)?;
    }

    #[test]
    fn any_headers_are_read_or_refused_with_a_reason(
        content_type in prop::collection::vec(any::<u8>(), 0..64),
        key in prop::option::of(prop::collection::vec(any::<u8>(), 0..300)),
        traceparent in prop::collection::vec(any::<u8>(), 0..80),
        tracestate in "[ -~]{0,128}",
    ) {
        checkout_shared::propagation::install_propagators();
        let mut headers = HeaderMap::new();
        // Bytes a client can put in a header value (the HTTP parser refuses the others).
        let value = |bytes: &[u8]| HeaderValue::from_bytes(bytes).ok();
        if let Some(v) = value(&content_type) {
            headers.insert(HeaderName::from_static("content-type"), v);
        }
        if let Some(v) = key.as_deref().and_then(value) {
            headers.insert(HeaderName::from_static("idempotency-key"), v);
        }
        if let Some(v) = value(&traceparent) {
            headers.insert(HeaderName::from_static("traceparent"), v);
        }
        if let Some(v) = value(tracestate.as_bytes()) {
            headers.insert(HeaderName::from_static("tracestate"), v);
        }
        let _ = caller_context(&headers);
        match read_headers(&headers) {
            Ok(Some(key)) => {
                prop_assert!(idempotency::valid_key(&key));
                let _ = idempotency::saga_id(&key);
            }
            Ok(None) => {}
            Err(problem) => {
                let status = problem.status();
                prop_assert!(
                    status == StatusCode::BAD_REQUEST
                        || status == StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "{status}"
                );
                prop_assert!(problem.body()["detail"].as_str().is_some_and(|d| d.len() < 400));
            }
        }
    }
}
