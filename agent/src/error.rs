//! The agent's typed errors. Every error carries a stable machine-readable
//! `code` (used in the API's `{"error":{"code","message"}}` body), maps to one
//! HTTP status and one CLI exit code, and names the offending value.

use std::path::PathBuf;

/// What went wrong, in the words an API client can branch on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request was understood but a value in it is not acceptable.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: String,
    },
    /// The request body is not the JSON the route expects.
    #[error("malformed request body: {0}")]
    BadBody(String),
    /// The request body is larger than the API accepts.
    #[error("request body larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// Something named in the request does not exist.
    #[error("{what} {name:?} not found")]
    NotFound { what: &'static str, name: String },
    /// The request conflicts with what already exists.
    #[error("{0}")]
    Conflict(String),
    /// No free subnet or address is left.
    #[error("{0}")]
    Exhausted(String),
    /// The peer of the API socket is not allowed in.
    #[error("{0}")]
    Forbidden(String),
    /// No such route in the API.
    #[error("no route for {method} {path}")]
    NoRoute { method: String, path: String },
    /// The route exists but not with this method.
    #[error("method {method} not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    /// The kernel refused or failed an operation.
    #[error("{context}: {source}")]
    Kernel {
        context: String,
        #[source]
        source: netns::Error,
    },
    /// Reading or writing persistent state failed.
    #[error("state {op} {}: {source}", path.display())]
    State {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is unusable.
    #[error("configuration {}: {reason}", path.display())]
    Config { path: PathBuf, reason: String },
    /// The daemon cannot be reached, or answered something unexpected.
    #[error("{0}")]
    Client(String),
    /// An error the daemon answered with (seen by clients).
    #[error("{message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// A file conductor-net needs is not installed on this machine.
    #[error("{what} not found (looked in {looked_in}); {hint}")]
    NotInstalled {
        what: &'static str,
        looked_in: String,
        hint: &'static str,
    },
    /// Anything else (a bug, or an environment we did not expect).
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn invalid(what: &'static str, value: impl ToString, reason: impl Into<String>) -> Self {
        Error::Invalid {
            what,
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    pub fn not_found(what: &'static str, name: impl Into<String>) -> Self {
        Error::NotFound {
            what,
            name: name.into(),
        }
    }

    pub fn kernel(context: impl Into<String>, source: netns::Error) -> Self {
        Error::Kernel {
            context: context.into(),
            source,
        }
    }

    pub fn state(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::State {
            op,
            path: path.into(),
            source,
        }
    }

    /// The stable code in API error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Invalid { .. } => "invalid_argument",
            Error::BadBody(_) => "malformed_body",
            Error::TooLarge { .. } => "payload_too_large",
            Error::NotFound { .. } | Error::NotInstalled { .. } => "not_found",
            Error::Conflict(_) => "conflict",
            Error::Exhausted(_) => "exhausted",
            Error::Forbidden(_) => "forbidden",
            Error::NoRoute { .. } => "no_route",
            Error::MethodNotAllowed { .. } => "method_not_allowed",
            Error::Kernel { source, .. } => match source.kind() {
                netns::ErrorKind::InvalidInput => "invalid_argument",
                netns::ErrorKind::NotFound => "not_found",
                netns::ErrorKind::AlreadyExists => "conflict",
                netns::ErrorKind::Unsupported => "unsupported",
                netns::ErrorKind::Other => "kernel",
            },
            Error::State { .. } => "state",
            Error::Config { .. } => "config",
            Error::Client(_) => "client",
            Error::Api { .. } => "api",
            Error::Internal(_) => "internal",
        }
    }

    /// The HTTP status the API answers this error with.
    pub fn status(&self) -> u16 {
        if let Error::Api { status, .. } = self {
            return *status;
        }
        match self.code() {
            "invalid_argument" | "malformed_body" => 400,
            "forbidden" => 403,
            "not_found" | "no_route" => 404,
            "method_not_allowed" => 405,
            "conflict" | "exhausted" => 409,
            "payload_too_large" => 413,
            "unsupported" => 501,
            _ => 500,
        }
    }

    /// An error received from the daemon's API.
    pub fn from_api(status: u16, code: &str, message: &str) -> Self {
        Error::Api {
            status,
            code: code.to_string(),
            message: message.to_string(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_statuses() {
        assert_eq!(Error::invalid("subnet", "x", "bad").status(), 400);
        assert_eq!(Error::not_found("network", "n").status(), 404);
        assert_eq!(Error::Conflict("c".into()).status(), 409);
        assert_eq!(Error::TooLarge { limit: 1 }.status(), 413);
        assert_eq!(Error::Forbidden("no".into()).status(), 403);
        assert_eq!(Error::Internal("x".into()).status(), 500);
    }

    #[test]
    fn messages_name_the_value() {
        let e = Error::invalid("subnet", "10.0.0.1/24", "host bits set");
        assert_eq!(
            e.to_string(),
            "invalid subnet \"10.0.0.1/24\": host bits set"
        );
    }
}
