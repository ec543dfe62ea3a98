//! API errors and their one mapping to HTTP status codes: card failures are
//! 503 (unavailable) or 504 (timeout), caller mistakes 4xx, the rest 500.
//! The body is always `{"error": "..."}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// An error answered to an API client.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable message.
    pub message: String,
}

impl From<dia::Error> for ApiError {
    fn from(e: dia::Error) -> Self {
        let status = match &e {
            dia::Error::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            dia::Error::CardError { .. }
            | dia::Error::Gone { .. }
            | dia::Error::NoDevice { .. } => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self {
            status,
            message: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}
