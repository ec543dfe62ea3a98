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
    /// Another appliance changed the cluster state this change read: it was
    /// undone and may run again from the new state.
    pub raced: bool,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            raced: false,
        }
    }
    /// 409 after a lost race in the cluster state (see `raced`).
    pub fn raced() -> Self {
        Self {
            raced: true,
            ..Self::conflict(
                "another appliance changed the cluster state at the same moment: try again",
            )
        }
    }
    /// 503: the cluster's state store (etcd) cannot take changes now.
    pub fn store_unavailable(e: anyhow::Error) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the cluster state store is unavailable ({e:#}): changes are refused until etcd has a quorum again; volumes and ports keep working"
            ),
        )
    }
    /// 400: the request is wrong; `message` says what is allowed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    /// 404: no such object.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
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
        Self::new(StatusCode::CONFLICT, message)
    }
    /// 503: something diad needs (another appliance) cannot be reached.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }
    /// Another appliance's answer, passed on with its status.
    pub fn from_status(status: u16, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            message,
        )
    }
    /// 403: the caller may not use the API.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }
    /// 500: diad itself failed.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
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
        Self::new(status, e.to_string())
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
