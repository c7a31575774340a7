//! Names and egress for conductor networks, as the service's observer: a
//! resolver on each network's gateway (port 53, in the daemon's namespace)
//! that answers the names of the network's endpoints and forwards the rest,
//! and the daemon's egress backend on each bridge that is not internal.
//! Endpoints learn the resolver from their CNI result (`dns.nameservers`);
//! DNS sent to any other resolver is redirected to it by the egress rules,
//! as for Docker's networks.
//!
//! An endpoint's name is the name of the namespace it was attached by
//! (`attach --netns NAME`, or a path under /run/netns); endpoints attached
//! by pid or another path have an address but no name.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use conductor_dns::{ClientScopes, EndpointRecord, NamespaceListener, ScopeId};

use crate::egress::{Egress, NetworkEgress};
use crate::model::{Endpoint, Network, Target};
use crate::service::observer::Done;
use crate::service::NetworkObserver;

pub struct NetworkServices {
    dns: Option<conductor_dns::Engine>,
    egress: Option<Arc<Egress>>,
    /// The resolver on each network's gateway, by network name.
    resolvers: Mutex<HashMap<String, (NamespaceListener, SocketAddrV4)>>,
    /// The egress policies: the resolver answers REFUSED for names a
    /// network's policy denies (the egress backend enforces the rest).
    policies: Option<Arc<crate::policy::Policies>>,
}

/// The scope of a conductor network in the DNS engine.
fn scope(network: &str) -> Option<ScopeId> {
    ScopeId::new(&format!("conductor.{network}")).ok()
}

/// The name an endpoint answers to, if its target has one.
pub fn endpoint_name(target: &Target) -> Option<String> {
    match target {
        Target::Netns(name) => Some(name.clone()),
        Target::NetnsPath(p) => {
            let parent = p.parent()?;
            let named = [Path::new("/run/netns"), Path::new("/var/run/netns")];
            if named.contains(&parent) {
                p.file_name()?.to_str().map(str::to_string)
            } else {
                None
            }
        }
        Target::Pid(_) => None,
    }
}

/// The sockets of a resolver on a bridge's gateway (UDP and TCP), bound
/// off the async workers; shared with Docker's networks.
pub async fn bind_gateway_resolver(
    addr: SocketAddrV4,
) -> Result<conductor_dns::ListenerSockets, String> {
    tokio::task::spawn_blocking(move || {
        conductor_dns::ListenerSockets::bind(
            SocketAddr::V4(addr),
            conductor_dns::BindOptions {
                freebind: true,
                udp_only: false,
            },
        )
    })
    .await
    .map_err(|e| format!("binder: {e}"))?
    .map_err(|e| e.to_string())
}

fn egress_spec(network: &Network, dns: Option<SocketAddrV4>) -> NetworkEgress {
    NetworkEgress {
        name: network.name.clone(),
        bridge: network.bridge.clone(),
        subnet4: network.subnet,
        gateway4: network.gateway,
        subnet6: network.ipv6_subnet,
        gateway6: network.ipv6_gateway,
        dns,
    }
}

impl NetworkServices {
    pub fn new(dns: Option<conductor_dns::Engine>, egress: Option<Arc<Egress>>) -> NetworkServices {
        NetworkServices {
            dns,
            egress,
            resolvers: Mutex::default(),
            policies: None,
        }
    }

    pub fn with_policies(mut self, policies: Arc<crate::policy::Policies>) -> NetworkServices {
        self.policies = Some(policies);
        self
    }

    /// The DNS side of a network's egress policy (read on every query, so
    /// a change applies to the next one).
    fn dns_policy(&self, network: &str) -> Option<Arc<dyn conductor_dns::QueryPolicy>> {
        let policies = self.policies.clone()?;
        Some(Arc::new(crate::policy::DnsPolicy {
            policies,
            network: network.to_string(),
        }))
    }

    fn resolvers(&self) -> MutexGuard<'_, HashMap<String, (NamespaceListener, SocketAddrV4)>> {
        self.resolvers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Open (once) the resolver on the network's gateway.
    async fn open_resolver(&self, network: &Network) -> Option<SocketAddrV4> {
        let dns = self.dns.as_ref()?;
        if let Some((_, addr)) = self.resolvers().get(&network.name) {
            return Some(*addr);
        }
        let scope = scope(&network.name)?;
        let addr = SocketAddrV4::new(network.gateway, 53);
        let sockets = match bind_gateway_resolver(addr).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(network = %network.name, %addr, error = %e, "no resolver on the gateway: names on this network are not served");
                return None;
            }
        };
        // The policy goes on the scope (asked once per query of its clients).
        dns.records()
            .set_scope_policy(&scope, self.dns_policy(&network.name));
        let scopes = ClientScopes::new([scope]);
        let listener = match dns.add_namespace_listener(sockets, Some(scopes), None) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(network = %network.name, error = %e, "gateway resolver");
                return None;
            }
        };
        let mut resolvers = self.resolvers();
        if let Some((_, addr)) = resolvers.get(&network.name) {
            // Another caller won; this listener closes when dropped.
            return Some(*addr);
        }
        resolvers.insert(network.name.clone(), (listener, addr));
        tracing::debug!(network = %network.name, %addr, "gateway resolver opened");
        Some(addr)
    }

    /// Networks with a resolver (for tests and status).
    pub fn resolver_count(&self) -> usize {
        self.resolvers().len()
    }
}

impl NetworkObserver for NetworkServices {
    fn network_up<'a>(&'a self, network: &'a Network) -> Done<'a> {
        Box::pin(async move {
            let dns = self.open_resolver(network).await;
            if network.internal {
                return;
            }
            if let Some(egress) = &self.egress {
                if let Err(e) = egress.enable(&egress_spec(network, dns)).await {
                    tracing::warn!(network = %network.name, error = %e, "egress");
                }
            }
        })
    }

    fn network_down<'a>(&'a self, network: &'a Network) -> Done<'a> {
        Box::pin(async move {
            if let (Some(dns), Some(s)) = (&self.dns, scope(&network.name)) {
                dns.records().remove_scope(&s);
            }
            let resolver = self.resolvers().remove(&network.name);
            let addr = resolver.as_ref().map(|(_, a)| *a);
            if let Some((listener, _)) = resolver {
                listener.close().await;
            }
            if network.internal {
                return;
            }
            if let Some(egress) = &self.egress {
                if let Err(e) = egress.disable(&egress_spec(network, addr)).await {
                    tracing::warn!(network = %network.name, error = %e, "egress");
                }
            }
        })
    }

    fn endpoint_up(&self, endpoint: &Endpoint, _network: &Network) {
        let (Some(dns), Some(s)) = (&self.dns, scope(&endpoint.network)) else {
            return;
        };
        let Some(name) = endpoint_name(&endpoint.target) else {
            return;
        };
        let record = EndpointRecord {
            name,
            aliases: Vec::new(),
            ipv4: vec![endpoint.ipv4.addr()],
            ipv6: endpoint.ipv6.iter().map(|a| a.addr()).collect(),
        };
        if let Err(e) = dns.records().upsert_endpoint(&s, &endpoint.id, &record) {
            tracing::warn!(endpoint = %endpoint.id, name = %record.name, error = %e, "DNS record");
        }
    }

    fn endpoint_down(&self, endpoint: &Endpoint) {
        if let (Some(dns), Some(s)) = (&self.dns, scope(&endpoint.network)) {
            dns.records().remove_endpoint(&s, &endpoint.id);
        }
    }

    fn nameserver(&self, network: &Network) -> Option<IpAddr> {
        self.resolvers()
            .get(&network.name)
            .map(|(_, a)| IpAddr::V4(*a.ip()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn endpoints_are_named_by_their_namespace_name() {
        assert_eq!(
            endpoint_name(&Target::Netns("web".into())).as_deref(),
            Some("web")
        );
        assert_eq!(
            endpoint_name(&Target::NetnsPath(PathBuf::from("/run/netns/db"))).as_deref(),
            Some("db")
        );
        assert_eq!(
            endpoint_name(&Target::NetnsPath(PathBuf::from("/proc/7/ns/net"))),
            None
        );
        assert_eq!(endpoint_name(&Target::Pid(7)), None);
    }
}
