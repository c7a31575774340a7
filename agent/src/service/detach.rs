//! Detach: delete in the kernel first, then the record. A detach that does
//! not wait records a tombstone and leaves the deletion to the reaper.
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Service;
use crate::api::types::DetachResponse;
use crate::error::{Error, Result};
use crate::kernel::Kernel;
use crate::model::{Endpoint, EndpointState, Target};

/// The answer when there is nothing (left) to detach.
const NOT_DETACHED: DetachResponse = DetachResponse {
    detached: false,
    id: None,
    pending: false,
};

impl<K: Kernel> Service<K> {
    /// The reaper, a component of the daemon: it finishes detaches that do
    /// not wait (until it runs, every detach waits). The channel is in place
    /// when this returns; the future runs until `stop` and then lets the
    /// deletions it started finish (their tombstones are on disk anyway).
    pub fn run_reaper(
        self: Arc<Self>,
        stop: CancellationToken,
    ) -> impl std::future::Future<Output = Result<()>> + Send + 'static {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let installed = self.reaper.set(tx).is_ok();
        let weak = Arc::downgrade(&self);
        drop(self);
        async move {
            if !installed {
                return Ok(());
            }
            let mut running = tokio::task::JoinSet::new();
            loop {
                let id = tokio::select! {
                    _ = stop.cancelled() => break,
                    id = rx.recv() => id,
                };
                let (Some(id), Some(svc)) = (id, weak.upgrade()) else {
                    break;
                };
                running.spawn(async move { svc.finish_detach(&id).await });
                while running.try_join_next().is_some() {}
            }
            while running.join_next().await.is_some() {}
            Ok(())
        }
    }

    /// Run the reaper on its own task, never stopped (tests).
    #[cfg(test)]
    pub fn start_reaper(self: &Arc<Self>) {
        tokio::spawn(self.clone().run_reaper(CancellationToken::new()));
    }

    /// Detach `target` from `network`. Detaching something that is not
    /// attached succeeds with `detached: false`, as long as the target exists.
    pub async fn detach(
        &self,
        network: &str,
        target: &Target,
        wait: bool,
    ) -> Result<DetachResponse> {
        if !self.reg().networks.contains_key(network) {
            return Err(Error::not_found("network", network));
        }
        let id = match self.kernel.open(target).await {
            Ok((_ns, ns_id)) => self
                .reg()
                .find(network, ns_id)
                .map(|e| e.endpoint.id.clone()),
            Err(open_error) => {
                // The namespace is gone: find the endpoint by how it was named.
                let found = self
                    .reg()
                    .endpoints
                    .values()
                    .find(|e| e.endpoint.network == network && &e.endpoint.target == target)
                    .map(|e| e.endpoint.id.clone());
                match found {
                    Some(id) => Some(id),
                    None => return Err(open_error),
                }
            }
        };
        match id {
            // Gone by the time we look (another detach finished it): the
            // target was attached a moment ago and is not now.
            Some(id) => self.detach_known(&id, wait, true).await,
            None => Ok(NOT_DETACHED),
        }
    }

    /// Detach an endpoint by id. With `wait` false (and the reaper running)
    /// the answer comes once a tombstone is recorded and the veth deletion
    /// runs in the background. An id never known is NotFound; one that
    /// another request was detaching meanwhile is `detached: false`.
    pub async fn detach_id(&self, id: &str, wait: bool) -> Result<DetachResponse> {
        self.detach_known(id, wait, false).await
    }

    async fn detach_known(&self, id: &str, wait: bool, gone_ok: bool) -> Result<DetachResponse> {
        let mut waited = false;
        let endpoint = loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut reg = self.reg();
                match reg.endpoints.get_mut(id) {
                    None if gone_ok || waited => return Ok(NOT_DETACHED),
                    None => return Err(Error::not_found("endpoint", id)),
                    Some(e) if e.state == EndpointState::Attached => {
                        e.state = EndpointState::Detaching;
                        break e.endpoint.clone();
                    }
                    // Being attached or detached by another request: wait
                    // for it to settle, then look again.
                    Some(_) => waited = true,
                }
            }
            notified.await;
        };
        if let (false, Some(reaper)) = (wait, self.reaper.get()) {
            let mut tombstone = endpoint.clone();
            tombstone.detaching = true;
            let recorded = self.persist_endpoint(&tombstone).await;
            let queued = recorded.and_then(|()| {
                reaper
                    .send(id.to_string())
                    .map_err(|_| Error::Internal("the detach reaper is gone".into()))
            });
            return match queued {
                Ok(()) => Ok(DetachResponse {
                    detached: true,
                    id: Some(id.to_string()),
                    pending: true,
                }),
                Err(e) => {
                    self.undo_detaching(id);
                    Err(e)
                }
            };
        }
        let result = self.complete_detach(&endpoint).await;
        if result.is_err() {
            self.undo_detaching(id);
        }
        result.map(|()| DetachResponse {
            detached: true,
            id: Some(id.to_string()),
            pending: false,
        })
    }

    /// Delete the veth and the record of an endpoint in state Detaching,
    /// then forget it and free its addresses.
    pub(super) async fn complete_detach(&self, endpoint: &Endpoint) -> Result<()> {
        #[cfg(any(test, feature = "testing"))]
        self.fault_before_delete().await;
        self.kernel.delete_link(&endpoint.host_ifname).await?;
        self.unpersist_endpoint(&endpoint.id).await?;
        {
            let mut reg = self.reg();
            reg.endpoints.remove(&endpoint.id);
            reg.release(endpoint);
        }
        self.observe_endpoint_down(endpoint);
        self.changed.notify_waiters();
        Ok(())
    }

    pub(super) fn undo_detaching(&self, id: &str) {
        if let Some(ep) = self.reg().endpoints.get_mut(id) {
            ep.state = EndpointState::Attached;
        }
        self.changed.notify_waiters();
    }

    /// The background half of a detach that did not wait.
    async fn finish_detach(&self, id: &str) {
        let endpoint = self.reg().endpoints.get(id).map(|e| e.endpoint.clone());
        let Some(endpoint) = endpoint else { return };
        if let Err(e) = self.complete_detach(&endpoint).await {
            tracing::error!(endpoint = %id, error = %e, "background detach failed; the endpoint stays attached");
            if let Err(e) = self.persist_endpoint(&endpoint).await {
                tracing::error!(endpoint = %id, error = %e, "could not clear the detach tombstone");
            }
            self.undo_detaching(id);
        }
    }
}
