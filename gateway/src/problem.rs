//! Error responses as RFC 9457 problem details (`application/problem+json`), and the
//! rejection counter.
//!
//! Every refusal names a stable `reason` code (the same codes the orchestrator puts in
//! `Saga-Reason-Kind`) and, when one field is at fault, its path in the body (`field`), so a
//! client can point at the input to fix without parsing prose. The codes are one enum,
//! [`Reason`], and each has one status and one title: the OpenAPI document lists, for each
//! status, exactly the problem types the code can answer with it.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use checkout_door::validate::Rejection;
use serde::Serialize;
use strum::VariantArray;

/// Where the problem types are described; `type` is this plus the reason code.
pub const TYPE_BASE: &str = "https://checkout-saga.example/problems/";

/// How long a client should wait before retrying a `503` or a `429` (the `Retry-After`
/// header): long
/// enough for a broker or database to come back from a blip, short enough for a checkout.
pub const RETRY_AFTER_SECS: u32 = 2;

/// Every reason the gateway gives for not doing what it was asked: its text form is the
/// `reason` of the problem and the last segment of its `type`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::VariantArray, strum::Display,
)]
#[strum(serialize_all = "snake_case")]
pub enum Reason {
    /// The body is not JSON at all.
    Syntax,
    /// The body could not be read.
    UnreadableBody,
    /// The `Idempotency-Key` header is not 1 to 255 visible ASCII characters.
    InvalidIdempotencyKey,
    /// The path's checkout id is not a UUID.
    InvalidId,
    /// No checkout of that id: never accepted here, or older than the status is kept.
    NotFound,
    /// The key was first used with another cart.
    IdempotencyKeyReused,
    /// The body is larger than 64 KiB.
    TooLarge,
    /// The body is not `application/json`.
    UnsupportedMediaType,
    /// JSON that is not a cart (a missing, unknown or mistyped field).
    Malformed,
    /// A field has a value no checkout can have.
    Invalid,
    /// The amount is not the sum of the lines.
    AmountMismatch,
    /// A SKU the catalog does not list.
    UnknownSku,
    /// A line's price is not the catalog's.
    PriceMismatch,
    /// The cart's currency is not the catalog's.
    CurrencyMismatch,
    /// A dependency (broker, database, catalog) is unavailable: retry after `Retry-After`.
    Unavailable,
    /// The readiness probe: the broker or the database is unreachable.
    NotReady,
    /// The system is behind (too much work waits in its queues): retry after `Retry-After`.
    Overloaded,
    /// This gateway handles as many checkouts at once as it may: retry after `Retry-After`.
    TooManyRequests,
}

impl Reason {
    /// The code's one text form.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The one status a problem of this reason has.
    pub fn status(self) -> StatusCode {
        use Reason::*;
        match self {
            Syntax | UnreadableBody | InvalidIdempotencyKey | InvalidId => StatusCode::BAD_REQUEST,
            NotFound => StatusCode::NOT_FOUND,
            IdempotencyKeyReused => StatusCode::CONFLICT,
            TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Malformed | Invalid | AmountMismatch | UnknownSku | PriceMismatch
            | CurrencyMismatch => StatusCode::UNPROCESSABLE_ENTITY,
            Unavailable | NotReady | Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// A short summary of the kind.
    pub fn title(self) -> &'static str {
        use Reason::*;
        match self {
            Syntax => "Not JSON",
            UnreadableBody => "Unreadable body",
            InvalidIdempotencyKey => "Invalid Idempotency-Key",
            InvalidId => "Invalid checkout id",
            NotFound => "No such checkout",
            IdempotencyKeyReused => "Idempotency-Key already used",
            TooLarge => "Cart too large",
            UnsupportedMediaType => "Unsupported media type",
            Malformed => "Not a cart",
            Invalid => "Invalid cart",
            AmountMismatch => "Amount is not the sum of the lines",
            UnknownSku => "Unknown SKU",
            PriceMismatch => "Price changed",
            CurrencyMismatch => "Wrong currency",
            Unavailable => "Try again",
            NotReady => "Not ready",
            Overloaded => "Too busy",
            TooManyRequests => "Too many requests",
        }
    }

    /// The problem's `type`.
    pub fn type_uri(self) -> String {
        format!("{TYPE_BASE}{}", self.as_str())
    }

    /// The reasons a response of `status` can give.
    pub fn of_status(status: StatusCode) -> impl Iterator<Item = Reason> {
        Reason::VARIANTS
            .iter()
            .copied()
            .filter(move |r| r.status() == status)
    }

    /// The reason of a refused cart: the door's rejection, or `syntax` when the body is not
    /// JSON at all.
    pub fn of_rejection(rejection: &Rejection, syntax_error: bool) -> Reason {
        match rejection {
            _ if syntax_error => Reason::Syntax,
            Rejection::TooLarge(_) => Reason::TooLarge,
            Rejection::Malformed(_) => Reason::Malformed,
            Rejection::Invalid { .. } => Reason::Invalid,
            Rejection::AmountMismatch { .. } => Reason::AmountMismatch,
            Rejection::UnknownSku { .. } => Reason::UnknownSku,
            Rejection::PriceMismatch { .. } => Reason::PriceMismatch,
            Rejection::CurrencyMismatch { .. } => Reason::CurrencyMismatch,
        }
    }
}

/// One problem response (kept small: handlers return it as their error).
#[derive(Debug)]
pub struct Problem {
    /// The stable reason code; status, title and `type` follow from it.
    pub reason: Reason,
    /// What went wrong with this request.
    pub detail: String,
    /// The field at fault, as a path into the JSON body (or the header's name).
    pub field: Option<String>,
}

/// The body as RFC 9457 spells it.
#[derive(Serialize)]
struct Wire<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl Problem {
    /// A problem of reason `reason`.
    pub fn new(reason: Reason, detail: String) -> Self {
        Problem {
            reason,
            detail,
            field: None,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.reason.status()
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::to_value(Wire {
            kind: self.reason.type_uri(),
            title: self.reason.title(),
            status: self.status().as_u16(),
            detail: &self.detail,
            reason: self.reason.as_str(),
            field: self.field.as_deref(),
        })
        .unwrap_or_default()
    }

    /// Names the field at fault.
    pub fn field(mut self, field: Option<String>) -> Self {
        self.field = field;
        self
    }

    /// The problem a refused cart gets: 413 when too large, 400 when the body is not JSON
    /// at all, 422 when it is JSON that no checkout can be.
    pub fn from_rejection(rejection: &Rejection, syntax_error: bool) -> Self {
        let reason = Reason::of_rejection(rejection, syntax_error);
        Problem::new(reason, rejection.to_string()).field(rejection.field())
    }

    /// Logs and counts a refusal of the caller's input (not a failure of ours).
    pub fn refused(self) -> Self {
        tracing::warn!(
            status = self.status().as_u16(),
            reason = self.reason.as_str(),
            field = self.field.as_deref().unwrap_or(""),
            detail = %self.detail,
            "checkout rejected"
        );
        checkout_shared::metrics::get().rejected(self.reason.as_str());
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = self.body().to_string();
        let mut response = (self.status(), body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if matches!(
            self.status(),
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        ) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_price_mismatch_is_a_422_naming_the_line_price() {
        let rejection = Rejection::PriceMismatch {
            field: "items[1].unit_price_cents".into(),
            sku: "SKU-MUG".into(),
            expected: 1299,
            actual: 999,
        };
        let problem = Problem::from_rejection(&rejection, false);
        assert_eq!(problem.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(problem.reason.as_str(), "price_mismatch");
        assert_eq!(problem.field.as_deref(), Some("items[1].unit_price_cents"));
        let json = problem.body();
        assert_eq!(json["type"], format!("{TYPE_BASE}price_mismatch"));
        assert_eq!(json["title"], "Price changed");
        let response = problem.into_response();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
    }

    #[test]
    fn the_door_and_the_gateway_spell_a_rejection_alike_and_a_503_says_when_to_retry() {
        let rejection = Rejection::UnknownSku {
            field: "items[0].sku".into(),
            sku: "SKU-NOPE".into(),
        };
        assert_eq!(
            Reason::of_rejection(&rejection, false).as_str(),
            rejection.kind()
        );
        let response = Problem::new(Reason::Unavailable, "broker".into()).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
    }
}
