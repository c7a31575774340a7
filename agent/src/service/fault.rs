//! Fault injection for tests (built only for unit tests and with the
//! `testing` feature, never into a release binary). `CONDUCTOR_NETD_FAULT`
//! is a comma-separated list of:
//! - `after_create_endpoint`: every attach fails right after the kernel
//!   created the endpoint (the rollback path, end to end);
//! - `slow_attach`: every attach waits 500 ms after the kernel step, before
//!   it is recorded as attached (a client can hang up half-way);
//! - `slow_detach`: every veth deletion waits 300 ms first (detaches of one
//!   endpoint overlap).

use super::Service;
use crate::error::{Error, Result};
use crate::kernel::Kernel;
use crate::model::Endpoint;

/// Environment variable naming the fault to inject.
pub const FAULT_ENV: &str = "CONDUCTOR_NETD_FAULT";

pub(super) fn from_env() -> Option<String> {
    std::env::var(FAULT_ENV).ok().filter(|f| !f.is_empty())
}

impl<K: Kernel> Service<K> {
    pub(super) fn fault(&self, name: &str) -> bool {
        self.fault
            .as_deref()
            .is_some_and(|f| f.split(',').any(|f| f.trim() == name))
    }

    /// Before a veth deletion (`slow_detach`).
    pub(super) async fn fault_before_delete(&self) {
        if self.fault("slow_detach") {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
    }

    /// Fail (or wait) after the kernel step, undoing it as any later
    /// failure would.
    pub(super) async fn fault_after_create_endpoint(&self, ep: &Endpoint) -> Result<()> {
        if self.fault("slow_attach") {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        if !self.fault("after_create_endpoint") {
            return Ok(());
        }
        if let Err(e) = self.kernel.delete_link(&ep.host_ifname).await {
            tracing::warn!(error = %e, "rollback of {} failed", ep.host_ifname);
        }
        Err(Error::Internal(format!(
            "injected failure after creating endpoint {} ({FAULT_ENV})",
            ep.id
        )))
    }
}
