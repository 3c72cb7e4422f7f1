//! serde's words about a body that is not a checkout, without the values the caller sent.
//!
//! serde quotes what it found (`invalid type: integer `4242424242424242`, expected a
//! string`; `unknown field `tok_live_x``): a card number sent where the token goes, or a token
//! in the wrong field, would travel on in a problem+json detail, a log line, a span, the
//! rejection's record and its lifecycle event. What serde says it *expected* comes from our
//! own types and stays; what it *found* is dropped, except the name of a missing field (it can
//! only be one of ours).
//!
//! ```text
//!  invalid type: string "tok_live_9f", expected i64 at line 1 column 40
//!    ──▶ invalid type: string, expected i64 at line 1 column 40
//!  unknown field `tok_live_9f`, expected one of `checkout_id`, `items`, ...
//!    ──▶ unknown field, expected one of `checkout_id`, `items`, ...
//! ```

/// serde's message for `err`, with every value the caller sent left out.
pub fn describe(err: &serde_json::Error) -> String {
    without_values(&err.to_string())
}

/// `message` without its quoted values: every `"..."` and `` `...` `` before the first
/// `expected` outside quotes is dropped, but the field named by `missing field`.
pub fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars().peekable();
    let mut expected_seen = false;
    while let Some(c) = chars.next() {
        match c {
            '"' | '`' if !expected_seen => {
                let mut quoted = String::new();
                let mut escaped = false;
                for q in chars.by_ref() {
                    if q == c && !escaped {
                        break;
                    }
                    escaped = c == '"' && q == '\\' && !escaped;
                    quoted.push(q);
                }
                if c == '`' && out.ends_with("missing field ") {
                    out.push('`');
                    out.push_str(&quoted);
                    out.push('`');
                }
            }
            _ => {
                out.push(c);
                if out.ends_with("expected") {
                    expected_seen = true;
                }
            }
        }
    }
    // A dropped value leaves its surrounding spaces: `string , expected` reads `string,`.
    out.replace(" ,", ",")
        .replace("  ", " ")
        .trim_end()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::CheckoutRequested;
    use serde_json::json;

    fn error_of(body: serde_json::Value) -> String {
        let err = serde_json::from_value::<CheckoutRequested>(body).unwrap_err();
        describe(&err)
    }

    fn cart(key: &str, value: serde_json::Value) -> serde_json::Value {
        let mut base = json!({
            "checkout_id": "6f1c2a4e-8a7b-4c7e-9b1d-2a3b4c5d6e7f", "customer_id": "c",
            "items": [{"sku": "SKU-1", "quantity": 1, "unit_price_cents": 100}],
            "payment_token": "tok_visa", "amount_cents": 100, "currency": "EUR"
        });
        base[key] = value;
        base
    }

    #[test]
    fn no_value_the_caller_sent_survives_but_what_was_expected_does() {
        let secret = "tok_live_5ecret";
        for (body, kept) in [
            (cart("amount_cents", json!(secret)), "expected i64"),
            (
                cart("payment_token", json!(4242424242424242u64)),
                "expected a string",
            ),
            (cart("payment_token", json!(true)), "invalid type: boolean"),
            (cart("checkout_id", json!(secret)), "UUID"),
            (cart(secret, json!(1)), "unknown field"),
        ] {
            let text = error_of(body);
            assert!(!text.contains(secret), "{text}");
            assert!(!text.contains("4242424242424242"), "{text}");
            assert!(text.contains(kept), "{kept:?} in {text}");
        }
    }

    #[test]
    fn a_missing_field_is_still_named_and_escaped_quotes_do_not_end_a_value() {
        let mut body = cart("items", json!(null));
        body.as_object_mut().unwrap().remove("items");
        assert_eq!(error_of(body), "missing field `items`");
        assert_eq!(
            without_values(r#"invalid type: string "a\"b`c, expected d", expected u32"#),
            "invalid type: string, expected u32"
        );
        assert_eq!(
            without_values("unknown variant `x`, expected one of `a`, `b`"),
            "unknown variant, expected one of `a`, `b`"
        );
        assert_eq!(
            without_values("expected `,` or `}` at line 1 column 9"),
            "expected `,` or `}` at line 1 column 9"
        );
    }
}
