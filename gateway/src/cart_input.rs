//! What a `POST /checkout` brings, read and decoded: its headers, its body within bounds of
//! size and time, the body as JSON and as a cart. These are the gateway's decoders of
//! untrusted bytes (fuzzed in `fuzz.rs`); each refusal is a problem with its reason.

use crate::checkout::Cart;
use crate::idempotency;
use crate::problem::{Problem, Reason};
use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::{Bytes, BytesMut};
use checkout_door::validate::{self, Rejection};
use checkout_shared::messages::MAX_REQUEST_BYTES;
use futures::StreamExt;

/// The request's headers: a JSON body (415 if not), and its `Idempotency-Key`, if any (400 if
/// it is not 1 to 255 visible ASCII characters). A decoder of untrusted input (fuzzed).
pub(crate) fn read_headers(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(Problem::new(
            Reason::UnsupportedMediaType,
            format!("the cart must be application/json, not {content_type:?}"),
        )
        .field(Some("Content-Type".into()))
        .refused());
    }
    let key = match headers.get("idempotency-key").map(|v| v.to_str()) {
        None => None,
        Some(Ok(key)) if idempotency::valid_key(key) => Some(key.to_owned()),
        Some(_) => {
            return Err(Problem::new(
                Reason::InvalidIdempotencyKey,
                "the Idempotency-Key must be 1 to 255 visible ASCII characters".into(),
            )
            .field(Some("Idempotency-Key".into()))
            .refused());
        }
    };
    Ok(key)
}

/// The body as JSON and as a cart: 400 when it is not JSON at all, 422 when it is not a
/// cart. A decoder of untrusted input (fuzzed).
pub(crate) fn decode(raw: &[u8]) -> Result<(serde_json::Value, Cart), Problem> {
    // serde's words without the values the caller sent: a token or card number in the wrong
    // place must not come back in the detail, nor reach a log or a span.
    let json: serde_json::Value = serde_json::from_slice(raw)
        .map_err(|e| Problem::from_rejection(&validate::malformed(&e), true).refused())?;
    let cart: Cart = serde_json::from_value(json.clone())
        .map_err(|e| Problem::from_rejection(&validate::malformed(&e), false).refused())?;
    Ok((json, cart))
}

/// How long a body may take to arrive: a caller that never finishes its body must not hold
/// one of the gateway's slots (`shedding`) for ever.
const BODY_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads the body, refusing (413) as soon as it passes the limit rather than after it has
/// all been buffered, and (400) when it does not arrive within [`BODY_WITHIN`].
pub(crate) async fn read_limited(body: Body) -> Result<Bytes, Problem> {
    let slow = || {
        let detail = format!("the body did not arrive within {} s", BODY_WITHIN.as_secs());
        Problem::new(Reason::UnreadableBody, detail).refused()
    };
    tokio::time::timeout(BODY_WITHIN, read_all(body))
        .await
        .map_err(|_| slow())?
}

async fn read_all(body: Body) -> Result<Bytes, Problem> {
    let mut stream = body.into_data_stream();
    let mut buffer = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| Problem::new(Reason::UnreadableBody, e.to_string()).refused())?;
        buffer.extend_from_slice(&chunk);
        if buffer.len() > MAX_REQUEST_BYTES {
            return Err(
                Problem::from_rejection(&Rejection::TooLarge(buffer.len()), false).refused(),
            );
        }
    }
    Ok(buffer.freeze())
}
