//! The orchestrator's door (`validate::parse`, what every `checkout.requested` message meets)
//! under proptest: arbitrary bytes and valid requests with arbitrary field values each parse
//! or are refused with a reason code and a bounded reason, never a panic.

use crate::validate::parse;
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn request(quantity: i64, price: i64, amount: i64, text: &str) -> Vec<u8> {
    serde_json::json!({
        "checkout_id": "6f1c2a4e-8a7b-4c7e-9b1d-2a3b4c5d6e7f", "customer_id": text,
        "items": [{"sku": text, "quantity": quantity, "unit_price_cents": price}],
        "payment_token": "tok_visa", "amount_cents": amount, "currency": text
    })
    .to_string()
    .into_bytes()
}

fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Err(rejection) = parse(bytes) {
        let reason = rejection.to_string();
        prop_assert!(!rejection.kind().is_empty());
        prop_assert!(reason.len() <= bytes.len() + 200, "bounded: {}", reason);
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_bytes_parse_or_are_refused_with_a_reason(
        bytes in prop::collection::vec(any::<u8>(), 0..4096)
    ) {
        check(&bytes)?;
    }

    #[test]
    fn any_field_values_parse_or_are_refused_with_a_reason(
        quantity in any::<i64>(), price in any::<i64>(), amount in any::<i64>(),
        text in any::<String>(),
    ) {
        check(&request(quantity, price, amount, &text))?;
    }
}
