//! The daemon's published ports: records kept in `<state>/ports.json`, one
//! forwarder per record, targets resolved per connection (a container's
//! address from what the Docker watchers report, an endpoint's from the
//! service), so a container restarted with a new address is followed.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use super::forward::{self, Forwarder, Upstream};
use super::spec::{HostSide, PortSpec, PortTarget, Proto};
use crate::error::{Error, Result};
use crate::state::Store;

/// What the daemon's endpoints answer for ports (implemented by the
/// service; a trait so ports do not depend on the kernel type).
pub trait EndpointAddresses: Send + Sync + 'static {
    /// The address of a `Netns` or `Endpoint` target, if attached.
    fn address(&self, target: &PortTarget) -> Option<IpAddr>;
    /// The namespace names endpoints were attached with.
    fn netns_names(&self) -> Vec<String>;
}

/// A running container as ports see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerAddr {
    pub id: String,
    pub ip: Option<IpAddr>,
    /// Ports its image exposes (`EXPOSE`, `--expose`).
    pub exposed: Vec<u16>,
    /// A worker's parent (`--network=container:X`, X an id or a name): the
    /// worker has no address of its own and is reached at the parent's.
    pub shares_network_of: Option<String>,
}

/// Hops followed from a worker to the container that owns the namespace
/// (Docker resolves chains to the owner, so one is the norm).
const MAX_SHARE_HOPS: usize = 4;

/// A container's address, or for a worker its parent's (by name, id or id
/// prefix as Docker recorded it).
fn container_address(containers: &HashMap<String, ContainerAddr>, name: &str) -> Option<IpAddr> {
    let mut current = containers.get(name)?;
    for _ in 0..MAX_SHARE_HOPS {
        if current.ip.is_some() {
            return current.ip;
        }
        let parent = current.shares_network_of.as_deref()?;
        current = containers.get(parent).or_else(|| {
            containers
                .values()
                .find(|c| !c.id.is_empty() && c.id.starts_with(parent))
        })?;
    }
    current.ip
}

/// A published port as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortView {
    pub id: String,
    #[serde(flatten)]
    pub spec: PortSpec,
    /// Where it forwards right now (None: the target is not running).
    pub address: Option<String>,
    /// The listener is bound.
    pub listening: bool,
    /// Why it is not (a saved port whose host address is taken now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

struct Entry {
    spec: PortSpec,
    forwarder: Option<Forwarder>,
    error: Option<String>,
}

pub type Containers = Arc<RwLock<HashMap<String, ContainerAddr>>>;

pub struct Ports {
    store: Arc<Store>,
    endpoints: Arc<dyn EndpointAddresses>,
    pub(super) containers: Containers,
    entries: tokio::sync::Mutex<BTreeMap<String, Entry>>,
}

impl Ports {
    pub fn new(store: Arc<Store>, endpoints: Arc<dyn EndpointAddresses>) -> Arc<Ports> {
        Arc::new(Ports {
            store,
            endpoints,
            containers: Arc::default(),
            entries: tokio::sync::Mutex::default(),
        })
    }

    fn file(&self) -> PathBuf {
        self.store.dir().join("ports.json")
    }

    /// Bind the saved ports (at start-up). A port that cannot be bound is
    /// kept, listed with its error, and logged.
    pub async fn restore(self: &Arc<Self>) -> Result<()> {
        let path = self.file();
        let text = match tokio::fs::read(&path).await {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::state("read", &path, e)),
        };
        let specs: Vec<PortSpec> = serde_json::from_slice(&text).map_err(|e| Error::Config {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let mut entries = self.entries.lock().await;
        for spec in specs {
            let (forwarder, error) = match self.bind(&spec).await {
                Ok(f) => (Some(f), None),
                Err(e) => {
                    tracing::warn!(port = %spec.side().id(), error = %e, "saved port not bound");
                    (None, Some(e.to_string()))
                }
            };
            tracing::info!(port = %spec.side().id(), target = %spec.target.describe(), "published port restored");
            entries.insert(
                spec.side().id(),
                Entry {
                    spec,
                    forwarder,
                    error,
                },
            );
        }
        Ok(())
    }

    /// Publish a port: checked, bound, saved; on any failure nothing is
    /// left (no listener, no record).
    pub async fn add(self: &Arc<Self>, spec: PortSpec) -> Result<PortView> {
        let id = spec.side().id();
        let mut entries = self.entries.lock().await;
        if let Some(e) = entries.get(&id) {
            return Err(Error::Conflict(format!(
                "host port {id} is already published (to {} port {})",
                e.spec.target.describe(),
                e.spec.port
            )));
        }
        if !self.exists(&spec.target) {
            let (what, name) = match &spec.target {
                PortTarget::Container(n) => ("container", n),
                PortTarget::Netns(n) => ("endpoint of netns", n),
                PortTarget::Endpoint(n) => ("endpoint", n),
            };
            return Err(Error::not_found(what, name.clone()));
        }
        let forwarder = self.bind(&spec).await?;
        let mut specs: Vec<PortSpec> = entries.values().map(|e| e.spec.clone()).collect();
        specs.push(spec.clone());
        self.save(specs).await?;
        entries.insert(
            id.clone(),
            Entry {
                spec,
                forwarder: Some(forwarder),
                error: None,
            },
        );
        Ok(self.view(&id, &entries[&id]))
    }

    pub async fn remove(&self, side: &HostSide) -> Result<PortView> {
        let id = side.id();
        let mut entries = self.entries.lock().await;
        let view = entries
            .get(&id)
            .map(|e| self.view(&id, e))
            .ok_or_else(|| Error::not_found("published port", id.clone()))?;
        let specs: Vec<PortSpec> = entries
            .iter()
            .filter(|(k, _)| **k != id)
            .map(|(_, e)| e.spec.clone())
            .collect();
        self.save(specs).await?;
        // Dropping the forwarder closes its listener and connections.
        entries.remove(&id);
        Ok(view)
    }

    pub async fn list(&self) -> Vec<PortView> {
        let entries = self.entries.lock().await;
        entries.iter().map(|(id, e)| self.view(id, e)).collect()
    }

    fn view(&self, id: &str, e: &Entry) -> PortView {
        PortView {
            id: id.to_string(),
            spec: e.spec.clone(),
            address: self.address(&e.spec.target).map(|ip| ip.to_string()),
            listening: e.forwarder.is_some(),
            error: e.error.clone(),
        }
    }

    fn exists(&self, target: &PortTarget) -> bool {
        match target {
            PortTarget::Container(n) => self.containers_read().contains_key(n),
            other => self.endpoints.address(other).is_some(),
        }
    }

    fn containers_read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, ContainerAddr>> {
        self.containers.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The target's address now.
    pub fn address(&self, target: &PortTarget) -> Option<IpAddr> {
        match target {
            PortTarget::Container(n) => container_address(&self.containers_read(), n),
            other => self.endpoints.address(other),
        }
    }

    async fn bind(self: &Arc<Self>, spec: &PortSpec) -> Result<Forwarder> {
        let upstream: Arc<dyn Upstream> = Arc::new(Target {
            ports: Arc::downgrade(self),
            target: spec.target.clone(),
            port: spec.port,
        });
        let bound = match spec.proto {
            Proto::Tcp => forward::bind_tcp(spec.host, upstream, copy_mode()).await,
            Proto::Udp => forward::bind_udp(spec.host, upstream),
        };
        bound.map_err(|e| bind_error(spec, e))
    }

    async fn save(&self, specs: Vec<PortSpec>) -> Result<()> {
        let store = self.store.clone();
        let path = self.file();
        let bytes = serde_json::to_vec_pretty(&specs)
            .map_err(|e| Error::Internal(format!("encode ports: {e}")))?;
        tokio::task::spawn_blocking(move || store.write_atomic(&path, &bytes, true))
            .await
            .map_err(|e| Error::Internal(format!("state writer: {e}")))?
    }

    /// Names the `*.localhost` proxy can route, with their ports (published
    /// target ports first, then exposed ones).
    pub async fn routable(&self) -> BTreeMap<String, Vec<u16>> {
        let mut out: BTreeMap<String, Vec<u16>> = BTreeMap::new();
        for e in self.entries.lock().await.values() {
            let ports = out.entry(e.spec.target.name().to_string()).or_default();
            if !ports.contains(&e.spec.port) && e.spec.proto == Proto::Tcp {
                ports.push(e.spec.port);
            }
        }
        for (name, c) in self.containers_read().iter() {
            let ports = out.entry(name.clone()).or_default();
            for p in &c.exposed {
                if !ports.contains(p) {
                    ports.push(*p);
                }
            }
        }
        for ns in self.endpoints.netns_names() {
            out.entry(ns).or_default();
        }
        out
    }

    /// A name's address: a container's, else a namespace endpoint's.
    pub fn address_of_name(&self, name: &str) -> Option<IpAddr> {
        self.address(&PortTarget::Container(name.to_string()))
            .or_else(|| self.endpoints.address(&PortTarget::Netns(name.to_string())))
    }
}

/// splice(2) unless `CONDUCTOR_NETD_PORTS_COPY=buffered` (the benchmark's
/// comparison).
fn copy_mode() -> conductor_egress::CopyMode {
    match std::env::var("CONDUCTOR_NETD_PORTS_COPY").as_deref() {
        Ok("buffered") => conductor_egress::CopyMode::Buffered,
        _ => conductor_egress::CopyMode::Splice,
    }
}

fn bind_error(spec: &PortSpec, e: io::Error) -> Error {
    let id = spec.side().id();
    match e.kind() {
        io::ErrorKind::AddrInUse => Error::Conflict(format!("host port {id} is in use")),
        io::ErrorKind::AddrNotAvailable => Error::invalid(
            "host address",
            spec.host.ip(),
            "is not an address of this machine",
        ),
        io::ErrorKind::PermissionDenied => {
            Error::Permission(format!("binding host port {id}: {e}"))
        }
        _ => Error::Internal(format!("binding host port {id}: {e}")),
    }
}

/// A record's upstream: looked up per connection.
struct Target {
    ports: std::sync::Weak<Ports>,
    target: PortTarget,
    port: u16,
}

impl Upstream for Target {
    fn resolve(&self) -> Option<SocketAddr> {
        let ports = self.ports.upgrade()?;
        ports
            .address(&self.target)
            .map(|ip| SocketAddr::new(ip, self.port))
    }
}
