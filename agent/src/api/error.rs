//! The API's errors: what the server answers besides the service's own
//! errors (bodies, routes, peers, time-outs), and what a client meets
//! (an unreachable daemon, an error answer). Both carry an `ErrorClass`, so
//! the CLI exits by class and the server answers by class.

use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorClass};

/// `{"error":{"code":"...","message":"..."}}`, the body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// What the server answers with when a request fails.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Service(#[from] Error),
    /// The request body is not the JSON the route expects.
    #[error("malformed request body: {0}")]
    BadBody(String),
    /// The request body is larger than the API accepts.
    #[error("request body larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// A query parameter has a value the route does not take.
    #[error("invalid query parameter {name} {value:?}: {reason}")]
    BadQuery {
        name: String,
        value: String,
        reason: String,
    },
    /// The peer of the API socket is not allowed in.
    #[error("{0}")]
    Forbidden(String),
    /// No such route.
    #[error("no route for {method} {path}")]
    NoRoute { method: String, path: String },
    /// The route exists but not with this method.
    #[error("method {method} not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    /// The client did not send its request in time.
    #[error("the request body was not received within {ms} ms")]
    Timeout { ms: u64 },
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Service(e) => e.code(),
            ApiError::BadBody(_) => "malformed_body",
            ApiError::TooLarge { .. } => "payload_too_large",
            ApiError::BadQuery { .. } => "invalid_argument",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NoRoute { .. } => "no_route",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Timeout { .. } => "timeout",
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            ApiError::Service(e) => e.status(),
            ApiError::BadBody(_) | ApiError::BadQuery { .. } => 400,
            ApiError::Forbidden(_) => 403,
            ApiError::NoRoute { .. } => 404,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::Timeout { .. } => 408,
            ApiError::TooLarge { .. } => 413,
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code().to_string(),
                message: self.to_string(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = axum::http::StatusCode::from_u16(self.status())
            .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::warn!(code = self.code(), error = %self, "request failed");
        }
        let mut response = (status, axum::Json(self.body())).into_response();
        if matches!(self, ApiError::Timeout { .. }) {
            // The rest of a body that did not come in time is not waited
            // for: the connection ends with this answer.
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        response
    }
}

/// What a client of the API can meet.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers on the socket.
    #[error("cannot reach {peer} at {socket}: {why}")]
    Unreachable {
        peer: &'static str,
        socket: String,
        why: String,
    },
    /// The connection broke, or the answer was not HTTP.
    #[error("{0}")]
    Transport(String),
    /// The daemon answered with an error.
    #[error("{message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// The daemon answered something this client cannot read.
    #[error("{0}")]
    Decode(String),
}

impl ClientError {
    pub fn class(&self) -> ErrorClass {
        match self {
            ClientError::Unreachable { .. } => ErrorClass::Unreachable,
            ClientError::Api { status, .. } => ErrorClass::of_status(*status),
            ClientError::Transport(_) | ClientError::Decode(_) => ErrorClass::Internal,
        }
    }

    /// The stable code of an error answer, if this is one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A client error met by local code (the demo, `docker up`): an unreachable
/// daemon stays that; anything else is unexpected.
impl From<ClientError> for Error {
    fn from(e: ClientError) -> Error {
        match e {
            ClientError::Unreachable { .. } => Error::Unreachable(e.to_string()),
            ClientError::Api {
                status, message, ..
            } => match ErrorClass::of_status(status) {
                ErrorClass::Invalid => Error::invalid("request", "", message),
                ErrorClass::NotFound => Error::Internal(message),
                ErrorClass::Conflict => Error::Conflict(message),
                ErrorClass::Permission => Error::Permission(message),
                _ => Error::Internal(message),
            },
            other => Error::Internal(other.to_string()),
        }
    }
}
