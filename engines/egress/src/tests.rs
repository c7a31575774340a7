//! The engine end to end on loopback, without privileges: the transparent
//! proxy with a stand-in for SO_ORIGINAL_DST, the explicit proxy, an
//! upstream proxy that works, refuses, hangs or is not there, the policy
//! hook and the connection limit.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

use crate::engine::{Engine, EngineConfig};
use crate::policy::{Decision, Mode, Policy, Request};
use crate::upstream::ProxyEnv;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    ip: Option<IpAddr>,
    port: u16,
    host: Option<String>,
    source: SocketAddr,
    network: Option<String>,
    mode: Mode,
}

/// Records every question; denies one port.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Seen>>,
    deny_port: Option<u16>,
}

impl Policy for Recorder {
    fn decide(&self, r: &Request<'_>) -> Decision {
        self.seen.lock().unwrap().push(Seen {
            ip: r.ip,
            port: r.port,
            host: r.host.map(str::to_string),
            source: r.source,
            network: r.network.map(str::to_string),
            mode: r.mode,
        });
        if Some(r.port) == self.deny_port {
            Decision::Deny {
                rule: format!("deny port {}", r.port),
            }
        } else {
            Decision::Allow
        }
    }
}

async fn listen() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

/// Echoes everything back, prefixed once with `hello `.
async fn echo_server() -> SocketAddr {
    let (l, addr) = listen().await;
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let _ = s.write_all(b"hello ").await;
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// An HTTP origin answering `origin saw <path> host=<Host>`.
async fn http_origin() -> SocketAddr {
    use hyper::service::service_fn;
    let (l, addr) = listen().await;
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let host = req
                        .headers()
                        .get("host")
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or("-")
                        .to_string();
                    let body = format!("origin saw {} host={host}", req.uri());
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from(body)),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

#[derive(Clone, Copy, PartialEq)]
enum Upstream {
    /// Answers 200 and tunnels to the backend, whatever the target.
    Tunnel(SocketAddr),
    Refuse,
    Hang,
}

/// A stand-in upstream proxy; returns its address and the CONNECT targets
/// it was asked for.
async fn upstream(kind: Upstream) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let (l, addr) = listen().await;
    let asked = Arc::new(Mutex::new(Vec::new()));
    let a2 = asked.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let asked = a2.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                loop {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let line = String::from_utf8_lossy(&buf)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                asked.lock().unwrap().push(line);
                match kind {
                    Upstream::Refuse => {
                        let _ = s
                            .write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
                            .await;
                    }
                    Upstream::Hang => tokio::time::sleep(Duration::from_secs(3600)).await,
                    Upstream::Tunnel(backend) => {
                        let mut b = TcpStream::connect(backend).await.unwrap();
                        s.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                            .await
                            .unwrap();
                        let _ = tokio::io::copy_bidirectional(&mut s, &mut b).await;
                    }
                }
            });
        }
    });
    (addr, asked)
}

fn proxy_env(https: Option<SocketAddr>, no_proxy: &str) -> ProxyEnv {
    let https = https.map(|a| format!("http://{a}"));
    ProxyEnv::from_lookup(|k| match k {
        "https_proxy" | "http_proxy" => https.clone(),
        "no_proxy" => Some(no_proxy.to_string()),
        _ => None,
    })
    .unwrap()
}

type Destinations = Arc<Mutex<HashMap<u16, SocketAddr>>>;

/// A transparent engine whose "original destination" is looked up by the
/// client's source port.
async fn transparent(
    config: EngineConfig,
    policy: Arc<dyn Policy>,
) -> (SocketAddr, Destinations, JoinHandle<()>) {
    let dests: Destinations = Arc::default();
    let d2 = dests.clone();
    let engine = Engine::with_destination_lookup(
        config,
        policy,
        Arc::new(move |s: &TcpStream, _local: &SocketAddr| {
            let port = s.peer_addr()?.port();
            d2.lock()
                .unwrap()
                .get(&port)
                .copied()
                .ok_or_else(|| std::io::Error::other("not redirected"))
        }),
    );
    let (l, addr) = listen().await;
    let task = tokio::spawn(async move { engine.serve_transparent(l, Some("net1".into())).await });
    (addr, dests, task)
}

/// Connect to the proxy as if redirected from `dest`.
async fn redirected(proxy: SocketAddr, dests: &Destinations, dest: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = s.local_addr().unwrap().port();
    dests.lock().unwrap().insert(port, dest);
    s.connect(proxy).await.unwrap()
}

/// Read until EOF or error; true if the peer reset or closed without data.
async fn read_all(s: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("read did not finish");
    (out, r.is_err())
}

fn config() -> EngineConfig {
    EngineConfig {
        connect_timeout: Duration::from_millis(400),
        sniff_timeout: Duration::from_millis(200),
        ..EngineConfig::default()
    }
}

#[tokio::test]
async fn transparent_direct_relays_and_asks_the_policy() {
    let server = echo_server().await;
    let policy = Arc::new(Recorder::default());
    let (proxy, dests, _t) = transparent(config(), policy.clone()).await;
    let mut c = redirected(proxy, &dests, server).await;
    let source = c.local_addr().unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: Web.Test\r\n\r\n")
        .await
        .unwrap();
    c.shutdown().await.unwrap();
    let (got, _) = read_all(&mut c).await;
    assert_eq!(got, b"hello GET / HTTP/1.1\r\nHost: Web.Test\r\n\r\n");
    let seen = policy.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![Seen {
            ip: Some(server.ip()),
            port: server.port(),
            host: Some("web.test".into()),
            source,
            network: Some("net1".into()),
            mode: Mode::Transparent,
        }]
    );
}

#[tokio::test]
async fn transparent_denied_connection_is_reset_and_never_opened() {
    let (l, server) = listen().await;
    let policy = Arc::new(Recorder {
        deny_port: Some(server.port()),
        ..Default::default()
    });
    let (proxy, dests, _t) = transparent(config(), policy.clone()).await;
    let mut c = redirected(proxy, &dests, server).await;
    c.write_all(b"x").await.unwrap();
    let (got, _) = read_all(&mut c).await;
    assert!(got.is_empty());
    let accepted = tokio::time::timeout(Duration::from_millis(200), l.accept()).await;
    assert!(accepted.is_err(), "a denied destination was connected to");
}

#[tokio::test]
async fn transparent_not_redirected_is_refused() {
    let engine = Engine::allow_all(config());
    let (l, addr) = listen().await;
    let _t = tokio::spawn(async move { engine.serve_transparent(l, None).await });
    let mut c = TcpStream::connect(addr).await.unwrap();
    let (got, _) = read_all(&mut c).await;
    assert!(got.is_empty());
}

#[tokio::test]
async fn transparent_names_the_destination_to_the_upstream_by_sni_and_host() {
    let server = echo_server().await;
    let (up, asked) = upstream(Upstream::Tunnel(server)).await;
    let cfg = EngineConfig {
        upstream: proxy_env(Some(up), ""),
        ..config()
    };
    let (proxy, dests, _t) = transparent(cfg, Arc::new(crate::AllowAll)).await;
    let dest: SocketAddr = "192.0.2.10:443".parse().unwrap();

    let hello = crate::sniff::tests_support::client_hello("secure.example");
    let mut c = redirected(proxy, &dests, dest).await;
    c.write_all(&hello).await.unwrap();
    c.shutdown().await.unwrap();
    let (got, _) = read_all(&mut c).await;
    assert_eq!(&got[..6], b"hello ");
    assert_eq!(&got[6..], &hello[..]);

    let dest80: SocketAddr = "192.0.2.10:80".parse().unwrap();
    let mut c = redirected(proxy, &dests, dest80).await;
    c.write_all(b"GET / HTTP/1.1\r\nHost: plain.example\r\n\r\n")
        .await
        .unwrap();
    c.shutdown().await.unwrap();
    read_all(&mut c).await;

    // No name: the address.
    let mut c = redirected(proxy, &dests, dest).await;
    c.write_all(&[0u8, 1, 2]).await.unwrap();
    c.shutdown().await.unwrap();
    read_all(&mut c).await;

    let asked = asked.lock().unwrap().clone();
    assert_eq!(
        asked,
        vec![
            "CONNECT secure.example:443 HTTP/1.1",
            "CONNECT plain.example:80 HTTP/1.1",
            "CONNECT 192.0.2.10:443 HTTP/1.1",
        ]
    );
}

#[tokio::test]
async fn upstream_refusing_or_hanging_fails_the_client_in_time_and_others_still_work() {
    let server = echo_server().await;
    for kind in [Upstream::Refuse, Upstream::Hang] {
        let (up, _) = upstream(kind).await;
        // The echo server is reached directly (NO_PROXY); everything else
        // goes to the broken upstream.
        let cfg = EngineConfig {
            upstream: proxy_env(Some(up), &server.ip().to_string()),
            ..config()
        };
        let timeout = cfg.connect_timeout;
        let (proxy, dests, _t) = transparent(cfg, Arc::new(crate::AllowAll)).await;
        let started = Instant::now();
        let mut broken = redirected(proxy, &dests, "192.0.2.10:80".parse().unwrap()).await;
        broken
            .write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
            .await
            .unwrap();
        // Meanwhile another connection works.
        let mut ok = redirected(proxy, &dests, server).await;
        ok.write_all(b"ping").await.unwrap();
        ok.shutdown().await.unwrap();
        assert_eq!(read_all(&mut ok).await.0, b"hello ping");
        let (got, _) = read_all(&mut broken).await;
        let took = started.elapsed();
        assert!(got.is_empty());
        assert!(took < timeout + Duration::from_secs(2), "{took:?}");
    }
}

#[tokio::test]
async fn upstream_not_listening_fails_the_client() {
    let (l, dead) = listen().await;
    drop(l);
    let cfg = EngineConfig {
        upstream: proxy_env(Some(dead), ""),
        ..config()
    };
    let (proxy, dests, _t) = transparent(cfg, Arc::new(crate::AllowAll)).await;
    let mut c = redirected(proxy, &dests, "192.0.2.10:443".parse().unwrap()).await;
    c.write_all(&[1, 2, 3]).await.unwrap();
    assert!(read_all(&mut c).await.0.is_empty());
}

#[tokio::test]
async fn connection_limit_resets_the_excess() {
    let server = echo_server().await;
    let cfg = EngineConfig {
        max_connections: 1,
        ..config()
    };
    let engine = Engine::with_destination_lookup(
        cfg,
        Arc::new(crate::AllowAll),
        Arc::new(move |_, _| Ok(server)),
    );
    let (l, addr) = listen().await;
    let e2 = engine.clone();
    let _t = tokio::spawn(async move { e2.serve_transparent(l, None).await });
    let mut first = TcpStream::connect(addr).await.unwrap();
    let mut hello = [0u8; 6];
    first.read_exact(&mut hello).await.unwrap();
    let mut second = TcpStream::connect(addr).await.unwrap();
    assert!(read_all(&mut second).await.0.is_empty());
    assert_eq!(engine.stats().over_limit, 1);
    assert_eq!(engine.stats().active, 1);
}

// ---- explicit proxy ----

async fn explicit(cfg: EngineConfig, policy: Arc<dyn Policy>) -> SocketAddr {
    let engine = Engine::new(cfg, policy);
    let (l, addr) = listen().await;
    tokio::spawn(async move { engine.serve_explicit(l, Some("net2".into())).await });
    addr
}

/// Send `head` and read one response head; returns (status, rest of what
/// arrived after the head, the stream).
async fn ask(proxy: SocketAddr, head: &str) -> (u16, Vec<u8>, TcpStream) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("no answer")
            .unwrap();
        assert!(n > 0, "closed without an answer");
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(len) = resp.parse(&buf).unwrap() {
            return (resp.code.unwrap(), buf[len..].to_vec(), s);
        }
    }
}

#[tokio::test]
async fn explicit_connect_tunnels_and_asks_the_policy() {
    let server = echo_server().await;
    let policy = Arc::new(Recorder::default());
    let proxy = explicit(config(), policy.clone()).await;
    let (status, mut rest, mut s) = ask(
        proxy,
        &format!("CONNECT {server} HTTP/1.1\r\nHost: {server}\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 200);
    s.write_all(b"through").await.unwrap();
    s.shutdown().await.unwrap();
    rest.extend(read_all(&mut s).await.0);
    assert_eq!(rest, b"hello through");
    let seen = policy.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].ip, seen[0].port),
        (Some(server.ip()), server.port())
    );
    assert_eq!(
        (seen[0].mode, seen[0].network.as_deref()),
        (Mode::Connect, Some("net2"))
    );
}

#[tokio::test]
async fn explicit_denial_is_a_403_naming_the_rule() {
    let server = echo_server().await;
    let policy = Arc::new(Recorder {
        deny_port: Some(server.port()),
        ..Default::default()
    });
    let proxy = explicit(config(), policy).await;
    let (status, body, _) = ask(proxy, &format!("CONNECT {server} HTTP/1.1\r\n\r\n")).await;
    assert_eq!(status, 403);
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.contains(&format!("deny port {}", server.port())),
        "{body}"
    );
    let (status, body, _) = ask(
        proxy,
        &format!("GET http://{server}/x HTTP/1.1\r\nHost: {server}\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("deny port"));
}

#[tokio::test]
async fn explicit_forwards_absolute_form_requests() {
    let origin = http_origin().await;
    let proxy = explicit(config(), Arc::new(crate::AllowAll)).await;
    let (status, mut body, mut s) = ask(
        proxy,
        &format!("GET http://{origin}/path?q=1 HTTP/1.1\r\nHost: {origin}\r\nProxy-Connection: keep-alive\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 200);
    body.extend(read_all(&mut s).await.0);
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.contains(&format!("origin saw /path?q=1 host={origin}")),
        "{body}"
    );
}

#[tokio::test]
async fn explicit_upstream_failures_are_502_and_504() {
    for (kind, code) in [(Upstream::Refuse, 502), (Upstream::Hang, 504)] {
        let (up, _) = upstream(kind).await;
        let cfg = EngineConfig {
            upstream: proxy_env(Some(up), ""),
            ..config()
        };
        let proxy = explicit(cfg, Arc::new(crate::AllowAll)).await;
        let started = Instant::now();
        let (status, body, _) = ask(
            proxy,
            "CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n",
        )
        .await;
        assert_eq!(status, code, "{}", String::from_utf8_lossy(&body));
        assert!(started.elapsed() < Duration::from_secs(3));
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains("example.test:443"), "{body}");
    }
}

#[tokio::test]
async fn explicit_bad_requests_are_400() {
    let proxy = explicit(config(), Arc::new(crate::AllowAll)).await;
    for head in [
        "GET /origin-form HTTP/1.1\r\nHost: x\r\n\r\n",
        "CONNECT no-port.test HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET https://secure.test/ HTTP/1.1\r\nHost: secure.test\r\n\r\n",
    ] {
        let (status, _, _) = ask(proxy, head).await;
        assert_eq!(status, 400, "{head}");
    }
}

#[tokio::test]
async fn explicit_forwards_absolute_form_to_the_upstream_with_its_credentials() {
    // A stand-in upstream HTTP proxy: records the request head, answers.
    let (l, up) = listen().await;
    let seen = Arc::new(Mutex::new(String::new()));
    let s2 = seen.clone();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            buf.extend_from_slice(&chunk[..n]);
        }
        *s2.lock().unwrap() = String::from_utf8_lossy(&buf).to_string();
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\nupstream")
            .await
            .unwrap();
    });
    let upstream = ProxyEnv::from_lookup(|k| match k {
        "http_proxy" => Some(format!("http://user:pa%20ss@{up}")),
        _ => None,
    })
    .unwrap();
    let proxy = explicit(
        EngineConfig {
            upstream,
            ..config()
        },
        Arc::new(crate::AllowAll),
    )
    .await;
    let (status, mut body, mut s) = ask(
        proxy,
        "GET http://example.test/x?y=1 HTTP/1.1\r\nHost: example.test\r\nProxy-Authorization: Basic client-secret\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    body.extend(read_all(&mut s).await.0);
    assert_eq!(body, b"upstream");
    let head = seen.lock().unwrap().clone();
    let lower = head.to_ascii_lowercase();
    assert!(
        head.starts_with("GET http://example.test/x?y=1 HTTP/1.1\r\n"),
        "{head}"
    );
    // The upstream's credentials ("user:pa ss"), never the client's.
    assert!(
        lower.contains("proxy-authorization: basic dxnlcjpwysbzcw=="),
        "{head}"
    );
    assert!(!head.contains("client-secret"), "{head}");
}
