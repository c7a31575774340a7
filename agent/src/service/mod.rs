//! The service: networks and endpoints, kept in memory, persisted before the
//! kernel is touched, and rolled back when a step fails.
//!
//! Ordering rules that make crashes safe:
//! - create network: persist the record, then make the bridge (a crash in
//!   between leaves a record whose bridge the next start recreates);
//! - attach: reserve the address and persist the endpoint, then create the
//!   veth (a crash in between leaves a record that reconciliation checks
//!   against the kernel and drops if the endpoint is not complete);
//! - detach / remove: delete in the kernel first, then the record.
//!
//! So an address is on disk before it is in any namespace, and leaves the
//! disk only after it left the kernel: it is never handed out twice.

mod adopt;
mod attach;
mod detach;
#[cfg(any(test, feature = "testing"))]
mod fault;
mod networks;
pub mod observer;
mod reconcile;
mod registry;
mod views;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::Notify;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::kernel::Kernel;
use crate::model::Endpoint;
use crate::state::Store;
use registry::Registry;

#[cfg(any(test, feature = "testing"))]
pub use fault::FAULT_ENV;
pub use observer::NetworkObserver;
pub use reconcile::ReconcileReport;

pub struct Service<K: Kernel> {
    kernel: K,
    store: Arc<Store>,
    config: Config,
    tag: String,
    registry: Mutex<Registry>,
    changed: Notify,
    started: Instant,
    /// A failure to inject (tests only; see `fault`).
    #[cfg(any(test, feature = "testing"))]
    fault: Option<String>,
    probe: Mutex<Option<serde_json::Value>>,
    /// Where detaches that do not wait send their endpoint ids.
    reaper: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<String>>,
    /// Bridges in our prefix that no network record uses (found at start).
    unmanaged: Mutex<Vec<crate::api::types::UnmanagedBridge>>,
    /// Names and egress for the networks (set once by the daemon).
    observer: std::sync::OnceLock<Arc<dyn NetworkObserver>>,
    /// Every network's egress policy (issue 12), from the state directory.
    policies: Arc<crate::policy::Policies>,
}

impl<K: Kernel> Service<K> {
    /// A service over `kernel` and the state in `store`. Call `reconcile`
    /// before serving.
    pub fn new(kernel: K, store: Store, config: Config) -> Result<Service<K>> {
        let tag = store.instance()?.tag;
        let policies = Arc::new(crate::policy::Policies::open(store.dir())?);
        Ok(Service {
            kernel,
            store: Arc::new(store),
            config,
            tag,
            registry: Mutex::new(Registry::default()),
            changed: Notify::new(),
            started: Instant::now(),
            #[cfg(any(test, feature = "testing"))]
            fault: fault::from_env(),
            probe: Mutex::new(None),
            reaper: std::sync::OnceLock::new(),
            unmanaged: Mutex::new(Vec::new()),
            observer: std::sync::OnceLock::new(),
            policies,
        })
    }

    /// Every network's egress policy.
    pub fn policies(&self) -> &Arc<crate::policy::Policies> {
        &self.policies
    }

    pub fn kernel(&self) -> &K {
        &self.kernel
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The state directory's store (shared with the Docker integration).
    pub fn store(&self) -> Arc<Store> {
        self.store.clone()
    }

    /// Prefix of the host-side names of this daemon's endpoints.
    pub fn link_prefix(&self) -> String {
        format!("cn{}", self.tag)
    }

    pub fn set_probe(&self, report: serde_json::Value) {
        *self.probe.lock().unwrap_or_else(|p| p.into_inner()) = Some(report);
    }

    pub fn probe(&self) -> Option<serde_json::Value> {
        self.probe.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn reg(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Without fsync a record is one append to the journal in the page cache
    /// (microseconds): done in place. With fsync it goes to the blocking pool.
    async fn persist_endpoint(&self, ep: &Endpoint) -> Result<()> {
        if !self.store.endpoint_fsync() {
            return self.store.save_endpoint(ep);
        }
        let store = self.store.clone();
        let ep = ep.clone();
        tokio::task::spawn_blocking(move || store.save_endpoint(&ep))
            .await
            .map_err(|e| Error::Internal(format!("state writer: {e}")))?
    }

    async fn unpersist_endpoint(&self, id: &str) -> Result<()> {
        if !self.store.endpoint_fsync() {
            return self.store.remove_endpoint(id);
        }
        let store = self.store.clone();
        let id = id.to_string();
        tokio::task::spawn_blocking(move || store.remove_endpoint(&id))
            .await
            .map_err(|e| Error::Internal(format!("state writer: {e}")))?
    }
}

#[cfg(test)]
mod recovery_tests;
#[cfg(test)]
pub(crate) mod tests;
