//! The daemon's egress, built once at start-up: the backend chosen from the
//! doctor report (and the configuration), and - for `proxy` - the
//! transparent proxy its REDIRECT rules send TCP to, served as a component
//! of the daemon. Conductor networks and Docker's networks both go through
//! it.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use conductor_egress::{Engine, EngineConfig, ProxyEnv};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::choose::{self, AnyBackend, Capabilities, Choice};
use super::firewall::{Firewall, Tool};
use super::proxy::ProxyPorts;
use super::runner::ProcessRunner;
use super::stack::NamespaceStack;
use super::{BackendKind, Description, EgressBackend, EgressError, NetworkEgress};
use crate::doctor::{CheckId, Report};
use crate::policy::{EgressPolicy, Policies};

/// What the configuration says about egress.
#[derive(Debug, Clone, Copy)]
pub struct EgressSettings {
    /// A backend to use instead of the chosen one.
    pub requested: Option<BackendKind>,
    /// The transparent proxy's ports (REDIRECT targets), IPv4 and IPv6.
    pub proxy_port: u16,
    pub proxy_port6: u16,
}

/// The daemon's egress backend (and proxy engine).
pub struct Egress {
    backend: AnyBackend<ProcessRunner, NamespaceStack>,
    choice: Choice,
    engine: Option<(Engine, Vec<TcpListener>)>,
    policies: Arc<Policies>,
    /// The networks enabled, by name: a policy change rebuilds their rules
    /// (the `nat` backend enforces CIDR and port rules in the kernel).
    enabled: Mutex<HashMap<String, NetworkEgress>>,
    /// The backend's firewall, also used for `guarded` networks.
    firewall: Arc<Firewall<ProcessRunner>>,
    /// Docker's networks whose NAT Docker does (a real kernel): netd
    /// enforces only their policy.
    guarded: Mutex<HashMap<String, NetworkEgress>>,
}

/// Capabilities from the doctor report, plus what only the daemon's
/// environment tells (an upstream HTTP proxy).
pub fn capabilities(report: &Report, upstream_proxy: bool) -> Capabilities {
    let legacy = report.works(CheckId::IptablesSnat)
        || report.works(CheckId::IptablesRedirect)
        || report.works(CheckId::IptablesMasquerade);
    let gvisor = report.platform.is_gvisor();
    Capabilities {
        nft: report.works(CheckId::Nftables) && !gvisor,
        legacy,
        ip6tables: legacy,
        masquerade: report.works(CheckId::IptablesMasquerade),
        snat: report.works(CheckId::IptablesSnat),
        redirect: report.works(CheckId::IptablesRedirect),
        // gVisor has no conntrack; a real kernel has it wherever it has
        // MASQUERADE.
        conntrack: report.works(CheckId::IptablesMasquerade) && !gvisor,
        upstream_proxy,
    }
}

impl Egress {
    /// Choose and build the backend; for `proxy`, bind its listeners now
    /// (they are served by `serve`). Every rule of ours left by an earlier
    /// run is removed first, so a restart never duplicates one.
    pub async fn start(
        report: &Report,
        settings: EgressSettings,
        policies: Arc<Policies>,
    ) -> Result<Egress, EgressError> {
        let upstream = ProxyEnv::from_env().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "ignoring the proxy settings in the environment");
            ProxyEnv::default()
        });
        let caps = capabilities(report, upstream.is_set());
        let choice = choose::choose(&caps, settings.requested)?;
        let ipv6 = caps.ip6tables;
        let firewall = Arc::new(Firewall::new(ProcessRunner::default(), choice.tool, ipv6));
        let ports = ProxyPorts {
            v4: settings.proxy_port,
            v6: ipv6.then_some(settings.proxy_port6),
        };
        let backend = choose::build(&choice, firewall.clone(), Arc::new(NamespaceStack), ports)?;
        backend.remove_all().await?;
        if let AnyBackend::Nat(nat) = &backend {
            nat.set_policy_source(policies.clone());
        }
        let engine = if choice.kind == BackendKind::Proxy {
            let mut listeners =
                vec![bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, ports.v4))).await?];
            if let Some(p6) = ports.v6 {
                match bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, p6))).await {
                    Ok(l) => listeners.push(l),
                    Err(e) => {
                        tracing::warn!(error = %e, "no IPv6 transparent proxy; IPv6 is dropped")
                    }
                }
            }
            let config = EngineConfig {
                upstream,
                ..EngineConfig::default()
            };
            let policy = Arc::new(EgressPolicy(policies.clone()));
            Some((Engine::new(config, policy), listeners))
        } else {
            None
        };
        tracing::info!(backend = %choice.kind, tool = choice.tool.name(), reason = %choice.reason, "egress chosen");
        Ok(Egress {
            backend,
            choice,
            engine,
            policies,
            enabled: Mutex::default(),
            firewall,
            guarded: Mutex::default(),
        })
    }

    /// Serve the transparent proxy until `stop` (a component of the daemon;
    /// returns at once when the backend needs none). Rules of ours are
    /// removed when it stops, so nothing is left redirected to a closed port.
    pub async fn serve(self: Arc<Self>, stop: CancellationToken) -> crate::error::Result<()> {
        let follower = tokio::spawn(self.clone().follow_policies(stop.clone()));
        if let Some((engine, listeners)) = &self.engine {
            let mut tasks = tokio::task::JoinSet::new();
            // `Egress` keeps the listeners; the tasks serve duplicates.
            for l in listeners {
                let listener = clone_listener(l)?;
                let engine = engine.clone();
                tasks.spawn(async move { engine.serve_transparent(listener, None).await });
            }
            stop.cancelled().await;
            tasks.abort_all();
        } else {
            stop.cancelled().await;
        }
        follower.abort();
        if let Err(e) = self.backend.remove_all().await {
            tracing::warn!(error = %e, "egress: removing our rules at shutdown");
        }
        Ok(())
    }

    /// Rebuild a network's kernel rules when a policy change is announced
    /// (a reload of the file; API changes are applied before they are
    /// answered, through `apply_policy_changes`). Only `nat` and guarded
    /// Docker networks have policy rules in the kernel; the proxy and DNS
    /// read the policy on every new connection or query.
    async fn follow_policies(self: Arc<Self>, stop: CancellationToken) {
        let mut changes = self.policies.subscribe();
        loop {
            let names: Vec<String> = tokio::select! {
                _ = stop.cancelled() => return,
                r = changes.recv() => match r {
                    Ok(name) => vec![name],
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let mut all: Vec<String> = lock(&self.enabled).keys().cloned().collect();
                        all.extend(lock(&self.guarded).keys().cloned());
                        all
                    }
                    Err(_) => return,
                },
            };
            for name in names {
                self.apply_policy(&name).await;
            }
        }
    }

    /// Rebuild the kernel rules that carry a network's policy: the `nat`
    /// backend's, or DOCKER-USER's for a guarded Docker network.
    async fn apply_policy(&self, name: &str) {
        let guarded = lock(&self.guarded).get(name).cloned();
        if let Some(net) = guarded {
            match self.apply_guard(&net).await {
                Ok(()) => tracing::info!(network = %name, "egress policy applied in DOCKER-USER"),
                Err(e) => {
                    tracing::warn!(network = %name, error = %e, "egress policy: the DOCKER-USER rules")
                }
            }
        }
        let net = lock(&self.enabled)
            .get(name)
            .cloned()
            .filter(|_| self.choice.kind == BackendKind::Nat);
        if let Some(net) = net {
            match self.backend.enable(&net).await {
                Ok(()) => tracing::info!(network = %name, "egress policy applied to the nat rules"),
                Err(e) => {
                    tracing::warn!(network = %name, error = %e, "egress policy: rebuilding the nat rules")
                }
            }
        }
    }

    /// Have the policy store apply every change through this before it
    /// answers (so the kernel's rules hold from the answer on).
    pub fn apply_policy_changes(self: &Arc<Self>) {
        self.policies
            .set_applier(Arc::new(Applier(Arc::downgrade(self))));
    }

    pub async fn enable(&self, network: &NetworkEgress) -> Result<(), EgressError> {
        self.policies.register_network(
            &network.name,
            &crate::policy::subnets(network.subnet4, network.subnet6),
        );
        lock(&self.enabled).insert(network.name.clone(), network.clone());
        self.backend.enable(network).await
    }

    pub async fn disable(&self, network: &NetworkEgress) -> Result<(), EgressError> {
        lock(&self.enabled).remove(&network.name);
        self.policies.unregister_network(&network.name);
        self.backend.disable(network).await
    }

    /// Enforce the policy of a Docker network whose NAT Docker does itself
    /// (a real kernel, Docker's iptables on): while the network has a
    /// policy, its CIDR and port rules sit in DOCKER-USER, and its DNS goes
    /// to `network.dns` (the forwarder on the gateway, which answers
    /// REFUSED for denied names) wherever it was sent. Without a policy
    /// nothing of ours is in its path.
    pub async fn guard(&self, network: &NetworkEgress) -> Result<(), EgressError> {
        network.validate()?;
        self.policies.register_network(
            &network.name,
            &crate::policy::subnets(network.subnet4, network.subnet6),
        );
        lock(&self.guarded).insert(network.name.clone(), network.clone());
        self.apply_guard(network).await
    }

    pub async fn unguard(&self, network: &NetworkEgress) -> Result<(), EgressError> {
        lock(&self.guarded).remove(&network.name);
        self.policies.unregister_network(&network.name);
        self.firewall.remove_network(&network.bridge).await
    }

    async fn apply_guard(&self, network: &NetworkEgress) -> Result<(), EgressError> {
        use super::policy_rules::PolicySource;
        use super::ruleset::NetworkRules;
        use super::Family;
        let bridge = &network.bridge;
        let Some(policy) = self.policies.nat_policy(&network.name) else {
            return self.firewall.remove_network(bridge).await;
        };
        let v4 = NetworkRules {
            prerouting: network.dns_rules(),
            docker_user: policy.docker_user_rules(bridge, Family::V4),
            ..Default::default()
        };
        // Docker makes DOCKER-USER for IPv6 only with --ip6tables (20.10:
        // off by default); then it has no IPv6 rules of its own and the
        // same rules go first in FORWARD, so IPv6 cannot bypass them.
        let mut v6 = NetworkRules::default();
        if self.firewall.ipv6() {
            let rules = policy.docker_user_rules(bridge, Family::V6);
            let docker_v6 = self
                .firewall
                .saved(Family::V6)
                .await?
                .has_chain("filter", "DOCKER-USER");
            if docker_v6 {
                v6.docker_user = rules;
            } else {
                v6.forward = rules;
            }
        }
        self.firewall.apply_network(bridge, &v4, &v6).await
    }

    pub fn policies(&self) -> &Arc<Policies> {
        &self.policies
    }

    pub fn kind_name(&self) -> &'static str {
        self.choice.kind.name()
    }

    pub fn tool(&self) -> Tool {
        self.choice.tool
    }

    pub fn choice(&self) -> &Choice {
        &self.choice
    }

    pub fn describe(&self) -> Description {
        self.backend.describe()
    }

    pub fn proxy_stats(&self) -> Option<conductor_egress::Stats> {
        self.engine.as_ref().map(|(e, _)| e.stats())
    }
}

/// The egress side of policy changes, held by the policy store (weakly:
/// the store outlives nothing it points to).
struct Applier(std::sync::Weak<Egress>);

impl crate::policy::PolicyApplier for Applier {
    fn apply<'a>(
        &'a self,
        network: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            if let Some(egress) = self.0.upgrade() {
                egress.apply_policy(network).await;
            }
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, EgressError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| EgressError::Unsupported {
            backend: "proxy",
            reason: format!("listen on {addr} for the transparent proxy: {e}"),
        })
}

/// A second handle on a bound listener (the original stays with `Egress`).
fn clone_listener(l: &TcpListener) -> crate::error::Result<TcpListener> {
    use std::os::fd::AsFd;
    let fd = l
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| crate::error::Error::Internal(format!("duplicate the proxy listener: {e}")))?;
    let std = std::net::TcpListener::from(fd);
    std.set_nonblocking(true)
        .map_err(|e| crate::error::Error::Internal(format!("proxy listener: {e}")))?;
    TcpListener::from_std(std)
        .map_err(|e| crate::error::Error::Internal(format!("proxy listener: {e}")))
}
