//! One request through the proxy: route it, rewrite the forwarding headers,
//! send it on a pooled HTTP/1.1 connection, stream the answer back; an
//! upgrade (WebSocket) answered 101 is joined byte for byte.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::route::{parse_host, NotRouted};
use crate::ports::Ports;

type Body = BoxBody<Bytes, hyper::Error>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Forward {
    ports: Arc<Ports>,
    client: Client<HttpConnector, Incoming>,
    listener: String,
}

impl Forward {
    pub fn new(ports: Arc<Ports>, listener: SocketAddr) -> Forward {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(http);
        Forward {
            ports,
            client,
            listener: listener.to_string(),
        }
    }

    pub async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .or_else(|| {
                req.headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let json = wants_json(req.headers());
        let Some(wanted) = parse_host(&host) else {
            return self
                .not_routed(
                    format!("{host:?} is not a *.localhost name: use http://<port>.<name>.localhost:<listener>/"),
                    json,
                    StatusCode::NOT_FOUND,
                )
                .await;
        };
        let Some(ip) = self.ports.address_of_name(&wanted.name) else {
            return self
                .not_routed(
                    format!("no target called {:?}", wanted.name),
                    json,
                    StatusCode::NOT_FOUND,
                )
                .await;
        };
        let port = match wanted.port {
            Some(p) => p,
            None => {
                let routable = self.ports.routable().await;
                match routable.get(&wanted.name).map(Vec::as_slice) {
                    Some([one]) => *one,
                    other => {
                        let n = other.map_or(0, <[u16]>::len);
                        return self
                            .not_routed(
                                format!(
                                    "{:?} has {n} published or exposed ports: ask for one as http://<port>.{}.localhost",
                                    wanted.name, wanted.name
                                ),
                                json,
                                StatusCode::NOT_FOUND,
                            )
                            .await;
                    }
                }
            }
        };
        match self
            .send(req, SocketAddr::new(ip, port), peer.ip(), &host)
            .await
        {
            Ok(r) => r,
            Err(e) => text(
                StatusCode::BAD_GATEWAY,
                format!("{}:{port} ({ip}:{port}) did not answer: {e}\n", wanted.name),
            ),
        }
    }

    async fn send(
        &self,
        mut req: Request<Incoming>,
        target: SocketAddr,
        client_ip: IpAddr,
        host: &str,
    ) -> Result<Response<Body>, String> {
        let upgrade = req
            .headers()
            .get(header::UPGRADE)
            .cloned()
            .filter(|_| req.version() == Version::HTTP_11);
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        *req.uri_mut() =
            Uri::try_from(format!("http://{target}{path}")).map_err(|e| e.to_string())?;
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        *req.version_mut() = Version::HTTP_11;
        let headers = req.headers_mut();
        strip_hop_by_hop(headers);
        if let Some(u) = &upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, u.clone());
        }
        if !headers.contains_key(header::HOST) {
            if let Ok(h) = HeaderValue::from_str(host) {
                headers.insert(header::HOST, h);
            }
        }
        forwarded_headers(headers, client_ip, host);
        let mut resp = self.client.request(req).await.map_err(|e| e.to_string())?;
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_side) = client_upgrade {
                let server_side = hyper::upgrade::on(&mut resp);
                tokio::spawn(async move {
                    match tokio::try_join!(client_side, server_side) {
                        Ok((c, s)) => {
                            let mut c = TokioIo::new(c);
                            let mut s = TokioIo::new(s);
                            let _ = tokio::io::copy_bidirectional(&mut c, &mut s).await;
                        }
                        Err(e) => tracing::debug!(error = %e, "upgrade through the proxy failed"),
                    }
                });
            }
            let (parts, body) = resp.into_parts();
            return Ok(Response::from_parts(parts, body.boxed()));
        }
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, body.boxed()))
    }

    async fn not_routed(&self, reason: String, json: bool, status: StatusCode) -> Response<Body> {
        let routable = self.ports.routable().await;
        let page = NotRouted {
            reason,
            routable: &routable,
            listener: &self.listener,
        };
        let (body, kind) = if json {
            (page.json(), "application/json")
        } else {
            (page.html(), "text/html; charset=utf-8")
        };
        let mut r = Response::new(full(body));
        *r.status_mut() = status;
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
        r
    }
}

fn wants_json(h: &HeaderMap) -> bool {
    h.get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json") && !v.contains("text/html"))
}

/// Headers that belong to one hop (RFC 9110 7.6.1), and those the
/// Connection header names.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        h.remove(n);
    }
}

fn forwarded_headers(h: &mut HeaderMap, client: IpAddr, host: &str) {
    let xff = match h.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {client}"),
        None => client.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        h.insert("x-forwarded-for", v);
    }
    if let Ok(v) = HeaderValue::from_str(host) {
        h.insert("x-forwarded-host", v);
    }
    h.insert("x-forwarded-proto", HeaderValue::from_static("http"));
}

fn full(s: String) -> Body {
    Full::new(Bytes::from(s))
        .map_err(|never| match never {})
        .boxed()
}

fn text(status: StatusCode, s: String) -> Response<Body> {
    let mut r = Response::new(full(s));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
