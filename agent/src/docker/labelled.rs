//! Containers on conductor networks by label: a container started with
//! `--network=none --label conductor.network=NET` is attached to NET when
//! it runs (also one already running when netd starts: the watcher's
//! resync reports it) and detached when it stops. A label naming an
//! unknown network leaves the container alone; the reason is logged and
//! shown by `status` (`LabelledBoard`, shared with the API).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::model::{DockerContainer, DockerNetwork};
use super::observer::{DockerObserver, Done};
use crate::api::types::{AttachRequest, DockerEngineRequest, LabelledContainer};
use crate::error::ErrorClass;
use crate::kernel::Kernel;
use crate::model::Target;
use crate::service::Service;

pub const NETWORK_LABEL: &str = "conductor.network";

/// What was done for each labelled container, by container id.
#[derive(Default, Clone)]
pub struct LabelledBoard(Arc<Mutex<BTreeMap<String, LabelledContainer>>>);

impl LabelledBoard {
    pub fn all(&self) -> Vec<LabelledContainer> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, LabelledContainer>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct LabelAttach<K: Kernel> {
    svc: Arc<Service<K>>,
    board: LabelledBoard,
}

impl<K: Kernel> LabelAttach<K> {
    pub fn new(svc: Arc<Service<K>>, board: LabelledBoard) -> LabelAttach<K> {
        LabelAttach { svc, board }
    }

    /// The namespace as Docker names it (its SandboxKey, stable for the
    /// container's life and still matching the record after it is gone),
    /// else its pid.
    fn target(c: &DockerContainer) -> Option<(Option<PathBuf>, Option<i32>)> {
        match (&c.sandbox, c.pid) {
            (Some(s), _) => Some((Some(s.clone()), None)),
            (None, Some(pid)) => Some((None, Some(pid as i32))),
            _ => None,
        }
    }

    async fn up(&self, engine: &DockerEngineRequest, c: &DockerContainer) {
        let Some(network) = c.labels.get(NETWORK_LABEL).cloned() else {
            return;
        };
        if self
            .board
            .lock()
            .get(&c.id)
            .is_some_and(|s| s.network == network && s.endpoint.is_some())
        {
            return;
        }
        let mut entry = LabelledContainer {
            engine: engine.name.clone(),
            id: c.id.clone(),
            name: c.name.clone(),
            network: network.clone(),
            endpoint: None,
            address: None,
            problem: None,
        };
        match Self::target(c) {
            None => entry.problem = Some("Docker reports no namespace for it".into()),
            Some((netns_path, pid)) => {
                let req = AttachRequest {
                    netns_path,
                    pid,
                    ..Default::default()
                };
                match self.svc.attach(&network, req).await {
                    Ok(r) => {
                        tracing::info!(container = %c.name, network = %network, address = %r.endpoint.endpoint.ipv4, "attached by label");
                        entry.address = Some(r.endpoint.endpoint.ipv4.to_string());
                        entry.endpoint = Some(r.endpoint.endpoint.id);
                    }
                    Err(e) => {
                        let reason = if e.class() == ErrorClass::NotFound {
                            format!("label {NETWORK_LABEL}={network}: no conductor network {network:?}; left alone")
                        } else {
                            format!("attach to {network:?}: {e}")
                        };
                        tracing::warn!(container = %c.name, "{reason}");
                        entry.problem = Some(reason);
                    }
                }
            }
        }
        self.board.lock().insert(c.id.clone(), entry);
    }

    async fn down(&self, c: &DockerContainer) {
        let Some(network) = c.labels.get(NETWORK_LABEL) else {
            return;
        };
        let known = self.board.lock().remove(&c.id);
        let result = match known.and_then(|k| k.endpoint) {
            Some(ep) => self.svc.detach_id(&ep, true).await.map(drop),
            // Not attached by this netd (it restarted): by how it was named.
            None => match Self::target(c) {
                Some((Some(path), _)) => self
                    .svc
                    .detach(network, &Target::NetnsPath(path), true)
                    .await
                    .map(drop),
                _ => Ok(()),
            },
        };
        match result {
            Ok(()) => tracing::info!(container = %c.name, network = %network, "detached by label"),
            Err(e) if e.class() == ErrorClass::NotFound => {}
            Err(e) => {
                tracing::warn!(container = %c.name, network = %network, error = %e, "detach by label")
            }
        }
    }
}

impl<K: Kernel> DockerObserver for LabelAttach<K> {
    fn container_up<'a>(
        &'a self,
        engine: &'a DockerEngineRequest,
        container: &'a DockerContainer,
        _old: Option<&'a DockerContainer>,
        _networks: &'a HashMap<String, DockerNetwork>,
    ) -> Done<'a> {
        Box::pin(self.up(engine, container))
    }

    fn container_down<'a>(
        &'a self,
        _engine: &'a DockerEngineRequest,
        container: &'a DockerContainer,
    ) -> Done<'a> {
        Box::pin(self.down(container))
    }
}
