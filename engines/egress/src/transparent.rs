//! The transparent proxy: connections the kernel redirected here
//! (iptables REDIRECT), sent on to their original destination.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::atomic::Ordering;

use nix::sys::socket::{getsockopt, sockopt};
use tokio::net::TcpStream;

use crate::connect;
use crate::engine::{Conn, Counters};
use crate::policy::{Decision, Mode, Request};
use crate::relay::{self, reset};
use crate::sniff::{self, Sniffed};

/// The destination a redirected connection was meant for
/// (SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST).
pub fn original_destination(stream: &TcpStream) -> io::Result<SocketAddr> {
    original_destination_at(stream, &stream.local_addr()?)
}

/// The same, with the socket's local address already known (one system
/// call fewer per connection).
pub(crate) fn original_destination_at(
    stream: &TcpStream,
    local: &SocketAddr,
) -> io::Result<SocketAddr> {
    let v4 = || -> io::Result<SocketAddr> {
        let sin = getsockopt(stream, sockopt::OriginalDst)?;
        Ok(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
            u16::from_be(sin.sin_port),
        )))
    };
    match local {
        SocketAddr::V4(_) => v4(),
        SocketAddr::V6(l) if l.ip().to_ipv4_mapped().is_some() => v4(),
        SocketAddr::V6(_) => {
            let sin6 = getsockopt(stream, sockopt::Ip6tOriginalDst)?;
            Ok(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
    }
}

pub(crate) async fn handle(conn: Conn) {
    let stop = conn.stop.clone();
    tokio::select! {
        _ = stop.cancelled() => reset(&conn.stream),
        _ = run(&conn) => {}
    }
}

async fn run(conn: &Conn) {
    let Conn {
        shared,
        stream: client,
        peer,
        network,
        ..
    } = conn;
    let config = &shared.config;
    let network = network.as_deref();
    let local = match client.local_addr() {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!(source = %peer, error = %e, "client gone before it was served");
            return;
        }
    };
    let dst = match (shared.destination)(client, &local) {
        Ok(d) if d != local => d,
        other => {
            // Not redirected: someone connected to the proxy port itself.
            // Serving it would connect the proxy to itself.
            let why = match other {
                Ok(d) => format!("original destination {d} is the proxy itself"),
                Err(e) => format!("no original destination: {e}"),
            };
            tracing::warn!(source = %peer, listener = %local, %why, "connection was not redirected; refusing");
            Counters::bump(&shared.counters.failed);
            reset(client);
            return;
        }
    };

    let sniffed = if config.upstream.is_set() || shared.policy.wants_host_name() {
        match sniff::sniff(client, config.sniff_timeout).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(source = %peer, destination = %dst, error = %e, "client failed before sending");
                return;
            }
        }
    } else {
        Sniffed::nothing()
    };
    let host = sniffed.host.as_deref();
    let request = Request {
        ip: Some(dst.ip()),
        port: dst.port(),
        host,
        source: *peer,
        network,
        mode: Mode::Transparent,
    };
    if let Decision::Deny { rule } = shared.policy.decide(&request) {
        Counters::bump(&shared.counters.denied);
        tracing::info!(decision = "deny", %rule, mode = "transparent", network, source = %peer, destination = %dst, host, "egress denied");
        reset(client);
        return;
    }

    let proxy = config
        .upstream
        .route(sniffed.protocol, host, Some(dst.ip()), dst.port());
    let opened = match proxy {
        None => connect::direct(&[dst], config.connect_timeout)
            .await
            .map(|s| (s, bytes::Bytes::new())),
        Some(p) => {
            let name = host.map_or_else(|| dst.ip().to_string(), str::to_string);
            let target = connect::authority(&name, dst.port());
            connect::via_proxy(p, &target, config.connect_timeout)
                .await
                .map(|t| (t.stream, t.leftover))
        }
    };
    let route = proxy.map_or_else(|| "direct".to_string(), |p| p.to_string());
    let (server, leftover) = match opened {
        Ok(o) => o,
        Err(e) => {
            Counters::bump(&shared.counters.failed);
            tracing::warn!(decision = "allow", mode = "transparent", network, source = %peer, destination = %dst, host, %route, error = %e, "egress failed; resetting the client");
            reset(client);
            return;
        }
    };
    Counters::bump(&shared.counters.allowed);
    tracing::info!(decision = "allow", mode = "transparent", network, source = %peer, destination = %dst, host, %route, "egress allowed");

    let started = async {
        relay::write_all(&server, &sniffed.prefix).await?;
        relay::write_all(client, &leftover).await
    };
    if let Err(e) = started.await {
        tracing::debug!(source = %peer, destination = %dst, error = %e, "connection failed at its start");
        reset(client);
        reset(&server);
        return;
    }
    let moved = relay::relay(client, &server, config.copy_mode).await;
    let c = &shared.counters;
    match moved {
        Ok(m) => {
            c.bytes_up
                .fetch_add(m.up + sniffed.prefix.len() as u64, Ordering::Relaxed);
            c.bytes_down
                .fetch_add(m.down + leftover.len() as u64, Ordering::Relaxed);
            tracing::debug!(source = %peer, destination = %dst, up = m.up, down = m.down, "egress connection closed");
        }
        Err(e) => {
            tracing::debug!(source = %peer, destination = %dst, error = %e, "egress connection failed")
        }
    }
}
