//! What the worker commands can fail with. Every error names the value
//! (container, image, socket, flag) and has a class, so the CLI exits with
//! the code of that class.

use std::path::PathBuf;

use crate::error::ErrorClass;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: String,
    },
    #[error("DOCKER_HOST {0:?} is not supported: only unix:// sockets are")]
    DockerHost(String),
    #[error("Docker socket {} does not exist (is dockerd running? set DOCKER_HOST=unix://PATH)", .0.display())]
    SocketMissing(PathBuf),
    #[error("permission denied on the Docker socket {} (run as root or as a member of its group)", .0.display())]
    SocketPermission(PathBuf),
    #[error("Docker at {}: {reason}", socket.display())]
    Unreachable { socket: PathBuf, reason: String },
    #[error("parent container {0:?} not found")]
    ParentMissing(String),
    #[error("parent container {name:?} is not running (state: {state})")]
    ParentNotRunning { name: String, state: String },
    #[error("image {0:?} not found (no registry is pulled from; import one, e.g. `tar -C ROOTFS -c . | docker import - {0}`)")]
    ImageMissing(String),
    #[error("container name {0:?} is already in use")]
    NameInUse(String),
    #[error("no worker {0:?} (workers are containers labelled conductor.role=worker)")]
    NoWorker(String),
    #[error("container {name:?} is not running (state: {state})")]
    NotRunning { name: String, state: String },
    #[error("container {0:?} not found")]
    NoContainer(String),
    #[error("command {command:?} cannot be run in the container: {message}")]
    Command { command: String, message: String },
    #[error("{context}: {source}")]
    Docker {
        context: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = WorkerError> = std::result::Result<T, E>;

impl WorkerError {
    pub fn invalid(what: &'static str, value: impl ToString, reason: impl Into<String>) -> Self {
        WorkerError::Invalid {
            what,
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    pub fn docker(context: impl Into<String>, source: bollard::errors::Error) -> Self {
        WorkerError::Docker {
            context: context.into(),
            source,
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        WorkerError::Io {
            context: context.into(),
            source,
        }
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            WorkerError::Invalid { .. } | WorkerError::Command { .. } => ErrorClass::Invalid,
            WorkerError::DockerHost(_) => ErrorClass::Unsupported,
            WorkerError::SocketMissing(_) | WorkerError::Unreachable { .. } => {
                ErrorClass::Unreachable
            }
            WorkerError::SocketPermission(_) => ErrorClass::Permission,
            WorkerError::ParentMissing(_)
            | WorkerError::ImageMissing(_)
            | WorkerError::NoWorker(_)
            | WorkerError::NoContainer(_) => ErrorClass::NotFound,
            WorkerError::ParentNotRunning { .. }
            | WorkerError::NotRunning { .. }
            | WorkerError::NameInUse(_) => ErrorClass::Conflict,
            WorkerError::Docker { source, .. } => match status_of(source) {
                Some(400) => ErrorClass::Invalid,
                Some(403) => ErrorClass::Permission,
                Some(404) => ErrorClass::NotFound,
                Some(409) => ErrorClass::Conflict,
                Some(_) => ErrorClass::Internal,
                None => ErrorClass::Unreachable,
            },
            WorkerError::Io { .. } => ErrorClass::Internal,
        }
    }
}

/// The HTTP status Docker answered with, if it answered.
pub fn status_of(e: &bollard::errors::Error) -> Option<u16> {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Docker's message for a failed start whose command cannot be executed
/// (the docker CLI exits 127 on these, 126 on permission).
pub fn command_failure(e: &bollard::errors::Error) -> Option<(i32, String)> {
    let bollard::errors::Error::DockerResponseServerError { message, .. } = e else {
        return None;
    };
    let m = message.to_lowercase();
    if m.contains("executable file not found") || m.contains("no such file or directory") {
        Some((127, message.clone()))
    } else if m.contains("permission denied") {
        Some((126, message.clone()))
    } else {
        None
    }
}
