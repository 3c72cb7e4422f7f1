//! The door: a checkout request is parsed and checked before it becomes a saga. A request
//! that fails is rejected with a reason, never retried, never started.

use async_nats::jetstream;
use checkout_shared::messages::{CheckoutRequested, MAX_REQUEST_BYTES};
use std::collections::HashSet;
use std::sync::Mutex;

/// Longest accepted customer id, SKU or payment token.
const MAX_FIELD_LEN: usize = 128;
/// Most lines in one cart.
const MAX_LINES: usize = 100;
/// Most units of one line.
const MAX_QUANTITY: i32 = 10_000;

/// Why a checkout request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The body is larger than [`MAX_REQUEST_BYTES`].
    #[error("payload of {0} bytes exceeds the limit of {MAX_REQUEST_BYTES}")]
    TooLarge(usize),
    /// The body is not the JSON of a checkout (bad syntax, missing or unknown field).
    #[error("malformed checkout: {0}")]
    Malformed(String),
    /// A field has a value no checkout can have.
    #[error("invalid checkout: {0}")]
    Invalid(String),
    /// A SKU the inventory service does not sell.
    #[error("unknown sku {0:?}")]
    UnknownSku(String),
}

impl Rejection {
    /// A short machine-readable kind, for the `Saga-Reason-Kind` header and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Rejection::TooLarge(_) => "too_large",
            Rejection::Malformed(_) => "malformed",
            Rejection::Invalid(_) => "invalid",
            Rejection::UnknownSku(_) => "unknown_sku",
        }
    }
}

/// Parses a request body and checks every field that needs no lookup.
pub fn parse(payload: &[u8]) -> Result<CheckoutRequested, Rejection> {
    if payload.len() > MAX_REQUEST_BYTES {
        return Err(Rejection::TooLarge(payload.len()));
    }
    let request: CheckoutRequested =
        serde_json::from_slice(payload).map_err(|e| Rejection::Malformed(e.to_string()))?;
    check_fields(&request)?;
    Ok(request)
}

fn check_fields(request: &CheckoutRequested) -> Result<(), Rejection> {
    let invalid = |why: String| Err(Rejection::Invalid(why));
    if request.checkout_id.is_nil() {
        return invalid("checkout_id must not be the nil uuid".into());
    }
    for (name, value) in [
        ("customer_id", &request.customer_id),
        ("payment_token", &request.payment_token),
    ] {
        if value.trim().is_empty() || value.len() > MAX_FIELD_LEN {
            return invalid(format!("{name} must be 1 to {MAX_FIELD_LEN} characters"));
        }
    }
    if request.items.is_empty() {
        return invalid("the cart is empty".into());
    }
    if request.items.len() > MAX_LINES {
        return invalid(format!("the cart has more than {MAX_LINES} lines"));
    }
    let mut seen = HashSet::new();
    for item in &request.items {
        if item.sku.trim().is_empty() || item.sku.len() > MAX_FIELD_LEN {
            return invalid(format!("sku must be 1 to {MAX_FIELD_LEN} characters"));
        }
        if item.quantity <= 0 || item.quantity > MAX_QUANTITY {
            return invalid(format!(
                "quantity of {} must be 1 to {MAX_QUANTITY}, got {}",
                item.sku, item.quantity
            ));
        }
        if !seen.insert(&item.sku) {
            return invalid(format!("sku {} appears twice", item.sku));
        }
    }
    if request.amount_cents < 0 {
        return invalid(format!(
            "amount_cents must not be negative, got {}",
            request.amount_cents
        ));
    }
    Ok(())
}

/// The SKUs the inventory service sells, read from its catalog stream. Known SKUs are
/// cached: a SKU is never withdrawn while sagas may still name it.
pub struct Catalog {
    stream: jetstream::stream::Stream<()>,
    known: Mutex<HashSet<String>>,
}

/// The catalog could not be read (the checkout is retried, not refused).
pub type CatalogError = jetstream::stream::LastRawMessageError;

impl Catalog {
    /// A catalog over the given stream.
    pub fn new(stream: jetstream::stream::Stream<()>) -> Self {
        Catalog {
            stream,
            known: Mutex::new(HashSet::new()),
        }
    }

    /// Refuses the first SKU of `request` that the catalog does not list.
    pub async fn check(
        &self,
        request: &CheckoutRequested,
    ) -> Result<Result<(), Rejection>, CatalogError> {
        use jetstream::stream::LastRawMessageErrorKind;
        for item in &request.items {
            if self
                .known
                .lock()
                .map(|k| k.contains(&item.sku))
                .unwrap_or(false)
            {
                continue;
            }
            let Some(subject) = checkout_shared::subjects::catalog_entry(&item.sku) else {
                return Ok(Err(Rejection::UnknownSku(item.sku.clone())));
            };
            match self.stream.get_last_raw_message_by_subject(&subject).await {
                Ok(_) => {}
                Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => {
                    return Ok(Err(Rejection::UnknownSku(item.sku.clone())));
                }
                Err(err) => return Err(err),
            }
            if let Ok(mut known) = self.known.lock() {
                known.insert(item.sku.clone());
            }
        }
        Ok(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(overrides: serde_json::Value) -> Vec<u8> {
        let mut base = json!({
            "checkout_id": "6f1c2a4e-8a7b-4c7e-9b1d-2a3b4c5d6e7f",
            "customer_id": "cust-1",
            "items": [{"sku": "SKU-1", "quantity": 2}],
            "payment_token": "tok_visa",
            "amount_cents": 1999
        });
        if let (Some(base), Some(over)) = (base.as_object_mut(), overrides.as_object()) {
            for (k, v) in over {
                if v.is_null() {
                    base.remove(k);
                } else {
                    base.insert(k.clone(), v.clone());
                }
            }
        }
        serde_json::to_vec(&base).unwrap()
    }

    #[test]
    fn a_good_checkout_parses() {
        assert!(parse(&body(json!({}))).is_ok());
    }

    #[test]
    fn each_bad_input_is_rejected_with_its_reason() {
        let cases = [
            (b"{not json".to_vec(), "malformed"),
            (body(json!({"items": null})), "malformed"),
            (body(json!({"items": []})), "invalid"),
            (
                body(json!({"items": [{"sku": "SKU-1", "quantity": 0}]})),
                "invalid",
            ),
            (
                body(json!({"items": [{"sku": "SKU-1", "quantity": -3}]})),
                "invalid",
            ),
            (body(json!({"amount_cents": -1})), "invalid"),
            (vec![b' '; MAX_REQUEST_BYTES + 1], "too_large"),
        ];
        for (payload, kind) in cases {
            let err = parse(&payload).expect_err("must be rejected");
            assert_eq!(err.kind(), kind, "{err}");
        }
        let missing = parse(&body(json!({"items": null})))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("missing field `items`"), "{missing}");
    }
}
