//! Secrets out of the messages that are kept: a rejected checkout or a dead-lettered command
//! is stored for days (`checkout.rejected`, `checkout.dlq.>`) for people to read, and must not
//! keep the payment token it carried.
//!
//! ```text
//!  payload ─▶ JSON? ──yes──▶ every "payment_token" value, at any depth ─▶ "[redacted]"
//!               │ no
//!               ▼
//!     names a payment token? ──yes──▶ withheld: no body, Saga-Withheld says why and how big
//!               │ no
//!               ▼
//!            kept as is
//! ```

use bytes::Bytes;

/// What a secret's value is replaced with.
pub const REDACTED: &str = "[redacted]";
/// The header that says a body was withheld, and why.
pub const WITHHELD: &str = "Saga-Withheld";
/// The keys whose values are secrets.
const SECRET_KEYS: [&str; 1] = ["payment_token"];

/// `payload` fit to be kept: its secrets replaced, or the whole body withheld when it is not
/// JSON but names a secret; with the `Saga-Withheld` note in that case.
pub fn for_keeping(payload: Bytes) -> (Bytes, Option<String>) {
    match serde_json::from_slice::<serde_json::Value>(&payload) {
        Ok(mut json) => {
            if !redact(&mut json) {
                return (payload, None);
            }
            match serde_json::to_vec(&json) {
                Ok(redacted) => (Bytes::from(redacted), None),
                Err(_) => withheld(payload.len()),
            }
        }
        Err(_) if names_a_secret(&payload) => withheld(payload.len()),
        Err(_) => (payload, None),
    }
}

fn withheld(len: usize) -> (Bytes, Option<String>) {
    let note = format!("{len} bytes withheld: not JSON, and it names a payment token");
    (Bytes::new(), Some(note))
}

fn names_a_secret(payload: &[u8]) -> bool {
    SECRET_KEYS
        .iter()
        .any(|key| payload.windows(key.len()).any(|w| w == key.as_bytes()))
}

/// Replaces every secret's value in `json`, at any depth; whether anything was replaced.
fn redact(json: &mut serde_json::Value) -> bool {
    match json {
        serde_json::Value::Object(map) => {
            let mut changed = false;
            for (key, value) in map.iter_mut() {
                if SECRET_KEYS.contains(&key.as_str()) {
                    *value = serde_json::Value::String(REDACTED.to_owned());
                    changed = true;
                } else {
                    changed |= redact(value);
                }
            }
            changed
        }
        serde_json::Value::Array(items) => items.iter_mut().fold(false, |c, v| redact(v) | c),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_redacted_at_any_depth_and_nothing_else_changes() {
        let body =
            br#"{"saga_id":"s","command":{"type":"charge_payment","payment_token":"tok_9"}}"#;
        let (kept, note) = for_keeping(Bytes::from_static(body));
        assert_eq!(note, None);
        let json: serde_json::Value = serde_json::from_slice(&kept).unwrap();
        assert_eq!(json["command"]["payment_token"], REDACTED);
        assert_eq!(json["command"]["type"], "charge_payment");
        let numbers = br#"[{"payment_token": 4242424242424242}]"#;
        let (kept, _) = for_keeping(Bytes::from_static(numbers));
        assert!(!String::from_utf8_lossy(&kept).contains("4242"));
    }

    #[test]
    fn a_body_without_secrets_is_kept_byte_for_byte_and_broken_json_naming_one_is_withheld() {
        let plain = Bytes::from_static(b"{ \"a\" : 1 }");
        assert_eq!(for_keeping(plain.clone()), (plain, None));
        let garbage = Bytes::from_static(b"\xff\x00 not json");
        assert_eq!(for_keeping(garbage.clone()), (garbage, None));
        let broken = Bytes::from_static(br#"{"payment_token": "tok_9", "#);
        let (kept, note) = for_keeping(broken);
        assert!(kept.is_empty());
        assert!(note.unwrap().starts_with("27 bytes withheld"));
    }
}
