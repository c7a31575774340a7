//! One tracked Docker daemon: a task that follows its event stream (through
//! bollard) and keeps netd's model of its networks and containers, applying
//! every change to names (DNS) and egress as it happens. It reconnects when
//! dockerd restarts, and on each (re)connection resynchronises everything:
//! a netd that was killed meanwhile serves running containers again.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bollard::query_parameters::{
    EventsOptions, InspectContainerOptions, InspectNetworkOptions, ListContainersOptions,
    ListNetworksOptions,
};
use bollard::Docker;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::client;
use super::model::{DockerContainer, DockerNetwork};
use super::observer::Observers;
use super::services::DockerServices;
use crate::api::types::{DockerEngineRequest, DockerEngineView, DockerNetworkView};
use crate::error::{Error, Result};

#[derive(Default)]
struct Model {
    networks: HashMap<String, DockerNetwork>,
    /// Running containers only.
    containers: HashMap<String, DockerContainer>,
}

#[derive(Default)]
struct Status {
    connected: bool,
    version: Option<String>,
    error: Option<String>,
}

/// How long one container inspection may take (dockerd answers in
/// milliseconds; one stuck on a container must not stall the watcher).
const INSPECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Containers inspected at once during a resynchronisation.
const SYNC_CONCURRENCY: usize = 8;

pub struct EngineWatch {
    req: DockerEngineRequest,
    services: Arc<DockerServices>,
    observers: Observers,
    model: Mutex<Model>,
    status: Mutex<Status>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl EngineWatch {
    pub fn new(
        req: DockerEngineRequest,
        services: Arc<DockerServices>,
        observers: Observers,
    ) -> EngineWatch {
        EngineWatch {
            req,
            services,
            observers,
            model: Mutex::default(),
            status: Mutex::default(),
        }
    }

    pub fn request(&self) -> &DockerEngineRequest {
        &self.req
    }

    /// Follow the daemon until `stop`; then undo everything done for it.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let sandboxes = self.services.watch_sandboxes(&self.req, stop.child_token());
        let mut backoff = Duration::from_millis(100);
        loop {
            let session = tokio::select! {
                _ = stop.cancelled() => break,
                r = self.session(&stop) => r,
            };
            {
                let mut s = lock(&self.status);
                s.connected = false;
                if let Err(e) = &session {
                    tracing::warn!(engine = %self.req.name, error = %e, "Docker connection lost; reconnecting");
                    s.error = Some(e.to_string());
                }
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
        if let Some(task) = sandboxes {
            task.abort();
        }
        self.teardown().await;
    }

    /// One connection: resynchronise, then apply events from a moment
    /// before the listing on (bollard sends the events request only when
    /// the stream is first polled: `since` replays what happened during the
    /// listing, so a container started then is not missed; replays are
    /// idempotent).
    async fn session(&self, stop: &CancellationToken) -> Result<()> {
        let docker = client::connect(&self.req.socket).await?;
        let version = docker.version().await.map_err(|e| {
            Error::Unreachable(format!("Docker at {}: {e}", self.req.socket.display()))
        })?;
        let mut filters = HashMap::new();
        filters.insert(
            "type".to_string(),
            vec!["network".to_string(), "container".to_string()],
        );
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs().saturating_sub(1))
            .unwrap_or(0);
        let mut events = docker.events(Some(EventsOptions {
            filters: Some(filters),
            since: Some(since.to_string()),
            ..Default::default()
        }));
        self.sync(&docker).await?;
        {
            let mut s = lock(&self.status);
            s.connected = true;
            s.error = None;
            s.version = version.version.clone();
        }
        tracing::info!(engine = %self.req.name, version = ?version.version, api = ?version.api_version, "following Docker");
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                e = events.next() => e,
            };
            let Some(event) = event else {
                return Err(Error::Unreachable(format!(
                    "Docker at {}: event stream ended",
                    self.req.socket.display()
                )));
            };
            let event = event.map_err(|e| {
                Error::Unreachable(format!("Docker at {}: {e}", self.req.socket.display()))
            })?;
            let kind = event.typ.map(|t| t.to_string()).unwrap_or_default();
            let action = event.action.unwrap_or_default();
            let actor = event.actor.unwrap_or_default();
            let Some(id) = actor.id else { continue };
            let attributes = actor.attributes.unwrap_or_default();
            match (kind.as_str(), action.as_str()) {
                ("network", "create") => self.refresh_network(&docker, &id).await,
                ("network", "destroy") => self.drop_network(&id).await,
                // A container joined or left: its endpoint on that network.
                ("network", "connect" | "disconnect") => {
                    self.refresh_network(&docker, &id).await;
                    if let Some(container) = attributes.get("container") {
                        self.refresh_container(&docker, container).await;
                    }
                }
                ("container", "start" | "rename" | "unpause" | "restart") => {
                    self.refresh_container(&docker, &id).await
                }
                ("container", "die" | "kill" | "stop" | "destroy" | "oom") => {
                    self.drop_container(&id).await
                }
                _ => {}
            }
        }
    }

    /// Make the model (and everything applied from it) equal Docker's view.
    async fn sync(&self, docker: &Docker) -> Result<()> {
        let networks = docker
            .list_networks(None::<ListNetworksOptions>)
            .await
            .map_err(|e| Error::Unreachable(format!("Docker: list networks: {e}")))?;
        let ids: Vec<String> = networks.iter().filter_map(|n| n.id.clone()).collect();
        let gone: Vec<String> = lock(&self.model)
            .networks
            .keys()
            .filter(|k| !ids.contains(k))
            .cloned()
            .collect();
        for id in gone {
            self.drop_network(&id).await;
        }
        for id in &ids {
            self.refresh_network(docker, id).await;
        }
        let containers = docker
            .list_containers(None::<ListContainersOptions>)
            .await
            .map_err(|e| Error::Unreachable(format!("Docker: list containers: {e}")))?;
        let running: Vec<String> = containers.iter().filter_map(|c| c.id.clone()).collect();
        let gone: Vec<String> = lock(&self.model)
            .containers
            .keys()
            .filter(|k| !running.contains(k))
            .cloned()
            .collect();
        for id in gone {
            self.drop_container(&id).await;
        }
        futures::stream::iter(&running)
            .for_each_concurrent(SYNC_CONCURRENCY, |id| self.refresh_container(docker, id))
            .await;
        Ok(())
    }

    async fn refresh_network(&self, docker: &Docker, id: &str) {
        let inspected = docker
            .inspect_network(id, None::<InspectNetworkOptions>)
            .await;
        let net = match inspected {
            Ok(n) => DockerNetwork::from_inspect(&n),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => None,
            Err(e) => {
                tracing::warn!(engine = %self.req.name, network = id, error = %e, "inspect network");
                return;
            }
        };
        let Some(net) = net else {
            self.drop_network(id).await;
            return;
        };
        let old = lock(&self.model)
            .networks
            .insert(net.id.clone(), net.clone());
        if old.as_ref() != Some(&net) {
            self.services.network_up(&self.req, &net).await;
            for o in self.observers.all() {
                o.network_up(&self.req, &net).await;
            }
        }
    }

    async fn drop_network(&self, id: &str) {
        let old = lock(&self.model).networks.remove(id);
        if let Some(net) = old {
            self.services.network_down(&self.req, &net).await;
            for o in self.observers.all() {
                o.network_down(&self.req, &net).await;
            }
        }
    }

    async fn refresh_container(&self, docker: &Docker, id: &str) {
        // Inside gVisor dockerd can hang inspecting a container it is
        // removing: one such container must not hold up the others.
        let inspect = docker.inspect_container(id, None::<InspectContainerOptions>);
        let Ok(inspected) = tokio::time::timeout(INSPECT_TIMEOUT, inspect).await else {
            tracing::warn!(engine = %self.req.name, container = id, timeout = ?INSPECT_TIMEOUT, "inspect container: no answer; skipped");
            return;
        };
        let container = match inspected {
            Ok(c) => DockerContainer::from_inspect(&c),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => None,
            Err(e) => {
                tracing::warn!(engine = %self.req.name, container = id, error = %e, "inspect container");
                return;
            }
        };
        match container {
            Some(c) if c.running => {
                let (old, networks) = {
                    let mut m = lock(&self.model);
                    let old = m.containers.insert(c.id.clone(), c.clone());
                    (old, m.networks.clone())
                };
                if old.as_ref() != Some(&c) {
                    self.services
                        .container_up(&self.req, &c, old.as_ref(), &networks)
                        .await;
                    for o in self.observers.all() {
                        o.container_up(&self.req, &c, old.as_ref(), &networks).await;
                    }
                }
            }
            _ => self.drop_container(id).await,
        }
    }

    async fn drop_container(&self, id: &str) {
        let (old, networks) = {
            let mut m = lock(&self.model);
            (m.containers.remove(id), m.networks.clone())
        };
        if let Some(c) = old {
            self.services.container_down(&self.req, &c, &networks).await;
            for o in self.observers.all() {
                o.container_down(&self.req, &c).await;
            }
        }
    }

    /// Everything done for this engine, undone (unregistered or stopping).
    async fn teardown(&self) {
        let (containers, networks) = {
            let mut m = lock(&self.model);
            (
                m.containers.drain().map(|(_, c)| c).collect::<Vec<_>>(),
                std::mem::take(&mut m.networks),
            )
        };
        for c in &containers {
            self.services.container_down(&self.req, c, &networks).await;
            for o in self.observers.all() {
                o.container_down(&self.req, c).await;
            }
        }
        for net in networks.values() {
            self.services.network_down(&self.req, net).await;
            for o in self.observers.all() {
                o.network_down(&self.req, net).await;
            }
        }
    }

    pub fn view(&self) -> DockerEngineView {
        let status = lock(&self.status);
        let model = lock(&self.model);
        let mut networks: Vec<DockerNetworkView> = model
            .networks
            .values()
            .map(|n| DockerNetworkView {
                id: n.id.clone(),
                name: n.name.clone(),
                driver: n.driver.clone(),
                bridge: n.bridge.clone(),
                subnet: n.subnet4.map(|s| s.to_string()),
                egress: self.services.egress_of(&self.req, n),
                containers: {
                    let mut names: Vec<String> = model
                        .containers
                        .values()
                        .filter(|c| c.endpoints.contains_key(&n.id))
                        .map(|c| c.name.clone())
                        .collect();
                    names.sort();
                    names
                },
            })
            .collect();
        networks.sort_by(|a, b| a.name.cmp(&b.name));
        DockerEngineView {
            request: self.req.clone(),
            connected: status.connected,
            docker_version: status.version.clone(),
            error: status.error.clone(),
            networks,
            dns_listeners: self.services.listener_count(&self.req),
        }
    }
}

/// The sandbox directory of an engine (where dockerd keeps its network
/// namespaces), when its exec root is known.
pub fn sandbox_dir(req: &DockerEngineRequest) -> Option<std::path::PathBuf> {
    req.exec_root.as_deref().map(|r| Path::new(r).join("netns"))
}
