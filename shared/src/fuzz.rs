//! Every decoder of untrusted bytes in this crate, fed arbitrary and mutated-valid input by
//! proptest (`cargo fuzz` needs a nightly toolchain, which the build machines cannot fetch):
//! the envelope and the command id read from headers, the trace context, each message type,
//! serde's words about bad JSON and the redaction of kept bodies. Each must answer (a value,
//! or an error with a reason) without panicking, and what it answers is bounded by what it
//! was given. The case counts keep the whole set to seconds in CI.

use crate::command_id::{COMMAND_ID, CommandId};
use crate::envelope::{self, Envelope};
use crate::messages::{
    CheckoutRequested, Command, CommandMessage, LifecycleEvent, LineItem, Outcome, Reply,
};
use crate::{Phase, Step, json_error, propagation, redact};
use async_nats::HeaderMap;
use bytes::Bytes;
use proptest::prelude::*;
use uuid::Uuid;

/// Cases per property: enough to meet the odd corner, few enough for CI (each case is
/// microseconds; the whole file runs in about a second).
const CASES: u32 = 512;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A valid input with byte-level edits: overwrite, insert, delete, truncate.
fn mutated(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let edits = prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..4), 0..8);
    edits.prop_map(move |edits| {
        let mut bytes = valid.clone();
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

fn valid_messages() -> Vec<Vec<u8>> {
    let saga_id = Uuid::from_u128(42);
    let request = CheckoutRequested {
        checkout_id: saga_id,
        customer_id: "cust".into(),
        items: vec![LineItem {
            sku: "SKU-MUG".into(),
            quantity: 2,
            unit_price_cents: Some(1299),
        }],
        payment_token: "tok_visa".into(),
        amount_cents: 2598,
        currency: "EUR".into(),
    };
    let command = CommandMessage {
        saga_id,
        command: Command::ChargePayment {
            customer_id: "cust".into(),
            payment_token: "tok_visa".into(),
            amount_cents: 2598,
        },
    };
    let reply = Reply {
        saga_id,
        step: Step::Payment,
        phase: Phase::Do,
        outcome: Outcome::StepSucceeded {
            reference: Some(saga_id),
        },
    };
    vec![
        serde_json::to_vec(&request).unwrap_or_default(),
        serde_json::to_vec(&command).unwrap_or_default(),
        serde_json::to_vec(&reply).unwrap_or_default(),
    ]
}

/// Decodes `bytes` as every message type; each error must say why, within bounds.
fn decode_all(bytes: &[u8]) {
    fn check<T: serde::de::DeserializeOwned>(bytes: &[u8]) {
        if let Err(err) = serde_json::from_slice::<T>(bytes) {
            let reason = json_error::describe(&err);
            assert!(!reason.is_empty(), "a rejection says why");
            assert!(reason.len() <= err.to_string().len(), "{reason}");
        }
    }
    check::<CheckoutRequested>(bytes);
    check::<CommandMessage>(bytes);
    check::<Reply>(bytes);
    check::<LifecycleEvent>(bytes);
    let (kept, note) = redact::for_keeping(Bytes::copy_from_slice(bytes));
    assert!(kept.len() <= bytes.len() * 2 + 64 || note.is_some());
}

/// Header names the decoders read, and some they do not.
fn header_name() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        envelope::MSG_ID,
        envelope::SAGA_ID,
        envelope::SAGA_STEP,
        envelope::SAGA_PHASE,
        envelope::MSG_TYPE,
        COMMAND_ID,
        "traceparent",
        "tracestate",
        "baggage",
        "X-Other",
    ])
}

/// Header values: arbitrary text, and the shapes the decoders expect, slightly off.
fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9a-f-]{0,40}",
        "(inventory|payment|order|notification|do|undo|x){1,2}",
        "00-[0-9a-f]{32}-[0-9a-f]{16}-0[0-3]",
        near_command_id(),
        near_command_id().prop_map(|id| format!("{id}.reply")),
        "[a-z=,;]{0,64}",
    ]
}

/// Command ids close to valid ones: a real saga id, step and phase, then arbitrary parts, so
/// the parser gets past the saga id (random text almost never is a UUID).
fn near_command_id() -> impl Strategy<Value = String> {
    let step = prop::sample::select(vec!["inventory", "payment", "notification", "pay"]);
    let phase = prop::sample::select(vec!["do", "undo", "", "DO"]);
    let suffix = "(\\.[gr]?[0-9]{0,11}|\\.[a-z]{0,3}|\\.){0,4}";
    (any::<u128>(), step, phase, suffix).prop_map(|(saga, step, phase, suffix)| {
        format!("{}.{step}.{phase}{suffix}", Uuid::from_u128(saga))
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_bytes_decode_or_are_refused_with_a_reason(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        decode_all(&bytes);
    }

    #[test]
    fn mutated_valid_messages_decode_or_are_refused_with_a_reason(
        bytes in prop::sample::select(valid_messages()).prop_flat_map(mutated)
    ) {
        decode_all(&bytes);
    }

    #[test]
    fn any_headers_read_as_an_envelope_a_command_id_and_a_trace_context_or_say_why(
        headers in prop::collection::vec((header_name(), header_value()), 0..12)
    ) {
        propagation::install_propagators();
        let mut map = HeaderMap::new();
        for (name, value) in &headers {
            map.append(*name, value.as_str());
        }
        if let Err(err) = Envelope::read(Some(&map)) {
            prop_assert!(!err.to_string().is_empty());
        }
        if let Some(Err(err)) = CommandId::of_reply(Some(&map)) {
            prop_assert!(!err.to_string().is_empty());
            prop_assert!(err.to_string().len() < 200, "bounded: {}", err);
        }
        let _ = propagation::extract(Some(&map));
    }

    #[test]
    fn a_command_id_reads_back_as_written_and_any_text_parses_or_says_why(
        text in prop_oneof![any::<String>(), header_value(), near_command_id()],
        id in (any::<u128>(), any::<u32>(), any::<u32>(), any::<bool>())
    ) {
        if let Err(err) = text.parse::<CommandId>() {
            prop_assert!(err.to_string().len() < 200);
        }
        let (saga, generation, attempt, undo) = id;
        let written = CommandId {
            saga_id: Uuid::from_u128(saga),
            step: Step::Order,
            phase: if undo { Phase::Undo } else { Phase::Do },
            generation,
            attempt,
        };
        prop_assert_eq!(written.to_string().parse::<CommandId>(), Ok(written));
    }

    #[test]
    fn serde_s_words_never_quote_a_value_the_caller_sent(secret in "tok_[a-z0-9]{8,24}") {
        for body in [
            format!(r#"{{"amount_cents": "{secret}"}}"#),
            format!(r#"{{"{secret}": 1}}"#),
            format!(r#"{{"items": [{{"quantity": "{secret}"}}]}}"#),
            format!(r#"{{"checkout_id": "{secret}"}}"#),
        ] {
            let err = serde_json::from_str::<CheckoutRequested>(&body).unwrap_err();
            let said = json_error::describe(&err);
            prop_assert!(!said.contains(&secret), "{}", said);
        }
    }
}
