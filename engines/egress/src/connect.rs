//! Opening the way out for one connection: directly from the daemon's own
//! stack, or through the upstream HTTP proxy with CONNECT (hyper's client,
//! whose connection hands the socket back once the tunnel is up, so the
//! relay can still splice it).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::header::{HOST, PROXY_AUTHORIZATION};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::error::ConnectError;
use crate::upstream::ProxyUrl;

/// `host:port` as an authority (IPv6 addresses in brackets).
pub fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Connect to the first address that answers, all within `timeout`.
pub async fn direct(addrs: &[SocketAddr], timeout: Duration) -> Result<TcpStream, ConnectError> {
    let attempt = async {
        let mut last = None;
        for &target in addrs {
            match TcpStream::connect(target).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Err(source) => last = Some(ConnectError::Direct { target, source }),
            }
        }
        Err(last.unwrap_or_else(|| ConnectError::Resolve {
            host: String::new(),
            reason: "no address to connect to".into(),
        }))
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(ConnectError::Timeout {
            what: match addrs {
                [one] => one.to_string(),
                _ => format!("{addrs:?}"),
            },
            after: timeout,
        }),
    }
}

/// Resolve `host` (a name or an address literal) to socket addresses.
pub async fn resolve(
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, ConnectError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let lookup = tokio::net::lookup_host((host, port));
    match tokio::time::timeout(timeout, lookup).await {
        Ok(Ok(addrs)) => {
            let v: Vec<SocketAddr> = addrs.collect();
            if v.is_empty() {
                Err(ConnectError::Resolve {
                    host: host.to_string(),
                    reason: "no addresses".into(),
                })
            } else {
                Ok(v)
            }
        }
        Ok(Err(e)) => Err(ConnectError::Resolve {
            host: host.to_string(),
            reason: e.to_string(),
        }),
        Err(_) => Err(ConnectError::Timeout {
            what: format!("resolving {host}"),
            after: timeout,
        }),
    }
}

/// A tunnel through the upstream proxy: the socket, and whatever the proxy
/// sent after its response (the start of the server's bytes, if any).
pub struct Tunnel {
    pub stream: TcpStream,
    pub leftover: Bytes,
}

/// Open a CONNECT tunnel to `target` (an authority) through `proxy`, all
/// within `timeout`.
pub async fn via_proxy(
    proxy: &ProxyUrl,
    target: &str,
    timeout: Duration,
) -> Result<Tunnel, ConnectError> {
    match tokio::time::timeout(timeout, connect_tunnel(proxy, target)).await {
        Ok(r) => r,
        Err(_) => Err(ConnectError::Timeout {
            what: format!("upstream proxy {proxy} (CONNECT {target})"),
            after: timeout,
        }),
    }
}

/// A TCP connection to the upstream proxy itself (no timeout of its own).
pub async fn to_proxy(proxy: &ProxyUrl) -> Result<TcpStream, ConnectError> {
    let stream = TcpStream::connect((proxy.host.as_str(), proxy.port))
        .await
        .map_err(|source| ConnectError::ProxyConnect {
            proxy: proxy.to_string(),
            source,
        })?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

async fn connect_tunnel(proxy: &ProxyUrl, target: &str) -> Result<Tunnel, ConnectError> {
    let stream = to_proxy(proxy).await?;
    let protocol = |source| ConnectError::ProxyProtocol {
        proxy: proxy.to_string(),
        target: target.to_string(),
        source,
    };
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(protocol)?;
    let mut builder = Request::builder()
        .method(Method::CONNECT)
        .uri(target)
        .header(HOST, target);
    if let Some(auth) = &proxy.authorization {
        builder = builder.header(PROXY_AUTHORIZATION, auth);
    }
    let request = builder
        .body(Empty::<Bytes>::new())
        .map_err(|e| ConnectError::Resolve {
            host: target.to_string(),
            reason: format!("not a valid CONNECT target: {e}"),
        })?;
    // The connection future hands the socket back once the proxy's 2xx
    // turned it into a tunnel; it may finish before the response future.
    let mut conn = std::pin::pin!(conn.without_shutdown());
    let mut send = std::pin::pin!(sender.send_request(request));
    let mut parts = None;
    let response = loop {
        tokio::select! {
            r = &mut send => break r.map_err(protocol)?,
            c = &mut conn, if parts.is_none() => parts = Some(c.map_err(protocol)?),
        }
    };
    if !response.status().is_success() {
        return Err(ConnectError::ProxyRefused {
            proxy: proxy.to_string(),
            target: target.to_string(),
            status: response.status(),
        });
    }
    let parts = match parts {
        Some(p) => p,
        None => conn.await.map_err(protocol)?,
    };
    Ok(Tunnel {
        stream: parts.io.into_inner(),
        leftover: parts.read_buf,
    })
}
