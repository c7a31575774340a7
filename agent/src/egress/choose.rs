//! Choosing a backend from what the daemon's `doctor` found, and building
//! it. This module depends on every backend; nothing depends on it but the
//! daemon.
//!
//! Rules, in order (a per-network request overrides them, and is refused
//! with the reason when this machine cannot honour it):
//! 1. The sandbox's own way out is an HTTP proxy (`HTTPS_PROXY` & co. in the
//!    daemon's environment): `proxy`, the only backend that can use it; if
//!    REDIRECT does not work either, `none`, and endpoints get
//!    `HTTP_PROXY`/`HTTPS_PROXY` pointing at the daemon's explicit proxy.
//! 2. MASQUERADE works (a real kernel): `nat` with MASQUERADE, every
//!    protocol, the kernel's speed.
//! 3. REDIRECT works: `proxy`. This is gVisor's case: its SNAT works for
//!    single requests, but its forwarding path stalls a bulk TCP stream
//!    after a few hundred KB and then wedges the uplink for every later
//!    connection (measured on 20240729, docs/gvisor-quirks.md), while the
//!    proxy terminates TCP locally and never forwards.
//! 4. SNAT works: `nat` with SNAT to the uplink address (TCP, UDP).
//! 5. Otherwise `none`, plus the explicit proxy for endpoints.
//!
//! The firewall flavour: iptables-nft where nf_tables works (the flavour
//! Debian's `iptables` and Docker use, so our FORWARD rules sit in the same
//! tables as Docker's DROP policy), else iptables-legacy (gVisor).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::error::EgressError;
use super::firewall::{Firewall, Tool};
use super::nat::{NatBackend, NatMode};
use super::none::NoneBackend;
use super::proxy::{ProxyBackend, ProxyPorts};
use super::runner::CommandRunner;
use super::stack::Stack;
use super::{BackendKind, Description, EgressBackend, NetworkEgress};

/// What works here; the daemon fills it from its doctor report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// iptables-nft can list the nat table (nf_tables works).
    pub nft: bool,
    /// iptables-legacy can list the nat table.
    pub legacy: bool,
    /// ip6tables of the chosen flavour works.
    pub ip6tables: bool,
    /// A MASQUERADE rule is accepted.
    pub masquerade: bool,
    /// An SNAT rule (`-p tcp`) is accepted.
    pub snat: bool,
    /// A REDIRECT rule is accepted.
    pub redirect: bool,
    /// The conntrack match is accepted.
    pub conntrack: bool,
    /// The daemon's environment names an HTTP proxy as the way out.
    pub upstream_proxy: bool,
}

/// The decision, with its reason in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    pub kind: BackendKind,
    pub tool: Tool,
    /// For `nat`.
    pub nat_mode: Option<NatMode>,
    /// Endpoints should get HTTP_PROXY/HTTPS_PROXY pointing at the daemon's
    /// explicit proxy on their gateway.
    pub explicit_proxy: bool,
    pub reason: String,
}

fn nat_mode(caps: &Capabilities) -> Option<NatMode> {
    if caps.masquerade {
        Some(NatMode::Masquerade {
            conntrack: caps.conntrack,
        })
    } else if caps.snat {
        Some(NatMode::Snat)
    } else {
        None
    }
}

/// Choose a backend; `requested` is a per-network override.
pub fn choose(caps: &Capabilities, requested: Option<BackendKind>) -> Result<Choice, EgressError> {
    let tool = if caps.nft {
        Tool::Nft
    } else if caps.legacy {
        Tool::Legacy
    } else {
        return Err(EgressError::Unsupported {
            backend: "any",
            reason: "neither iptables-nft nor iptables-legacy works here (install the iptables package; inside gVisor run with --net-raw)".into(),
        });
    };
    let choice = |kind, nat_mode, explicit_proxy, reason: String| Choice {
        kind,
        tool,
        nat_mode,
        explicit_proxy,
        reason,
    };
    if let Some(kind) = requested {
        return match kind {
            BackendKind::Nat => match nat_mode(caps) {
                Some(m) => Ok(choice(kind, Some(m), false, "requested".into())),
                None => Err(EgressError::Unsupported {
                    backend: "nat",
                    reason: format!("{} accepts neither MASQUERADE nor SNAT", tool.name()),
                }),
            },
            BackendKind::Proxy if caps.redirect => {
                Ok(choice(kind, None, false, "requested".into()))
            }
            BackendKind::Proxy => Err(EgressError::Unsupported {
                backend: "proxy",
                reason: format!("{} does not accept REDIRECT", tool.name()),
            }),
            BackendKind::None => Ok(choice(kind, None, false, "requested".into())),
        };
    }
    Ok(if caps.upstream_proxy && caps.redirect {
        choice(
            BackendKind::Proxy,
            None,
            false,
            "the sandbox's way out is an HTTP proxy, which only the proxy backend can use".into(),
        )
    } else if caps.upstream_proxy {
        choice(BackendKind::None, None, true, "the sandbox's way out is an HTTP proxy and REDIRECT does not work: endpoints get the daemon's explicit proxy".into())
    } else if caps.masquerade {
        choice(
            BackendKind::Nat,
            nat_mode(caps),
            false,
            "MASQUERADE works: the kernel's NAT, every protocol".into(),
        )
    } else if caps.redirect {
        choice(
            BackendKind::Proxy,
            None,
            false,
            "no MASQUERADE, but REDIRECT works: TCP through the transparent proxy (forwarding \
             under SNAT stalls bulk TCP inside gVisor; `egress = \"nat\"` forces SNAT)"
                .into(),
        )
    } else if caps.snat {
        choice(
            BackendKind::Nat,
            nat_mode(caps),
            false,
            "no MASQUERADE and no REDIRECT, but SNAT works: SNAT to the uplink address (TCP, UDP)"
                .into(),
        )
    } else {
        choice(
            BackendKind::None,
            None,
            true,
            "no NAT and no REDIRECT: endpoints get the daemon's explicit proxy".into(),
        )
    })
}

/// Any of the backends, built from a [`Choice`].
pub enum AnyBackend<R, S> {
    Nat(NatBackend<R, S>),
    Proxy(ProxyBackend<R>),
    None(NoneBackend<R>),
}

/// Build the chosen backend over a shared firewall.
pub fn build<R: CommandRunner, S: Stack>(
    choice: &Choice,
    firewall: Arc<Firewall<R>>,
    stack: Arc<S>,
    ports: ProxyPorts,
) -> Result<AnyBackend<R, S>, EgressError> {
    Ok(match choice.kind {
        BackendKind::Nat => AnyBackend::Nat(NatBackend::new(
            firewall,
            stack,
            choice
                .nat_mode
                .unwrap_or(NatMode::Masquerade { conntrack: false }),
        )),
        BackendKind::Proxy => AnyBackend::Proxy(ProxyBackend::new(firewall, ports)?),
        BackendKind::None => AnyBackend::None(NoneBackend::new(firewall)),
    })
}

impl<R: CommandRunner, S: Stack> EgressBackend for AnyBackend<R, S> {
    fn kind(&self) -> BackendKind {
        match self {
            AnyBackend::Nat(b) => b.kind(),
            AnyBackend::Proxy(b) => b.kind(),
            AnyBackend::None(b) => b.kind(),
        }
    }

    async fn enable(&self, network: &NetworkEgress) -> Result<(), EgressError> {
        match self {
            AnyBackend::Nat(b) => b.enable(network).await,
            AnyBackend::Proxy(b) => b.enable(network).await,
            AnyBackend::None(b) => b.enable(network).await,
        }
    }

    async fn disable(&self, network: &NetworkEgress) -> Result<(), EgressError> {
        match self {
            AnyBackend::Nat(b) => b.disable(network).await,
            AnyBackend::Proxy(b) => b.disable(network).await,
            AnyBackend::None(b) => b.disable(network).await,
        }
    }

    async fn remove_all(&self) -> Result<(), EgressError> {
        match self {
            AnyBackend::Nat(b) => b.remove_all().await,
            AnyBackend::Proxy(b) => b.remove_all().await,
            AnyBackend::None(b) => b.remove_all().await,
        }
    }

    fn describe(&self) -> Description {
        match self {
            AnyBackend::Nat(b) => b.describe(),
            AnyBackend::Proxy(b) => b.describe(),
            AnyBackend::None(b) => b.describe(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KERNEL: Capabilities = Capabilities {
        nft: true,
        legacy: true,
        ip6tables: true,
        masquerade: true,
        snat: true,
        redirect: true,
        conntrack: true,
        upstream_proxy: false,
    };
    const GVISOR: Capabilities = Capabilities {
        nft: false,
        legacy: true,
        ip6tables: true,
        masquerade: false,
        snat: true,
        redirect: true,
        conntrack: false,
        upstream_proxy: false,
    };

    #[test]
    fn defaults() {
        let c = choose(&KERNEL, None).unwrap();
        assert_eq!((c.kind, c.tool), (BackendKind::Nat, Tool::Nft));
        assert_eq!(c.nat_mode, Some(NatMode::Masquerade { conntrack: true }));
        // gVisor: the proxy, not its SNAT (forwarding stalls bulk TCP).
        let c = choose(&GVISOR, None).unwrap();
        assert_eq!(
            (c.kind, c.tool, c.nat_mode),
            (BackendKind::Proxy, Tool::Legacy, None)
        );
        let no_redirect = Capabilities {
            redirect: false,
            ..GVISOR
        };
        let c = choose(&no_redirect, None).unwrap();
        assert_eq!(
            (c.kind, c.nat_mode),
            (BackendKind::Nat, Some(NatMode::Snat))
        );
        assert_eq!(
            choose(&GVISOR, Some(BackendKind::Nat)).unwrap().nat_mode,
            Some(NatMode::Snat)
        );
        let behind_proxy = Capabilities {
            upstream_proxy: true,
            ..GVISOR
        };
        assert_eq!(
            choose(&behind_proxy, None).unwrap().kind,
            BackendKind::Proxy
        );
        let no_redirect = Capabilities {
            redirect: false,
            ..behind_proxy
        };
        let c = choose(&no_redirect, None).unwrap();
        assert_eq!((c.kind, c.explicit_proxy), (BackendKind::None, true));
        let only_redirect = Capabilities {
            snat: false,
            ..GVISOR
        };
        assert_eq!(
            choose(&only_redirect, None).unwrap().kind,
            BackendKind::Proxy
        );
    }

    #[test]
    fn overrides_are_checked() {
        assert_eq!(
            choose(&GVISOR, Some(BackendKind::Proxy)).unwrap().kind,
            BackendKind::Proxy
        );
        assert_eq!(
            choose(&KERNEL, Some(BackendKind::None)).unwrap().kind,
            BackendKind::None
        );
        let bare = Capabilities {
            legacy: true,
            ..Default::default()
        };
        let e = choose(&bare, Some(BackendKind::Nat))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("MASQUERADE") && e.contains("iptables-legacy"),
            "{e}"
        );
        let e = choose(&bare, Some(BackendKind::Proxy))
            .unwrap_err()
            .to_string();
        assert!(e.contains("REDIRECT"), "{e}");
        let e = choose(&Capabilities::default(), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("iptables"), "{e}");
    }
}
