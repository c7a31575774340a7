//! The ports suite's service and clients (vm-tests/ports/run.sh):
//!   ports-target serve ADDR     HTTP on ADDR (a page that echoes through a
//!                               WebSocket, /ws echo, /stream SSE, /headers,
//!                               POST /upload) and a UDP echo on the same port
//!   ports-target ws URL         send three WebSocket messages, print the echoes
//!   ports-target udp ADDR MSG   one datagram, print the answer
//!   ports-target stream URL     print "streamed" when the first SSE event
//!                               arrived well before the last was sent
//!   ports-target sink ADDR      TCP: read and discard (bench-ports)
//!   ports-target echo ADDR      TCP: echo (bench-ports)
//! Runs inside the test's containers too (copied with its libraries).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

const PAGE: &str = r#"<!doctype html><html><head><title>ports-target</title></head><body>
<h1>conductor-net *.localhost</h1><div id="result">pending</div><script>
const out = document.getElementById('result');
const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws');
const got = [];
ws.onopen = () => { for (const m of ['one', 'two', 'three']) ws.send(m); };
ws.onmessage = (e) => { got.push(e.data); if (got.length === 3) { out.textContent = 'ws-echo:' + got.join(','); ws.close(); } };
ws.onerror = () => { out.textContent = 'ws-error'; };
</script></body></html>
"#;

fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into()).boxed()
}

async fn handle(mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    match req.uri().path() {
        "/" => Ok(Response::builder()
            .header("content-type", "text/html")
            .body(full(PAGE))
            .unwrap_or_default()),
        "/ws" => {
            let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
                return Ok(Response::builder()
                    .status(400)
                    .body(full("not a websocket\n"))
                    .unwrap_or_default());
            };
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let Ok(io) = upgrade.await else { return };
                let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    TokioIo::new(io),
                    Role::Server,
                    None,
                )
                .await;
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_text() || m.is_binary() {
                        if ws.send(m).await.is_err() {
                            break;
                        }
                    } else if m.is_close() {
                        break;
                    }
                }
            });
            Ok(Response::builder()
                .status(101)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
                .body(full(""))
                .unwrap_or_default())
        }
        "/stream" => {
            let events = futures::stream::unfold(0u32, |i| async move {
                if i == 3 {
                    return None;
                }
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                let frame = Frame::data(Bytes::from(format!("data: tick {i}\n\n")));
                Some((Ok::<_, Infallible>(frame), i + 1))
            });
            Ok(Response::builder()
                .header("content-type", "text/event-stream")
                .body(BodyExt::boxed(StreamBody::new(events)))
                .unwrap_or_default())
        }
        "/headers" => {
            let h = |n: &str| {
                req.headers()
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_string()
            };
            let text = format!(
                "host={} xff={} xfh={} xfp={}\n",
                h("host"),
                h("x-forwarded-for"),
                h("x-forwarded-host"),
                h("x-forwarded-proto")
            );
            Ok(Response::new(full(text)))
        }
        "/upload" => {
            let mut n = 0usize;
            let mut body = req.into_body();
            while let Some(Ok(f)) = body.frame().await {
                if let Some(d) = f.data_ref() {
                    n += d.len();
                }
            }
            Ok(Response::new(full(format!("received {n}\n"))))
        }
        _ => Ok(Response::new(full("hello-from-target\n"))),
    }
}

async fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let udp = tokio::net::UdpSocket::bind(addr).await?;
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = udp.recv_from(&mut buf).await {
            let mut reply = b"echo:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            let _ = udp.send_to(&reply, from).await;
        }
    });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("ports-target serving {addr}");
    loop {
        let (s, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(s), hyper::service::service_fn(handle))
                .with_upgrades()
                .await;
        });
    }
}

/// *.localhost resolves to loopback (RFC 6761), as browsers do it.
async fn connect(uri: &hyper::Uri) -> Result<tokio::net::TcpStream, String> {
    let authority = uri.authority().ok_or("no authority")?;
    let host = authority.host();
    let port = authority.port_u16().unwrap_or(80);
    let host = if host.ends_with(".localhost") {
        "127.0.0.1"
    } else {
        host.trim_start_matches('[').trim_end_matches(']')
    };
    tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connect {host}:{port}: {e}"))
}

/// The benchmark's servers: discard everything, or echo it.
async fn plain(addr: SocketAddr, echo: bool) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    loop {
        let (mut s, _) = listener.accept().await?;
        let _ = s.set_nodelay(true);
        tokio::spawn(async move {
            let (mut r, mut w) = s.split();
            if echo {
                let _ = tokio::io::copy(&mut r, &mut w).await;
            } else {
                let _ = tokio::io::copy(&mut r, &mut tokio::io::sink()).await;
            }
        });
    }
}

async fn ws_client(url: &str) -> Result<String, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let tcp = connect(&uri).await?;
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp)
        .await
        .map_err(|e| format!("ws-connect-failed: {e}"))?;
    let mut got = Vec::new();
    for m in ["one", "two", "three"] {
        ws.send(Message::text(m)).await.map_err(|e| e.to_string())?;
        match ws.next().await {
            Some(Ok(Message::Text(t))) => got.push(t.to_string()),
            other => return Err(format!("ws-bad-reply: {other:?}")),
        }
    }
    let _ = ws.close(None).await;
    Ok(format!("ws-echo:{}", got.join(",")))
}

async fn udp_client(addr: &str, msg: &str) -> Result<String, String> {
    let target: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let bind = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let s = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 2048];
    // A few tries: the first datagram may meet a target not listening yet.
    for _ in 0..5 {
        s.send_to(msg.as_bytes(), target)
            .await
            .map_err(|e| e.to_string())?;
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(1), s.recv(&mut buf)).await {
            return Ok(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    Err("udp-no-answer".into())
}

async fn stream_client(url: &str) -> Result<String, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let authority = uri.authority().ok_or("no authority")?.clone();
    let s = connect(&uri).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::get(uri.path())
        .header("host", authority.as_str())
        .body(Full::<Bytes>::default())
        .map_err(|e| e.to_string())?;
    let start = Instant::now();
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let mut body = resp.into_body();
    let mut first = None;
    let mut text = String::new();
    while let Some(f) = body.frame().await {
        let f = f.map_err(|e| e.to_string())?;
        if let Some(d) = f.data_ref() {
            first.get_or_insert(start.elapsed());
            text.push_str(&String::from_utf8_lossy(d));
        }
    }
    let total = start.elapsed();
    let first = first.ok_or("no data")?;
    // Three events 500 ms apart: unbuffered, the first comes ~1 s before the end.
    if text.matches("data: tick").count() == 3
        && total.saturating_sub(first) >= Duration::from_millis(700)
    {
        Ok("streamed".into())
    } else {
        Err(format!(
            "buffered: first event at {first:?}, end at {total:?}, body {text:?}"
        ))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let result = match arg(1).as_str() {
        "serve" => match arg(2).parse() {
            Ok(a) => serve(a)
                .await
                .map(|_| String::new())
                .map_err(|e| e.to_string()),
            Err(e) => Err(format!("{}: {e}", arg(2))),
        },
        "sink" | "echo" => match arg(2).parse() {
            Ok(a) => plain(a, arg(1) == "echo")
                .await
                .map(|_| String::new())
                .map_err(|e| e.to_string()),
            Err(e) => Err(format!("{}: {e}", arg(2))),
        },
        "ws" => ws_client(&arg(2)).await,
        "udp" => udp_client(&arg(2), &arg(3)).await,
        "stream" => stream_client(&arg(2)).await,
        _ => Err("usage: ports-target serve ADDR | ws URL | udp ADDR MSG | stream URL".into()),
    };
    match result {
        Ok(s) => println!("{s}"),
        Err(e) => {
            println!("{e}");
            std::process::exit(1);
        }
    }
}
