//! Error responses as RFC 9457 problem details (`application/problem+json`), and the
//! rejection counter.
//!
//! Every refusal names a stable `reason` code (the same codes the orchestrator puts in
//! `Saga-Reason-Kind`) and, when one field is at fault, its path in the body (`field`), so a
//! client can point at the input to fix without parsing prose.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use checkout_door::validate::Rejection;
use serde::Serialize;

/// Where the problem types are described; `type` is this plus the reason code.
const TYPE_BASE: &str = "https://checkout-saga.example/problems/";

/// One problem response (kept small: handlers return it as their error).
#[derive(Debug)]
pub struct Problem {
    /// A short summary of the kind.
    pub title: &'static str,
    /// The HTTP status, repeated for clients that only keep the body.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// The stable reason code; `type` is derived from it.
    pub reason: &'static str,
    /// The field at fault, as a path into the JSON body.
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
    /// A problem of `status` with reason code `reason`.
    pub fn new(
        status: StatusCode,
        reason: &'static str,
        title: &'static str,
        detail: String,
    ) -> Self {
        Problem {
            title,
            status: status.as_u16(),
            detail,
            reason,
            field: None,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::to_value(Wire {
            kind: format!("{TYPE_BASE}{}", self.reason),
            title: self.title,
            status: self.status,
            detail: &self.detail,
            reason: self.reason,
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
        let (status, title) = match rejection {
            Rejection::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "Cart too large"),
            Rejection::Malformed(_) if syntax_error => (StatusCode::BAD_REQUEST, "Not JSON"),
            Rejection::Malformed(_) => (StatusCode::UNPROCESSABLE_ENTITY, "Not a cart"),
            Rejection::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "Invalid cart"),
            Rejection::AmountMismatch { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "Amount is not the sum of the lines",
            ),
            Rejection::UnknownSku { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "Unknown SKU"),
            Rejection::PriceMismatch { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "Price changed"),
            Rejection::CurrencyMismatch { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "Wrong currency")
            }
        };
        let reason = if syntax_error {
            "syntax"
        } else {
            rejection.kind()
        };
        Problem::new(status, reason, title, rejection.to_string()).field(rejection.field())
    }

    /// Logs and counts a refusal of the caller's input (not a failure of ours).
    pub fn refused(self) -> Self {
        tracing::warn!(
            status = self.status,
            reason = self.reason,
            field = self.field.as_deref().unwrap_or(""),
            detail = %self.detail,
            "checkout rejected"
        );
        checkout_shared::metrics::get().rejected(self.reason);
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = self.body().to_string();
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
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
        assert_eq!(problem.status, 422);
        assert_eq!(problem.reason, "price_mismatch");
        assert_eq!(problem.field.as_deref(), Some("items[1].unit_price_cents"));
        let json = problem.body();
        assert_eq!(json["type"], format!("{TYPE_BASE}price_mismatch"));
        let response = problem.into_response();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }
}
