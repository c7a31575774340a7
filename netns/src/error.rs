//! Typed errors: every failure names the operation, the object and the errno,
//! and `kind()` tells "already exists" from "not found" so callers can be
//! idempotent without string matching.

use nix::errno::Errno;

/// What a caller usually wants to branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The object is already there (EEXIST).
    AlreadyExists,
    /// The object is not there (ENODEV, ENOENT, ESRCH, EADDRNOTAVAIL).
    NotFound,
    /// The input was rejected before anything was sent to the kernel.
    InvalidInput,
    /// The kernel (or sandbox) does not support the request.
    Unsupported,
    /// Anything else.
    Other,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input rejected before touching the kernel.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidInput {
        what: &'static str,
        value: String,
        reason: String,
    },
    /// A system call failed.
    #[error("{op} {object}: {}", describe(*errno))]
    Os {
        op: &'static str,
        object: String,
        errno: Errno,
    },
    /// The kernel answered a netlink request with an error.
    #[error("{op} {object}: {}", describe(*errno))]
    Netlink {
        op: &'static str,
        object: String,
        errno: Errno,
    },
    /// The kernel answered with something we could not make sense of.
    #[error("{op} {object}: {message}")]
    Protocol {
        op: &'static str,
        object: String,
        message: String,
    },
}

fn describe(errno: Errno) -> String {
    format!("{} ({:?})", errno.desc(), errno)
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidInput { .. } => ErrorKind::InvalidInput,
            Error::Os { errno, .. } | Error::Netlink { errno, .. } => match *errno {
                Errno::EEXIST => ErrorKind::AlreadyExists,
                Errno::ENODEV | Errno::ENOENT | Errno::ESRCH | Errno::EADDRNOTAVAIL => {
                    ErrorKind::NotFound
                }
                Errno::EOPNOTSUPP
                | Errno::ENOSYS
                | Errno::EPROTONOSUPPORT
                | Errno::EAFNOSUPPORT => ErrorKind::Unsupported,
                _ => ErrorKind::Other,
            },
            Error::Protocol { .. } => ErrorKind::Other,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.kind() == ErrorKind::NotFound
    }

    pub fn is_already_exists(&self) -> bool {
        self.kind() == ErrorKind::AlreadyExists
    }

    /// The errno behind this error, if one is known.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Os { errno, .. } | Error::Netlink { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    pub(crate) fn os(op: &'static str, object: impl Into<String>, errno: Errno) -> Self {
        Error::Os {
            op,
            object: object.into(),
            errno,
        }
    }

    pub(crate) fn invalid(
        what: &'static str,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Error::InvalidInput {
            what,
            value: value.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn protocol(
        op: &'static str,
        object: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::Protocol {
            op,
            object: object.into(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The errno inside an I/O error (EIO when it carries none).
pub(crate) fn errno_of(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_distinguish_exists_from_missing() {
        let exists = Error::Netlink {
            op: "add address",
            object: "10.0.0.1/24 on eth0".into(),
            errno: Errno::EEXIST,
        };
        let missing = Error::Netlink {
            op: "delete link",
            object: "veth0".into(),
            errno: Errno::ENODEV,
        };
        assert!(exists.is_already_exists());
        assert!(missing.is_not_found());
        assert_eq!(
            exists.to_string(),
            "add address 10.0.0.1/24 on eth0: File exists (EEXIST)"
        );
    }
}
