//! The door: a checkout request is parsed and checked before it becomes a saga. A request
//! that fails is rejected with a reason, never retried, never started.
//!
//! The rules live here once. The orchestrator applies them to whatever arrives on
//! `checkout.requested`; the HTTP gateway applies the very same rules before it publishes, so
//! that what the gateway accepts the orchestrator accepts too. Each rejection names the field
//! (`items[1].unit_price_cents`) and a stable reason code (`price_mismatch`).

use checkout_shared::RejectionCode;
use checkout_shared::messages::{CheckoutRequested, LineItem, MAX_REQUEST_BYTES};
use std::collections::HashSet;

use crate::catalog::{Catalog, CatalogError};

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
    #[error("invalid checkout: {reason}")]
    Invalid {
        /// The field, as a path into the JSON body (`items[0].quantity`).
        field: String,
        /// Why, for people.
        reason: String,
    },
    /// The amount is not the sum of the lines.
    #[error("amount_cents is {actual} but the lines add up to {expected}")]
    AmountMismatch {
        /// The sum of quantity × unit price over the lines.
        expected: i64,
        /// The amount sent.
        actual: i64,
    },
    /// A SKU the inventory service does not sell.
    #[error("unknown sku {sku:?}")]
    UnknownSku {
        /// The field naming it.
        field: String,
        /// The SKU.
        sku: String,
    },
    /// A line's price is not the catalog's (it changed since the customer saw it).
    #[error("price of {sku} changed: the catalog says {expected}, the cart {actual}")]
    PriceMismatch {
        /// The line's price field.
        field: String,
        /// The SKU.
        sku: String,
        /// The catalog's unit price, in cents.
        expected: i64,
        /// The cart's unit price, in cents.
        actual: i64,
    },
    /// The cart's currency is not the one the catalog prices a SKU in.
    #[error("{sku} is sold in {expected}, not {actual}")]
    CurrencyMismatch {
        /// The SKU.
        sku: String,
        /// The catalog's currency.
        expected: String,
        /// The cart's currency.
        actual: String,
    },
}

impl Rejection {
    /// The stable reason code: the `reason` of problem bodies, the `Saga-Reason-Kind`
    /// header, the `rejection` of lifecycle events and the metrics' label.
    pub fn code(&self) -> RejectionCode {
        match self {
            Rejection::TooLarge(_) => RejectionCode::TooLarge,
            Rejection::Malformed(_) => RejectionCode::Malformed,
            Rejection::Invalid { .. } => RejectionCode::Invalid,
            Rejection::AmountMismatch { .. } => RejectionCode::AmountMismatch,
            Rejection::UnknownSku { .. } => RejectionCode::UnknownSku,
            Rejection::PriceMismatch { .. } => RejectionCode::PriceMismatch,
            Rejection::CurrencyMismatch { .. } => RejectionCode::CurrencyMismatch,
        }
    }

    /// The reason code's text form ([`Rejection::code`]).
    pub fn kind(&self) -> &'static str {
        self.code().as_str()
    }

    /// The field at fault, as a path into the JSON body, when one is at fault.
    pub fn field(&self) -> Option<String> {
        match self {
            Rejection::TooLarge(_) => None,
            // serde names a missing field in backquotes (missing field `items`); other names
            // it quotes are the caller's, left out of the message (`shared::json_error`).
            Rejection::Malformed(message) => message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next())
                .map(str::to_owned),
            Rejection::Invalid { field, .. }
            | Rejection::UnknownSku { field, .. }
            | Rejection::PriceMismatch { field, .. } => Some(field.clone()),
            Rejection::AmountMismatch { .. } => Some("amount_cents".into()),
            Rejection::CurrencyMismatch { .. } => Some("currency".into()),
        }
    }
}

/// The rejection of a body serde could not read as a checkout, in serde's words without the
/// values the caller sent (a token or card number among them).
pub fn malformed(err: &serde_json::Error) -> Rejection {
    Rejection::Malformed(checkout_shared::json_error::describe(err))
}

/// Parses a request body and checks every field that needs no lookup.
pub fn parse(payload: &[u8]) -> Result<CheckoutRequested, Rejection> {
    if payload.len() > MAX_REQUEST_BYTES {
        return Err(Rejection::TooLarge(payload.len()));
    }
    let request: CheckoutRequested = serde_json::from_slice(payload).map_err(|e| malformed(&e))?;
    check_fields(&request)?;
    Ok(request)
}

/// Checks every field of a request that needs no lookup, the sum of the lines included.
pub fn check_fields(request: &CheckoutRequested) -> Result<(), Rejection> {
    let invalid = |field: &str, reason: String| {
        Err(Rejection::Invalid {
            field: field.to_owned(),
            reason,
        })
    };
    if request.checkout_id.is_nil() {
        return invalid("checkout_id", "checkout_id must not be the nil uuid".into());
    }
    for (name, value) in [
        ("customer_id", &request.customer_id),
        ("payment_token", &request.payment_token),
    ] {
        if value.trim().is_empty() || value.len() > MAX_FIELD_LEN {
            return invalid(
                name,
                format!("{name} must be 1 to {MAX_FIELD_LEN} characters"),
            );
        }
    }
    let currency = &request.currency;
    if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_uppercase()) {
        return invalid(
            "currency",
            format!("currency must be an ISO 4217 code such as EUR, got {currency:?}"),
        );
    }
    if request.items.is_empty() {
        return invalid("items", "the cart is empty".into());
    }
    if request.items.len() > MAX_LINES {
        return invalid("items", format!("the cart has more than {MAX_LINES} lines"));
    }
    let mut seen = HashSet::new();
    for (i, item) in request.items.iter().enumerate() {
        let field = |name: &str| format!("items[{i}].{name}");
        if item.sku.trim().is_empty() || item.sku.len() > MAX_FIELD_LEN {
            return invalid(
                &field("sku"),
                format!("sku must be 1 to {MAX_FIELD_LEN} characters"),
            );
        }
        if item.quantity <= 0 || item.quantity > MAX_QUANTITY {
            return invalid(
                &field("quantity"),
                format!(
                    "quantity of {} must be 1 to {MAX_QUANTITY}, got {}",
                    item.sku, item.quantity
                ),
            );
        }
        match item.unit_price_cents {
            Some(price) if price >= 0 => {}
            Some(price) => {
                return invalid(
                    &field("unit_price_cents"),
                    format!(
                        "unit price of {} must not be negative, got {price}",
                        item.sku
                    ),
                );
            }
            None => {
                return invalid(
                    &field("unit_price_cents"),
                    format!("unit_price_cents of {} is required", item.sku),
                );
            }
        }
        if !seen.insert(&item.sku) {
            return invalid(&field("sku"), format!("sku {} appears twice", item.sku));
        }
    }
    let sum = sum_of_lines(&request.items);
    if request.amount_cents < 0 {
        return invalid(
            "amount_cents",
            format!(
                "amount_cents must not be negative, got {}",
                request.amount_cents
            ),
        );
    }
    if request.amount_cents != sum {
        return Err(Rejection::AmountMismatch {
            expected: sum,
            actual: request.amount_cents,
        });
    }
    Ok(())
}

/// What a cart's amount must be: the sum of quantity × unit price over its lines (a line
/// without a price counts for nothing). Bounded by the line and quantity limits; it saturates
/// rather than wraps on absurd prices.
pub fn sum_of_lines(items: &[LineItem]) -> i64 {
    items.iter().fold(0i64, |sum, item| {
        let price = item.unit_price_cents.unwrap_or(0);
        sum.saturating_add(price.saturating_mul(i64::from(item.quantity)))
    })
}

/// Checks a parsed request: its fields, then every line against the catalog. `Err` when the
/// catalog could not be read (retry, do not refuse).
pub async fn check(
    catalog: &Catalog,
    request: &CheckoutRequested,
) -> Result<Result<(), Rejection>, CatalogError> {
    if let Err(rejection) = check_fields(request) {
        return Ok(Err(rejection));
    }
    catalog.check(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(overrides: serde_json::Value) -> Vec<u8> {
        let mut base = json!({
            "checkout_id": "6f1c2a4e-8a7b-4c7e-9b1d-2a3b4c5d6e7f",
            "customer_id": "cust-1",
            "items": [{"sku": "SKU-1", "quantity": 2, "unit_price_cents": 1000}],
            "payment_token": "tok_visa",
            "amount_cents": 2000,
            "currency": "EUR"
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
    fn each_bad_input_is_rejected_with_its_reason_and_field() {
        let line = |q: i32, p: serde_json::Value| json!([{"sku": "SKU-1", "quantity": q, "unit_price_cents": p}]);
        let cases = [
            (b"{not json".to_vec(), "malformed", None),
            (body(json!({"items": null})), "malformed", Some("items")),
            (body(json!({"items": []})), "invalid", Some("items")),
            (
                body(json!({"items": line(0, json!(1000))})),
                "invalid",
                Some("items[0].quantity"),
            ),
            (
                body(json!({"items": line(-3, json!(1000))})),
                "invalid",
                Some("items[0].quantity"),
            ),
            (
                body(json!({"items": [{"sku": "SKU-1", "quantity": 2}]})),
                "invalid",
                Some("items[0].unit_price_cents"),
            ),
            (
                body(json!({"currency": "euro"})),
                "invalid",
                Some("currency"),
            ),
            (
                body(json!({"amount_cents": -1})),
                "invalid",
                Some("amount_cents"),
            ),
            (
                body(json!({"amount_cents": 1999})),
                "amount_mismatch",
                Some("amount_cents"),
            ),
            (vec![b' '; MAX_REQUEST_BYTES + 1], "too_large", None),
        ];
        for (payload, kind, field) in cases {
            let err = parse(&payload).expect_err("must be rejected");
            assert_eq!(err.kind(), kind, "{err}");
            assert_eq!(err.field().as_deref(), field, "{err}");
        }
        let missing = parse(&body(json!({"items": null})))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("missing field `items`"), "{missing}");
    }
}
