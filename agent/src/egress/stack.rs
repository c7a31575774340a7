//! What the backends need from the daemon's own network stack besides the
//! firewall: the forwarding switches and the uplink address. A trait, so the
//! backends' unit tests run without root.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Mutex;

use netns::{ErrorKind, Handle, Netns};

use super::error::EgressError;
use super::Family;

pub trait Stack: Send + Sync {
    /// Make sure the daemon's namespace forwards `family`. Ok(false) when
    /// the stack has no such switch (gVisor 20240729 has no
    /// /proc/sys/net/ipv6 at all, and forwards no IPv6).
    fn enable_forwarding(
        &self,
        family: Family,
    ) -> impl Future<Output = Result<bool, EgressError>> + Send;

    /// The source address of the default route (the address SNAT rewrites
    /// to), if there is a default route.
    fn uplink_address(
        &self,
        family: Family,
    ) -> impl Future<Output = Result<Option<IpAddr>, EgressError>> + Send;
}

fn forwarding_key(family: Family) -> &'static str {
    match family {
        Family::V4 => "net.ipv4.ip_forward",
        Family::V6 => "net.ipv6.conf.all.forwarding",
    }
}

/// The daemon's own namespace, through the netns crate: sysctls through a
/// procfs mounted inside the namespace (right on gVisor, whose /proc/sys/net
/// follows the mounter's namespace), routes and addresses over rtnetlink.
#[derive(Debug, Clone, Copy, Default)]
pub struct NamespaceStack;

impl Stack for NamespaceStack {
    async fn enable_forwarding(&self, family: Family) -> Result<bool, EgressError> {
        let key = forwarding_key(family);
        let done = tokio::task::spawn_blocking(move || -> Result<bool, netns::Error> {
            let ns = Netns::current()?;
            match netns::read_sysctl(&ns, key) {
                Ok(v) if v == "1" => Ok(true),
                Ok(_) => netns::write_sysctl(&ns, key, "1").map(|()| true),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e),
            }
        })
        .await
        .map_err(|e| EgressError::Unsupported {
            backend: "nat",
            reason: format!("forwarding switch task failed: {e}"),
        })?;
        done.map_err(|source| EgressError::Stack {
            what: format!("turn on {key}"),
            source,
        })
    }

    async fn uplink_address(&self, family: Family) -> Result<Option<IpAddr>, EgressError> {
        let stack = |what: &str, source| EgressError::Stack {
            what: what.to_string(),
            source,
        };
        let handle = Handle::current().map_err(|e| stack("open rtnetlink", e))?;
        let routes = handle
            .routes(family == Family::V6)
            .await
            .map_err(|e| stack("list routes", e))?;
        let Some(default) = routes.iter().find(|r| r.destination.prefix_len() == 0) else {
            return Ok(None);
        };
        let addresses = handle
            .addresses(default.oif)
            .await
            .map_err(|e| stack("list addresses", e))?;
        let candidates: Vec<ipnet::IpNet> = addresses
            .into_iter()
            .map(|a| a.address)
            .filter(|a| a.addr().is_ipv6() == (family == Family::V6))
            .filter(|a| !is_link_local(a.addr()) && !a.addr().is_loopback())
            .collect();
        // The address on the gateway's subnet, as the kernel would pick.
        let on_gateway = default
            .gateway
            .and_then(|gw| candidates.iter().find(|a| a.contains(&gw)));
        Ok(on_gateway.or(candidates.first()).map(|a| a.addr()))
    }
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// A stack in memory, for tests: records forwarding switches.
#[derive(Debug, Default)]
pub struct FakeStack {
    pub uplink4: Option<IpAddr>,
    pub uplink6: Option<IpAddr>,
    /// Whether IPv6 forwarding has a switch.
    pub ipv6_switch: bool,
    pub switched: Mutex<Vec<Family>>,
}

impl Stack for FakeStack {
    async fn enable_forwarding(&self, family: Family) -> Result<bool, EgressError> {
        if family == Family::V6 && !self.ipv6_switch {
            return Ok(false);
        }
        if let Ok(mut s) = self.switched.lock() {
            s.push(family);
        }
        Ok(true)
    }

    async fn uplink_address(&self, family: Family) -> Result<Option<IpAddr>, EgressError> {
        Ok(match family {
            Family::V4 => self.uplink4,
            Family::V6 => self.uplink6,
        })
    }
}
