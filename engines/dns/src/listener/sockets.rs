//! Opening a listener's sockets, for the daemon to call on a thread inside
//! the client's network namespace (the sockets keep that namespace).

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

use super::ListenerSockets;
use crate::error::{Error, Result};

/// Connections waiting to be accepted on the TCP listener.
const TCP_BACKLOG: i32 = 64;

/// How [`ListenerSockets::bind`] binds.
#[derive(Debug, Clone, Copy, Default)]
pub struct BindOptions {
    /// `IP_FREEBIND` / `IPV6_FREEBIND`: the bind succeeds even when the
    /// address does not exist yet (a fresh namespace whose `lo` is still
    /// down); the socket receives once it does. See docs/gvisor-quirks.md
    /// for where this works.
    pub freebind: bool,
    /// Skip the TCP listener.
    pub udp_only: bool,
}

fn bind_error(
    proto: &'static str,
    addr: SocketAddr,
    step: &'static str,
    source: io::Error,
) -> Error {
    Error::Bind {
        proto,
        addr,
        step,
        source,
    }
}

fn socket(
    addr: SocketAddr,
    ty: Type,
    proto: Protocol,
    name: &'static str,
    options: BindOptions,
) -> Result<Socket> {
    let domain = Domain::for_address(addr);
    let socket =
        Socket::new(domain, ty, Some(proto)).map_err(|e| bind_error(name, addr, "socket", e))?;
    if options.freebind {
        let set = match addr {
            SocketAddr::V4(_) => socket.set_freebind_v4(true),
            SocketAddr::V6(_) => socket.set_freebind_v6(true),
        };
        set.map_err(|e| bind_error(name, addr, "IP_FREEBIND", e))?;
    }
    if ty == Type::STREAM {
        // A listener closed a moment ago leaves TIME_WAIT connections.
        socket
            .set_reuse_address(true)
            .map_err(|e| bind_error(name, addr, "SO_REUSEADDR", e))?;
    }
    socket
        .bind(&addr.into())
        .map_err(|e| bind_error(name, addr, "bind", e))?;
    Ok(socket)
}

impl ListenerSockets {
    /// Binds a UDP socket and a TCP listener on `addr` (usually
    /// 127.0.0.11:53) in the calling thread's network namespace. With port
    /// 0 the TCP listener takes the port the UDP socket got.
    pub fn bind(addr: SocketAddr, options: BindOptions) -> Result<Self> {
        let udp = socket(addr, Type::DGRAM, Protocol::UDP, "UDP", options)?;
        let tcp = if options.udp_only {
            None
        } else {
            let mut addr = addr;
            if addr.port() == 0 {
                let port = udp
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_socket())
                    .map_or(0, |a| a.port());
                addr.set_port(port);
            }
            let tcp = socket(addr, Type::STREAM, Protocol::TCP, "TCP", options)?;
            tcp.listen(TCP_BACKLOG)
                .map_err(|e| bind_error("TCP", addr, "listen", e))?;
            Some(tcp.into())
        };
        Ok(Self {
            udp: udp.into(),
            tcp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_and_tcp_share_the_port() {
        let sockets =
            ListenerSockets::bind("127.0.0.1:0".parse().unwrap(), BindOptions::default()).unwrap();
        let udp = sockets.udp.local_addr().unwrap();
        assert_eq!(sockets.tcp.unwrap().local_addr().unwrap(), udp);
    }

    #[test]
    fn freebind_binds_an_address_that_does_not_exist_yet() {
        // TEST-NET-3: on no interface of this machine.
        let absent: SocketAddr = "203.0.113.77:0".parse().unwrap();
        let err = ListenerSockets::bind(absent, BindOptions::default()).unwrap_err();
        assert!(err.to_string().contains("203.0.113.77"), "{err}");
        let options = BindOptions {
            freebind: true,
            ..BindOptions::default()
        };
        let sockets = ListenerSockets::bind(absent, options).unwrap();
        assert_eq!(sockets.udp.local_addr().unwrap().ip(), absent.ip());
    }
}
