//! The service's typed errors (what networks, endpoints, state, config and
//! the kernel can answer), and the error classes shared with the API's
//! errors (`api::ApiError`) and the client's (`api::ClientError`): every
//! class maps to one HTTP status and one CLI exit code, and every error
//! names the offending value.

use std::path::PathBuf;

/// What kind of failure, for exit codes and HTTP statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// A value in the request is not acceptable (400, exit 3).
    Invalid,
    /// Something named does not exist (404, exit 4).
    NotFound,
    /// It conflicts with what exists, or nothing is left (409, exit 5).
    Conflict,
    /// The caller may not do this (403, exit 6).
    Permission,
    /// The daemon (or Docker) could not be reached (exit 7).
    Unreachable,
    /// This machine or sandbox cannot do it, or a part is not installed
    /// (501, exit 8).
    Unsupported,
    /// Anything else: a kernel or disk failure, or a bug (500, exit 1).
    Internal,
}

/// CLI exit codes: 0 success, 2 usage (clap), the rest by class.
pub mod exit {
    pub const OK: i32 = 0;
    pub const INTERNAL: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const INVALID: i32 = 3;
    pub const NOT_FOUND: i32 = 4;
    pub const CONFLICT: i32 = 5;
    pub const PERMISSION: i32 = 6;
    pub const UNREACHABLE: i32 = 7;
    pub const UNSUPPORTED: i32 = 8;
}

impl ErrorClass {
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorClass::Invalid => exit::INVALID,
            ErrorClass::NotFound => exit::NOT_FOUND,
            ErrorClass::Conflict => exit::CONFLICT,
            ErrorClass::Permission => exit::PERMISSION,
            ErrorClass::Unreachable => exit::UNREACHABLE,
            ErrorClass::Unsupported => exit::UNSUPPORTED,
            ErrorClass::Internal => exit::INTERNAL,
        }
    }

    pub fn http_status(self) -> u16 {
        match self {
            ErrorClass::Invalid => 400,
            ErrorClass::NotFound => 404,
            ErrorClass::Conflict => 409,
            ErrorClass::Permission => 403,
            ErrorClass::Unsupported => 501,
            ErrorClass::Unreachable | ErrorClass::Internal => 500,
        }
    }

    /// The class of an HTTP status the daemon answered with.
    pub fn of_status(status: u16) -> ErrorClass {
        match status {
            400 | 405 | 413 | 422 => ErrorClass::Invalid,
            403 => ErrorClass::Permission,
            404 => ErrorClass::NotFound,
            409 => ErrorClass::Conflict,
            501 => ErrorClass::Unsupported,
            _ => ErrorClass::Internal,
        }
    }
}

/// What the service can answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value is not acceptable.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: String,
    },
    /// Something named does not exist.
    #[error("{what} {name:?} not found")]
    NotFound { what: &'static str, name: String },
    /// It conflicts with what already exists.
    #[error("{0}")]
    Conflict(String),
    /// No free subnet or address is left.
    #[error("{0}")]
    Exhausted(String),
    /// The caller (or this process) lacks a privilege.
    #[error("{0}")]
    Permission(String),
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
    /// A program or file conductor-net needs is not installed here.
    #[error("{what} not found (looked in {looked_in}); {hint}")]
    NotInstalled {
        what: &'static str,
        looked_in: String,
        hint: &'static str,
    },
    /// A peer (Docker, an upstream) could not be reached.
    #[error("{0}")]
    Unreachable(String),
    /// An operation that keeps going after a failure (teardown) failed in
    /// several places: every failure is kept, none hides the others.
    #[error("{context}: {} failure(s): {}", failures.len(), join(failures))]
    Several {
        context: String,
        failures: Vec<Error>,
    },
    /// Anything else (a bug, or an environment we did not expect).
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// Ok when nothing failed, the one failure, or all of them.
    pub fn collect(context: impl Into<String>, mut failures: Vec<Error>) -> Result<()> {
        match failures.len() {
            0 => Ok(()),
            1 => Err(failures.remove(0)),
            _ => Err(Error::Several {
                context: context.into(),
                failures,
            }),
        }
    }

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

    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Invalid { .. } | Error::Config { .. } => ErrorClass::Invalid,
            Error::NotFound { .. } => ErrorClass::NotFound,
            Error::Conflict(_) | Error::Exhausted(_) => ErrorClass::Conflict,
            Error::Permission(_) => ErrorClass::Permission,
            Error::NotInstalled { .. } => ErrorClass::Unsupported,
            Error::Unreachable(_) => ErrorClass::Unreachable,
            Error::Kernel { source, .. } => match source.kind() {
                netns::ErrorKind::InvalidInput => ErrorClass::Invalid,
                netns::ErrorKind::NotFound => ErrorClass::NotFound,
                netns::ErrorKind::AlreadyExists => ErrorClass::Conflict,
                netns::ErrorKind::Unsupported => ErrorClass::Unsupported,
                netns::ErrorKind::Other => ErrorClass::Internal,
            },
            Error::State { .. } | Error::Internal(_) => ErrorClass::Internal,
            // One class when they all agree, else the catch-all.
            Error::Several { failures, .. } => {
                let mut classes = failures.iter().map(Error::class);
                match classes.next() {
                    Some(first) if classes.all(|c| c == first) => first,
                    _ => ErrorClass::Internal,
                }
            }
        }
    }

    /// The stable code in API error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Invalid { .. } => "invalid_argument",
            Error::NotFound { .. } | Error::NotInstalled { .. } => "not_found",
            Error::Conflict(_) => "conflict",
            Error::Exhausted(_) => "exhausted",
            Error::Permission(_) => "forbidden",
            Error::Kernel { source, .. } => match source.kind() {
                netns::ErrorKind::InvalidInput => "invalid_argument",
                netns::ErrorKind::NotFound => "not_found",
                netns::ErrorKind::AlreadyExists => "conflict",
                netns::ErrorKind::Unsupported => "unsupported",
                netns::ErrorKind::Other => "kernel",
            },
            Error::State { .. } => "state",
            Error::Config { .. } => "config",
            Error::Unreachable(_) => "unreachable",
            Error::Internal(_) => "internal",
            Error::Several { failures, .. } => match failures.as_slice() {
                [one] => one.code(),
                _ => "several",
            },
        }
    }

    /// The HTTP status the API answers this error with.
    pub fn status(&self) -> u16 {
        match self {
            // A part missing on the daemon's machine is the daemon's problem.
            Error::NotInstalled { .. } => 500,
            _ => self.class().http_status(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn join(failures: &[Error]) -> String {
    failures
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_statuses_and_exit_codes() {
        let invalid = Error::invalid("subnet", "x", "bad");
        assert_eq!((invalid.status(), invalid.class().exit_code()), (400, 3));
        let missing = Error::not_found("network", "n");
        assert_eq!((missing.status(), missing.class().exit_code()), (404, 4));
        let conflict = Error::Conflict("c".into());
        assert_eq!((conflict.status(), conflict.class().exit_code()), (409, 5));
        assert_eq!(Error::Exhausted("e".into()).status(), 409);
        assert_eq!(Error::Permission("no".into()).status(), 403);
        assert_eq!(Error::Internal("x".into()).status(), 500);
        assert_eq!(Error::Internal("x".into()).class().exit_code(), 1);
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
