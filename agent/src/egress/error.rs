//! Egress errors; the daemon wraps them into its own.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// A value that cannot make a valid rule.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: String,
    },
    /// A firewall program could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// A firewall program failed.
    #[error("{program} {args} failed ({status}): {stderr}")]
    Command {
        program: String,
        args: String,
        status: String,
        /// Its error output, and for a restore the line it refused.
        stderr: String,
    },
    /// A firewall program did not finish in time (killed).
    #[error("{program} did not finish within {after:?}")]
    Timeout { program: String, after: Duration },
    /// The backend cannot work with what this machine offers.
    #[error("egress backend {backend} cannot be used here: {reason}")]
    Unsupported {
        backend: &'static str,
        reason: String,
    },
    /// The SNAT backend needs an uplink address and found none.
    #[error("no {family} uplink address: {reason}")]
    NoUplink {
        family: &'static str,
        reason: String,
    },
    /// Reading or switching forwarding / reading routes failed.
    #[error("{what}: {source}")]
    Stack {
        what: String,
        #[source]
        source: netns::Error,
    },
}
