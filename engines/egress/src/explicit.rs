//! The explicit proxy, for endpoints where even REDIRECT is unavailable:
//! they get HTTP_PROXY/HTTPS_PROXY pointing here. CONNECT opens a tunnel;
//! absolute-form `http://` requests are forwarded (hyper on both sides).
//! A denied request gets 403 naming the rule; a way out that fails gets 502,
//! one that does not answer in time 504.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, HOST, PROXY_AUTHORIZATION};
use hyper::http::uri::{Authority, Uri};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::connect;
use crate::engine::{Conn, Counters, Shared};
use crate::error::ConnectError;
use crate::policy::{Decision, Mode, Request as PolicyRequest};
use crate::relay;
use crate::sniff::dns_name;
use crate::upstream::{Protocol, ProxyUrl};

type Body = BoxBody<Bytes, hyper::Error>;

struct Ctx {
    shared: Arc<Shared>,
    peer: SocketAddr,
    network: Option<Arc<str>>,
    stop: CancellationToken,
}

pub(crate) async fn handle(conn: Conn) {
    let Conn {
        shared,
        stream,
        peer,
        network,
        stop,
        _slot,
    } = conn;
    let header_timeout = shared.config.header_timeout;
    let ctx = Arc::new(Ctx {
        shared,
        peer,
        network,
        stop: stop.clone(),
    });
    let service = service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(answer(&ctx, req).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let served = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::select! {
        _ = stop.cancelled() => {}
        r = served => if let Err(e) = r {
            tracing::debug!(source = %peer, error = %e, "explicit proxy connection ended with an error");
        }
    }
}

/// Answer 503 to a client that came while every slot was busy.
pub(crate) async fn busy(stream: TcpStream) {
    let service = service_fn(|_req| async {
        Ok::<_, Infallible>(text(
            StatusCode::SERVICE_UNAVAILABLE,
            "egress proxy: connection limit reached, try again later",
        ))
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(5))
        .keep_alive(false);
    let _ = builder
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

fn text(status: StatusCode, message: &str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(format!("{message}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn answer(ctx: &Ctx, req: Request<Incoming>) -> Response<Body> {
    if req.method() == Method::CONNECT {
        tunnel(ctx, req).await
    } else if req.uri().scheme().is_some() {
        forward(ctx, req).await
    } else {
        text(
            StatusCode::BAD_REQUEST,
            "this is an HTTP proxy: send CONNECT host:port or an absolute-form request (GET http://host/path)",
        )
    }
}

/// Where a request wants to go.
struct Target {
    /// The name, or the address as text.
    host: String,
    name: Option<String>,
    ip: Option<IpAddr>,
    port: u16,
}

fn target(authority: Option<&Authority>, default_port: Option<u16>) -> Result<Target, String> {
    let authority = authority.ok_or("the request names no host")?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority
        .port_u16()
        .or(default_port)
        .ok_or_else(|| format!("{authority:?} has no port"))?;
    if port == 0 {
        return Err(format!("{authority:?}: port 0"));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(Target {
            host: ip.to_string(),
            name: None,
            ip: Some(ip),
            port,
        });
    }
    let name = dns_name(host).ok_or_else(|| format!("{host:?} is not a host name or address"))?;
    Ok(Target {
        host: name.clone(),
        name: Some(name),
        ip: None,
        port,
    })
}

/// How a request leaves.
enum Plan {
    Direct(Vec<SocketAddr>),
    Proxy(ProxyUrl),
}

fn decide(ctx: &Ctx, t: &Target, ip: Option<IpAddr>, mode: Mode) -> Decision {
    let request = PolicyRequest {
        ip,
        port: t.port,
        host: t.name.as_deref(),
        source: ctx.peer,
        network: ctx.network.as_deref(),
        mode,
    };
    let decision = ctx.shared.policy.decide(&request);
    if let Decision::Deny { rule } = &decision {
        tracing::info!(decision = "deny", %rule, %mode, network = ctx.network.as_deref(), source = %ctx.peer, host = %t.host, port = t.port, ?ip, "egress denied");
    }
    decision
}

fn denied(ctx: &Ctx, rule: &str) -> Response<Body> {
    Counters::bump(&ctx.shared.counters.denied);
    text(
        StatusCode::FORBIDDEN,
        &format!("egress denied by policy rule: {rule}"),
    )
}

fn failed(ctx: &Ctx, t: &Target, mode: Mode, e: &ConnectError) -> Response<Body> {
    Counters::bump(&ctx.shared.counters.failed);
    tracing::warn!(decision = "allow", %mode, network = ctx.network.as_deref(), source = %ctx.peer, host = %t.host, port = t.port, error = %e, "egress failed");
    text(
        e.status(),
        &format!("egress to {}: {e}", connect::authority(&t.host, t.port)),
    )
}

/// Decide, and find the way out: through the upstream proxy (which resolves
/// names itself), or direct to the addresses the policy allows.
async fn plan(
    ctx: &Ctx,
    t: &Target,
    protocol: Protocol,
    mode: Mode,
) -> Result<Plan, Response<Body>> {
    let config = &ctx.shared.config;
    if let Some(p) = config
        .upstream
        .route(protocol, t.name.as_deref(), t.ip, t.port)
    {
        return match decide(ctx, t, t.ip, mode) {
            Decision::Allow => Ok(Plan::Proxy(p.clone())),
            Decision::Deny { rule } => Err(denied(ctx, &rule)),
        };
    }
    let addrs = connect::resolve(&t.host, t.port, config.connect_timeout)
        .await
        .map_err(|e| failed(ctx, t, mode, &e))?;
    let mut first_denial = None;
    let allowed: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| match decide(ctx, t, Some(a.ip()), mode) {
            Decision::Allow => true,
            Decision::Deny { rule } => {
                first_denial.get_or_insert(rule);
                false
            }
        })
        .collect();
    match (allowed.is_empty(), first_denial) {
        (true, Some(rule)) => Err(denied(ctx, &rule)),
        _ => Ok(Plan::Direct(allowed)),
    }
}

fn log_allowed(ctx: &Ctx, t: &Target, mode: Mode, route: &str) {
    Counters::bump(&ctx.shared.counters.allowed);
    tracing::info!(decision = "allow", %mode, network = ctx.network.as_deref(), source = %ctx.peer, host = %t.host, port = t.port, %route, "egress allowed");
}

async fn tunnel(ctx: &Ctx, mut req: Request<Incoming>) -> Response<Body> {
    let t = match target(req.uri().authority(), None) {
        Ok(t) => t,
        Err(e) => return text(StatusCode::BAD_REQUEST, &format!("bad CONNECT target: {e}")),
    };
    let plan = match plan(ctx, &t, Protocol::Tls, Mode::Connect).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    // The tunnel outlives this request's connection task: it holds a slot
    // of its own.
    let Ok(slot) = ctx.shared.slots.clone().try_acquire_owned() else {
        Counters::bump(&ctx.shared.counters.over_limit);
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "egress proxy: connection limit reached, try again later",
        );
    };
    let timeout = ctx.shared.config.connect_timeout;
    let (opened, route) = match &plan {
        Plan::Direct(addrs) => (
            connect::direct(addrs, timeout)
                .await
                .map(|s| (s, Bytes::new())),
            "direct".to_string(),
        ),
        Plan::Proxy(p) => (
            connect::via_proxy(p, &connect::authority(&t.host, t.port), timeout)
                .await
                .map(|tun| (tun.stream, tun.leftover)),
            p.to_string(),
        ),
    };
    let (server, leftover) = match opened {
        Ok(o) => o,
        Err(e) => return failed(ctx, &t, Mode::Connect, &e),
    };
    log_allowed(ctx, &t, Mode::Connect, &route);
    let on_upgrade = hyper::upgrade::on(&mut req);
    let shared = ctx.shared.clone();
    let stop = ctx.stop.clone();
    let peer = ctx.peer;
    tokio::spawn(async move {
        let _slot = slot;
        tokio::select! {
            _ = stop.cancelled() => {}
            r = run_tunnel(&shared, on_upgrade, server, leftover) => if let Err(e) = r {
                tracing::debug!(source = %peer, error = %e, "tunnel ended with an error");
            }
        }
    });
    Response::new(Empty::new().map_err(|never| match never {}).boxed())
}

async fn run_tunnel(
    shared: &Shared,
    on_upgrade: OnUpgrade,
    server: TcpStream,
    leftover: Bytes,
) -> std::io::Result<()> {
    let upgraded = on_upgrade.await.map_err(std::io::Error::other)?;
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        // The client's own socket: splice can be used.
        Ok(parts) => {
            let client = parts.io.into_inner();
            relay::write_all(&server, &parts.read_buf).await?;
            relay::write_all(&client, &leftover).await?;
            let m = relay::relay(&client, &server, shared.config.copy_mode).await?;
            let c = &shared.counters;
            c.bytes_up.fetch_add(m.up, Ordering::Relaxed);
            c.bytes_down.fetch_add(m.down, Ordering::Relaxed);
            Ok(())
        }
        Err(upgraded) => {
            use tokio::io::AsyncWriteExt;
            let mut client = TokioIo::new(upgraded);
            let mut server = server;
            client.write_all(&leftover).await?;
            tokio::io::copy_bidirectional(&mut client, &mut server).await?;
            Ok(())
        }
    }
}

/// Headers that describe one hop, never forwarded (RFC 9110 7.6.1), plus
/// whatever `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in [
        "connection",
        "proxy-connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(n);
    }
}

async fn forward(ctx: &Ctx, req: Request<Incoming>) -> Response<Body> {
    if req.uri().scheme_str() != Some("http") {
        return text(
            StatusCode::BAD_REQUEST,
            "only http:// requests can be forwarded; use CONNECT for https",
        );
    }
    let t = match target(req.uri().authority(), Some(80)) {
        Ok(t) => t,
        Err(e) => return text(StatusCode::BAD_REQUEST, &format!("bad request target: {e}")),
    };
    let plan = match plan(ctx, &t, Protocol::Http, Mode::Forward).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    let timeout = ctx.shared.config.connect_timeout;
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let (opened, route) = match &plan {
        Plan::Direct(addrs) => {
            // Origin form for the server itself.
            let origin = parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .parse::<Uri>();
            if let Ok(authority) = HeaderValue::from_str(&connect::authority(&t.host, t.port)) {
                parts.headers.entry(HOST).or_insert(authority);
            }
            match origin {
                Ok(o) => parts.uri = o,
                Err(e) => return text(StatusCode::BAD_REQUEST, &format!("bad path: {e}")),
            }
            (connect::direct(addrs, timeout).await, "direct".to_string())
        }
        Plan::Proxy(p) => {
            // Absolute form, as the upstream proxy expects.
            if let Some(auth) = p
                .authorization
                .as_deref()
                .and_then(|a| HeaderValue::from_str(a).ok())
            {
                parts.headers.insert(PROXY_AUTHORIZATION, auth);
            }
            let opened = match tokio::time::timeout(timeout, connect::to_proxy(p)).await {
                Ok(r) => r,
                Err(_) => Err(ConnectError::Timeout {
                    what: format!("upstream proxy {p}"),
                    after: timeout,
                }),
            };
            (opened, p.to_string())
        }
    };
    let server = match opened {
        Ok(s) => s,
        Err(e) => return failed(ctx, &t, Mode::Forward, &e),
    };
    let request = Request::from_parts(parts, body);
    let exchange = async {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake::<_, Incoming>(TokioIo::new(server)).await?;
        let stop = ctx.stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = conn => {}
            }
        });
        sender.send_request(request).await
    };
    let response = match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(r)) => r,
        Ok(Err(source)) => {
            let e = ConnectError::ProxyProtocol {
                proxy: route.clone(),
                target: connect::authority(&t.host, t.port),
                source,
            };
            return failed(ctx, &t, Mode::Forward, &e);
        }
        Err(_) => {
            let e = ConnectError::Timeout {
                what: format!("{} via {route}", connect::authority(&t.host, t.port)),
                after: timeout,
            };
            return failed(ctx, &t, Mode::Forward, &e);
        }
    };
    log_allowed(ctx, &t, Mode::Forward, &route);
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, body.boxed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_validated() {
        let a = |s: &str| s.parse::<Authority>().unwrap();
        let t = target(Some(&a("Example.TEST:443")), None).unwrap();
        assert_eq!((t.host.as_str(), t.port, t.ip), ("example.test", 443, None));
        let t = target(Some(&a("[2001:db8::1]:8443")), None).unwrap();
        assert_eq!(t.ip, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(target(Some(&a("example.test")), Some(80)).unwrap().port, 80);
        let e = target(Some(&a("example.test")), None).err().unwrap();
        assert!(e.contains("example.test") && e.contains("no port"), "{e}");
        let e = target(Some(&a("exa_mple..test:80")), None).err().unwrap();
        assert!(e.contains("exa_mple..test"), "{e}");
        assert!(target(None, None).is_err());
    }

    #[test]
    fn hop_by_hop_headers_are_stripped() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "close, x-secret"),
            ("x-secret", "1"),
            ("proxy-authorization", "Basic x"),
            ("keep-alive", "5"),
            ("accept", "*/*"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["accept"]);
    }
}
