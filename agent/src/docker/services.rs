//! What netd does for Docker's networks, applied from the engine watchers'
//! model changes: names (records in the DNS engine, and a listener on
//! 127.0.0.11:53 inside every container's namespace) and egress (the
//! daemon's egress backend on every bridge network). Shared by every
//! tracked engine.

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use conductor_dns::{ClientScopes, EndpointRecord, NamespaceListener, ScopeId};
use tokio_util::sync::CancellationToken;

use super::engine::sandbox_dir;
use super::model::{DockerContainer, DockerNetwork};
use super::sandbox;
use crate::api::types::DockerEngineRequest;
use crate::egress::Egress;

/// A DNS listener inside one container namespace.
struct Listener {
    listener: NamespaceListener,
    /// The container whose namespace it is, once known.
    container: Option<String>,
}

#[derive(Default)]
struct Names {
    /// By sandbox (namespace file) path, per engine.
    listeners: HashMap<(String, PathBuf), Listener>,
    /// A forwarding-only resolver on each bridge's gateway, by (engine,
    /// network id): DNS from the network to any resolver is sent there.
    gateways: HashMap<(String, String), (NamespaceListener, SocketAddrV4)>,
}

pub struct DockerServices {
    dns: Option<conductor_dns::Engine>,
    egress: Option<Arc<Egress>>,
    names: Mutex<Names>,
    /// The egress policies: DNS answers REFUSED for names they deny.
    policies: Option<Arc<crate::policy::Policies>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The scope of a Docker network in the DNS engine.
fn scope(engine: &str, network: &str) -> Option<ScopeId> {
    ScopeId::new(&format!("docker.{engine}.{network}")).ok()
}

impl DockerServices {
    pub fn new(dns: Option<conductor_dns::Engine>, egress: Option<Arc<Egress>>) -> DockerServices {
        DockerServices {
            dns,
            egress,
            names: Mutex::default(),
            policies: None,
        }
    }

    /// Apply these egress policies to the networks' DNS.
    pub fn with_policies(mut self, policies: Arc<crate::policy::Policies>) -> DockerServices {
        self.policies = Some(policies);
        self
    }

    /// The DNS side of a network's egress policy (read on every query, so
    /// a change applies to the next one).
    fn dns_policy(&self, net: &DockerNetwork) -> Option<Arc<dyn conductor_dns::QueryPolicy>> {
        let policies = self.policies.clone()?;
        Some(Arc::new(crate::policy::DnsPolicy {
            policies,
            network: net.name.clone(),
        }))
    }

    fn dns_for(&self, req: &DockerEngineRequest) -> Option<&conductor_dns::Engine> {
        self.dns.as_ref().filter(|_| req.dns)
    }

    fn egress_for(&self, req: &DockerEngineRequest) -> Option<&Arc<Egress>> {
        self.egress.as_ref().filter(|_| req.egress)
    }

    /// Where Docker does its own NAT: the egress policy alone.
    fn guard_for(&self, req: &DockerEngineRequest) -> Option<&Arc<Egress>> {
        self.egress.as_ref().filter(|_| req.policy && !req.egress)
    }

    /// Watch the engine's sandbox directory: a listener is opened in every
    /// new container namespace at once, before the container can ask.
    pub fn watch_sandboxes(
        self: &Arc<Self>,
        req: &DockerEngineRequest,
        stop: CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        self.dns_for(req)?;
        let dir = sandbox_dir(req)?;
        let me = self.clone();
        let engine = req.name.clone();
        Some(tokio::spawn(async move {
            sandbox::watch(dir, stop, move |path| {
                let me = me.clone();
                let engine = engine.clone();
                async move { me.open_listener(&engine, &path, None).await }
            })
            .await
        }))
    }

    /// Open (once) the listener of a sandbox; `container` when known.
    async fn open_listener(&self, engine: &str, path: &Path, container: Option<&DockerContainer>) {
        let Some(dns) = &self.dns else { return };
        let key = (engine.to_string(), path.to_path_buf());
        if lock(&self.names).listeners.contains_key(&key) {
            return;
        }
        let sockets = match sandbox::bind_dns(path).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(engine, sandbox = %path.display(), error = %e, "no DNS listener in this namespace");
                return;
            }
        };
        let listener = match dns.add_namespace_listener(sockets, None, None) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(engine, sandbox = %path.display(), error = %e, "DNS listener");
                return;
            }
        };
        tracing::debug!(engine, sandbox = %path.display(), "DNS listener opened");
        let mut names = lock(&self.names);
        if names.listeners.contains_key(&key) {
            // Another caller won the race; this one closes when dropped.
            return;
        }
        names.listeners.insert(
            key,
            Listener {
                listener,
                container: container.map(|c| c.id.clone()),
            },
        );
    }

    pub async fn network_up(&self, req: &DockerEngineRequest, net: &DockerNetwork) {
        if let (Some(dns), Some(s)) = (self.dns_for(req), scope(&req.name, &net.id)) {
            dns.records().set_scope_policy(&s, self.dns_policy(net));
        }
        if let Some(egress) = self.egress_for(req) {
            if let Some(mut spec) = egress_spec(net) {
                spec.dns = self.gateway_resolver(req, net).await;
                if let Err(e) = egress.enable(&spec).await {
                    tracing::warn!(engine = %req.name, network = %net.name, error = %e, "egress");
                }
            }
        }
        if let Some(egress) = self.guard_for(req) {
            if let Some(mut spec) = egress_spec(net) {
                spec.dns = self.gateway_resolver(req, net).await;
                if let Err(e) = egress.guard(&spec).await {
                    tracing::warn!(engine = %req.name, network = %net.name, error = %e, "egress policy");
                }
            }
        }
    }

    pub async fn network_down(&self, req: &DockerEngineRequest, net: &DockerNetwork) {
        if let Some(dns) = self.dns_for(req) {
            if let Some(s) = scope(&req.name, &net.id) {
                dns.records().remove_scope(&s);
            }
        }
        let gateway = lock(&self.names)
            .gateways
            .remove(&(req.name.clone(), net.id.clone()));
        if let Some((listener, _)) = gateway {
            listener.close().await;
        }
        if let Some(egress) = self.egress_for(req) {
            if let Some(spec) = egress_spec(net) {
                if let Err(e) = egress.disable(&spec).await {
                    tracing::warn!(engine = %req.name, network = %net.name, error = %e, "egress");
                }
            }
        }
        if let Some(egress) = self.guard_for(req) {
            if let Some(spec) = egress_spec(net) {
                if let Err(e) = egress.unguard(&spec).await {
                    tracing::warn!(engine = %req.name, network = %net.name, error = %e, "egress policy");
                }
            }
        }
    }

    /// A running container appeared or changed: its names on each of its
    /// networks, and its namespace's listener with those networks as scopes.
    pub async fn container_up(
        &self,
        req: &DockerEngineRequest,
        c: &DockerContainer,
        old: Option<&DockerContainer>,
        networks: &HashMap<String, DockerNetwork>,
    ) {
        let Some(dns) = self.dns_for(req) else { return };
        if let Some(old) = old {
            for id in old
                .endpoints
                .keys()
                .filter(|id| !c.endpoints.contains_key(*id))
            {
                if let Some(s) = scope(&req.name, id) {
                    dns.records().remove_endpoint(&s, &old.id);
                }
            }
        }
        let mut scopes = Vec::new();
        for (id, ep) in &c.endpoints {
            let Some(net) = networks.get(id) else {
                continue;
            };
            // Docker answers no names on its default bridge either.
            if net.default_bridge {
                continue;
            }
            let Some(s) = scope(&req.name, id) else {
                continue;
            };
            let record = EndpointRecord {
                name: c.name.clone(),
                aliases: ep.aliases.clone(),
                ipv4: ep.ipv4.into_iter().collect(),
                ipv6: ep.ipv6.into_iter().collect(),
            };
            if let Err(e) = dns.records().upsert_endpoint(&s, &c.id, &record) {
                tracing::warn!(engine = %req.name, container = %c.name, error = %e, "DNS record");
            }
            scopes.push(s);
        }
        let Some(sandbox) = &c.sandbox else { return };
        self.open_listener(&req.name, sandbox, Some(c)).await;
        let mut names = lock(&self.names);
        if let Some(l) = names
            .listeners
            .get_mut(&(req.name.clone(), sandbox.clone()))
        {
            l.container = Some(c.id.clone());
            l.listener.set_scopes(ClientScopes::new(scopes));
        }
    }

    pub async fn container_down(
        &self,
        req: &DockerEngineRequest,
        c: &DockerContainer,
        _networks: &HashMap<String, DockerNetwork>,
    ) {
        let Some(dns) = self.dns_for(req) else { return };
        for id in c.endpoints.keys() {
            if let Some(s) = scope(&req.name, id) {
                dns.records().remove_endpoint(&s, &c.id);
            }
        }
        // Its listener holds its namespace: close it.
        let closing: Vec<Listener> = {
            let mut names = lock(&self.names);
            let keys: Vec<(String, PathBuf)> = names
                .listeners
                .iter()
                .filter(|((engine, path), l)| {
                    engine == &req.name
                        && (l.container.as_deref() == Some(&c.id)
                            || c.sandbox.as_ref() == Some(path))
                })
                .map(|(k, _)| k.clone())
                .collect();
            keys.iter()
                .filter_map(|k| names.listeners.remove(k))
                .collect()
        };
        for l in closing {
            l.listener.close().await;
        }
    }

    /// The forwarding resolver on a network's gateway (opened once), for
    /// the DNS redirect of its egress rules. Containers on Docker's default
    /// bridge use the machine's resolvers, which a sandbox may not reach;
    /// queries to any resolver go to the daemon's forwarder instead.
    async fn gateway_resolver(
        &self,
        req: &DockerEngineRequest,
        net: &DockerNetwork,
    ) -> Option<SocketAddrV4> {
        let dns = self.dns.as_ref().filter(|_| req.dns || req.policy)?;
        let key = (req.name.clone(), net.id.clone());
        if let Some((_, addr)) = lock(&self.names).gateways.get(&key) {
            return Some(*addr);
        }
        let addr = SocketAddrV4::new(net.gateway4?, 53);
        let sockets = match crate::network_services::bind_gateway_resolver(addr).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(engine = %req.name, network = %net.name, error = %e, "no resolver on the gateway; DNS from this network is not redirected");
                return None;
            }
        };
        let listener = dns
            .add_namespace_listener(sockets, Some(self.gateway_scopes(net)), None)
            .map_err(|e| tracing::warn!(error = %e, "gateway resolver"))
            .ok()?;
        lock(&self.names).gateways.insert(key, (listener, addr));
        Some(addr)
    }

    fn gateway_scopes(&self, net: &DockerNetwork) -> ClientScopes {
        match self.dns_policy(net) {
            Some(p) => ClientScopes::new([]).with_policy(p),
            None => ClientScopes::new([]),
        }
    }

    pub fn listener_count(&self, req: &DockerEngineRequest) -> usize {
        lock(&self.names)
            .listeners
            .keys()
            .filter(|(engine, _)| engine == &req.name)
            .count()
    }

    /// How a network's traffic leaves, for the API's view.
    pub fn egress_of(&self, req: &DockerEngineRequest, net: &DockerNetwork) -> String {
        match (self.egress_for(req), egress_spec(net)) {
            (None, Some(_)) if self.guard_for(req).is_some() => {
                "Docker's own NAT; the egress policy by conductor-netd (DOCKER-USER)".into()
            }
            (None, _) => "not handled by conductor-netd".into(),
            (Some(_), None) if net.internal => "none (internal network)".into(),
            (Some(_), None) => "none (no bridge or IPv4 subnet)".into(),
            (Some(e), Some(_)) => e.kind_name().into(),
        }
    }
}

/// The egress a Docker network gets: bridge networks with an IPv4 subnet
/// that are not internal.
fn egress_spec(net: &DockerNetwork) -> Option<crate::egress::NetworkEgress> {
    if net.internal {
        return None;
    }
    Some(crate::egress::NetworkEgress {
        name: net.name.clone(),
        bridge: net.bridge.clone()?,
        subnet4: net.subnet4?,
        gateway4: net.gateway4?,
        subnet6: net.subnet6,
        gateway6: net.gateway6,
        dns: None,
    })
}
