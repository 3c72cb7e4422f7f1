//! The (simulated) payment gateway the payment service calls to charge a card, traced as a
//! client span of its own with what an on-call engineer asks of a charge: how long the
//! gateway took, the charge id, approved or declined, and the decline code.
//!
//! Declines are deterministic, so a redelivery decides as the first delivery did: test tokens
//! map to codes ([`TEST_TOKENS`]), and a configured share of sagas (chosen by id,
//! [`crate::chance`]) is declined with a code drawn from a configured mix (by id too, in a draw
//! of its own). The token itself is a secret: it is compared here and never recorded anywhere.

use crate::chance::{self, FaultKind};
use crate::config::Faults;
use checkout_shared::messages::RefusalCode;
use checkout_shared::messaging::mark_error;
use std::time::Instant;
use tracing::Instrument;
use uuid::Uuid;

/// Tokens that are always declined, with the code they get (for demos and tests).
pub const TEST_TOKENS: [(&str, RefusalCode); 3] = [
    ("tok_decline", RefusalCode::CardDeclined),
    ("tok_insufficient_funds", RefusalCode::InsufficientFunds),
    ("tok_expired", RefusalCode::ExpiredCard),
];

/// The codes a gateway declines with.
pub const DECLINE_CODES: [RefusalCode; 3] = [
    RefusalCode::CardDeclined,
    RefusalCode::InsufficientFunds,
    RefusalCode::ExpiredCard,
];

/// What the gateway said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authorization {
    /// Charged, under this id.
    Approved(Uuid),
    /// Declined, with this code.
    Declined(RefusalCode),
}

/// Charges `amount_cents` to `token` for `saga_id`.
pub async fn authorize(token: &str, saga_id: Uuid, faults: &Faults) -> Authorization {
    let span = tracing::info_span!(
        "payment gateway charge",
        otel.kind = "client",
        payment.gateway_latency_ms = tracing::field::Empty,
        payment.charge_id = tracing::field::Empty,
        payment.status = tracing::field::Empty,
        payment.decline_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_message = tracing::field::Empty,
    );
    let started = Instant::now();
    let decision = async {
        if !faults.gateway_latency.is_zero() {
            tokio::time::sleep(faults.gateway_latency).await;
        }
        decide(token, saga_id, faults)
    }
    .instrument(span.clone())
    .await;
    span.record(
        "payment.gateway_latency_ms",
        started.elapsed().as_millis() as i64,
    );
    match decision {
        Authorization::Approved(charge_id) => {
            span.record("payment.charge_id", charge_id.to_string());
            span.record("payment.status", "approved");
        }
        Authorization::Declined(code) => {
            span.record("payment.status", "declined");
            span.record("payment.decline_code", code.as_str());
            mark_error(&span, code.as_str());
        }
    }
    decision
}

fn decide(token: &str, saga_id: Uuid, faults: &Faults) -> Authorization {
    if let Some((_, code)) = TEST_TOKENS.iter().find(|(t, _)| *t == token) {
        return Authorization::Declined(*code);
    }
    if chance::hits(faults.decline_rate, saga_id, FaultKind::Decline, 1) {
        return Authorization::Declined(pick(&faults.decline_mix, saga_id));
    }
    Authorization::Approved(Uuid::new_v4())
}

/// A code from the weighted `mix`, by a draw of its own: which code a declined saga gets is
/// independent of whether it was declined.
fn pick(mix: &[(RefusalCode, u32)], saga_id: Uuid) -> RefusalCode {
    let total: u32 = mix.iter().map(|(_, w)| w).sum();
    if total == 0 {
        return RefusalCode::CardDeclined;
    }
    let draw = chance::uniform(saga_id, FaultKind::DeclineCode.number(), 1);
    // `draw` is below 1, so `at` is below `total`; the `min` guards the float.
    let mut at = ((draw * f64::from(total)) as u32).min(total - 1);
    for (code, weight) in mix {
        if at < *weight {
            return *code;
        }
        at -= weight;
    }
    RefusalCode::CardDeclined
}

/// Parses a decline mix, `code=weight,...` (e.g. `card_declined=2,expired_card=1`).
pub fn parse_mix(spec: &str) -> Result<Vec<(RefusalCode, u32)>, String> {
    spec.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|part| {
            let (name, weight) = part.split_once('=').unwrap_or((part, "1"));
            let code = DECLINE_CODES
                .into_iter()
                .find(|c| c.as_str() == name.trim())
                .ok_or_else(|| format!("{name:?} is not a decline code"))?;
            let weight = weight
                .trim()
                .parse()
                .map_err(|e| format!("{part:?}: {e}"))?;
            Ok((code, weight))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_tokens_decline_with_their_code_and_others_are_approved() {
        let faults = Faults::default();
        let id = Uuid::new_v4();
        for (token, code) in TEST_TOKENS {
            assert_eq!(decide(token, id, &faults), Authorization::Declined(code));
        }
        assert!(matches!(
            decide("tok_visa", id, &faults),
            Authorization::Approved(_)
        ));
    }

    #[test]
    fn the_decline_mix_is_followed_by_saga_id() {
        let mix = parse_mix("insufficient_funds=1,expired_card=3").unwrap();
        let faults = Faults {
            decline_rate: 1.0,
            decline_mix: mix,
            ..Faults::default()
        };
        let codes: Vec<_> = (0..4_000)
            .map(|_| decide("tok_visa", Uuid::new_v4(), &faults))
            .collect();
        let expired = codes
            .iter()
            .filter(|c| **c == Authorization::Declined(RefusalCode::ExpiredCard))
            .count();
        let funds = codes
            .iter()
            .filter(|c| **c == Authorization::Declined(RefusalCode::InsufficientFunds))
            .count();
        assert_eq!(
            expired + funds,
            4_000,
            "every saga declined, by the mix only"
        );
        assert!(
            (2_700..3_300).contains(&expired),
            "{expired} of 4000 at 3/4"
        );
        let id = Uuid::new_v4();
        assert_eq!(decide("t", id, &faults), decide("t", id, &faults));
        assert!(parse_mix("stolen=1").is_err());
    }

    const N: usize = 4_000;

    fn ids() -> Vec<Uuid> {
        (0..N).map(|_| Uuid::new_v4()).collect()
    }

    fn declining(rate: f64, mix: &str) -> Faults {
        Faults {
            decline_rate: rate,
            decline_mix: parse_mix(mix).unwrap(),
            ..Faults::default()
        }
    }

    #[test]
    fn the_configured_share_of_sagas_is_declined() {
        let ids = ids();
        for rate in [0.1, 0.5] {
            let faults = declining(rate, "");
            let declined = ids
                .iter()
                .filter(|id| {
                    matches!(
                        decide("tok_visa", **id, &faults),
                        Authorization::Declined(_)
                    )
                })
                .count();
            chance::assert_rate(declined, N, rate, "declines");
        }
    }

    #[test]
    fn the_code_is_drawn_apart_from_the_decline() {
        let ids = ids();
        let faults = declining(0.5, "card_declined=1,expired_card=1");
        let codes: Vec<RefusalCode> = ids
            .iter()
            .filter_map(|id| match decide("tok_visa", *id, &faults) {
                Authorization::Declined(code) => Some(code),
                Authorization::Approved(_) => None,
            })
            .collect();
        chance::assert_rate(codes.len(), N, 0.5, "declines");
        let expired = codes
            .iter()
            .filter(|c| **c == RefusalCode::ExpiredCard)
            .count();
        // Half of the declined get each code. Were the code read from the decline's own
        // draw, every declined saga (a draw below 0.5) would get the first.
        chance::assert_rate(expired, codes.len(), 0.5, "expired among declined");
    }

    #[test]
    fn a_decline_and_a_failed_confirmation_pick_independent_sagas() {
        let ids = ids();
        let faults = Faults {
            decline_rate: 0.5,
            notification_fail_rate: 0.5,
            ..Faults::default()
        };
        let both = ids
            .iter()
            .filter(|id| {
                matches!(
                    decide("tok_visa", **id, &faults),
                    Authorization::Declined(_)
                ) && crate::notification::fails(**id, 1, &faults)
            })
            .count();
        // A quarter: the same draw would give a half, opposite ones none.
        chance::assert_rate(both, N, 0.25, "declined and first confirmation failed");
    }
}
