//! The protocol half of published ports: a listener that forwards TCP
//! connections or UDP flows to wherever an `Upstream` says, asked anew for
//! each connection or flow (so a target that moves is followed without
//! rebinding). No policy, no state: the caller owns what to forward where.

mod tcp;
mod udp;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

pub use tcp::bind_tcp;
pub use udp::{bind_udp, UDP_IDLE};

/// Where traffic goes right now; None while the target is not known (a
/// stopped container): connections are refused, datagrams dropped.
pub trait Upstream: Send + Sync + 'static {
    fn resolve(&self) -> Option<SocketAddr>;
}

impl<F: Fn() -> Option<SocketAddr> + Send + Sync + 'static> Upstream for F {
    fn resolve(&self) -> Option<SocketAddr> {
        self()
    }
}

/// A running forwarder: stops (and closes its listener and flows) when
/// dropped.
pub struct Forwarder {
    stop: CancellationToken,
    local: SocketAddr,
}

impl Forwarder {
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub(crate) type SharedUpstream = Arc<dyn Upstream>;
