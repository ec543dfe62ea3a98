//! API errors and their one mapping to HTTP status codes: card failures are
//! 503 (unavailable) or 504 (timeout), caller mistakes 4xx (400 bad input,
//! 404 unknown name, 409 conflict with the current state, 507 pool full),
//! the rest 500. The body is always `{"error": "..."}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use nix::errno::Errno;
use serde_json::json;

/// An error answered to an API client.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable message.
    pub message: String,
}

impl ApiError {
    /// 400: the request is wrong; `message` says what is allowed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
    /// 404: no such object.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }
    /// 404 for `name` of kind `what` ("volume"), listing the `known` ones
    /// (or `none` when there are none, followed by `hint`).
    pub fn unknown<S: AsRef<str>>(what: &str, name: &str, known: &[S], hint: &str) -> Self {
        let list = if known.is_empty() {
            format!("none{hint}")
        } else {
            known
                .iter()
                .map(AsRef::as_ref)
                .collect::<Vec<_>>()
                .join(", ")
        };
        Self::not_found(format!("no {what} '{name}' ({what}s: {list})"))
    }
    /// 409: refused in the current state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::CONFLICT,
            message: message.into(),
        }
    }
    /// 500: diad itself failed.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
        }
    }
    /// A card error with the operation it interrupted.
    pub fn card(context: &str, e: dia::Error) -> Self {
        let mut err = Self::from(e);
        err.message = format!("{context}: {}", err.message);
        err
    }
}

impl From<dia::Error> for ApiError {
    fn from(e: dia::Error) -> Self {
        let status = match &e {
            dia::Error::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            dia::Error::CardError { .. }
            | dia::Error::Gone { .. }
            | dia::Error::NoDevice { .. } => StatusCode::SERVICE_UNAVAILABLE,
            dia::Error::OverCapacity { .. } => StatusCode::CONFLICT,
            dia::Error::Ioctl { errno, .. } => match *errno {
                Errno::ENOSPC => StatusCode::INSUFFICIENT_STORAGE,
                Errno::EBUSY | Errno::EEXIST => StatusCode::CONFLICT,
                Errno::ENOENT => StatusCode::NOT_FOUND,
                Errno::EINVAL | Errno::ENAMETOOLONG => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self {
            status,
            message: e.to_string(),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        Self::internal(format!("{e:#}"))
    }
}

impl ApiError {
    /// The JSON body every error is answered with.
    pub fn body(&self) -> serde_json::Value {
        json!({ "error": self.message })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}
