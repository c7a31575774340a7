//! Fault injection for tests (built only for unit tests and with the
//! `testing` feature, never into a release binary): `CONDUCTOR_NETD_FAULT=
//! after_create_endpoint` makes every attach fail right after the kernel
//! created the endpoint, to exercise the rollback path end to end.

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
    /// Fail after the kernel step, undoing it as any later failure would.
    pub(super) async fn fault_after_create_endpoint(&self, ep: &Endpoint) -> Result<()> {
        if self.fault.as_deref() != Some("after_create_endpoint") {
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
