//! Published ports and the *.localhost proxy, measured (driven by
//! vm-tests/ports/bench.sh, which builds the topology):
//!   bench-ports tcp SECS NAME=ADDR...      bulk TCP to a sink: 1 and 8 streams
//!                                           (BENCH_STREAMS="1 8")
//!   bench-ports conns SECS NAME=ADDR...    connect, 1-byte echo, close; 8 at once
//!   bench-ports http SECS NAME=ADDR@HOST...  GET with 64 keep-alive clients:
//!                                           requests/s, p50, p99
//!   bench-ports ws SECS NAME=ADDR@HOST...    WebSocket message round trips
//!                                           (one client, 64-byte text): p50, p99
//! Every row is printed with its ratio to the first NAME (the direct path);
//! tcp and conns rows are medians of BENCH_ROUNDS (default 3) rounds in
//! which the rows take turns.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// A connection that makes no progress for this long ends its row's
/// sample (a stalled path must not hang the benchmark).
const STALL: Duration = Duration::from_secs(2);

fn targets(args: &[String]) -> Vec<(String, String)> {
    args.iter()
        .filter_map(|a| {
            a.split_once('=')
                .map(|(n, v)| (n.to_string(), v.to_string()))
        })
        .collect()
}

async fn bulk(addr: SocketAddr, streams: usize, secs: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..streams {
        tasks.push(tokio::spawn(async move {
            // A path that stalls ends the row instead of hanging it.
            let Ok(Ok(mut s)) = tokio::time::timeout(STALL, TcpStream::connect(addr)).await else {
                return 0u64;
            };
            let buf = vec![0u8; 256 * 1024];
            let mut sent = 0u64;
            while Instant::now() < deadline {
                match tokio::time::timeout(STALL, s.write(&buf)).await {
                    Ok(Ok(n)) => sent += n as u64,
                    _ => break,
                }
            }
            sent
        }));
    }
    let mut total = 0u64;
    for t in tasks {
        total += t.await.unwrap_or(0);
    }
    total as f64 * 8.0 / secs / 1e9
}

async fn conns(addr: SocketAddr, secs: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let one = async {
                    let mut s = TcpStream::connect(addr).await?;
                    let mut b = [0u8; 1];
                    s.write_all(b"x").await?;
                    s.read_exact(&mut b).await?;
                    std::io::Result::Ok(())
                };
                match tokio::time::timeout(STALL, one).await {
                    Ok(Ok(())) => n += 1,
                    Ok(Err(_)) => {}
                    Err(_) => break, // stalled: the row ends
                }
            }
            n
        }));
    }
    let mut total = 0u64;
    for t in tasks {
        total += t.await.unwrap_or(0);
    }
    total as f64 / secs
}

async fn http(addr: SocketAddr, host: String, secs: f64) -> (f64, Duration, Duration) {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let host = host.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let Ok(Ok(s)) = tokio::time::timeout(STALL, TcpStream::connect(addr)).await else {
                return lat;
            };
            let _ = s.set_nodelay(true);
            let Ok((mut tx, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await
            else {
                return lat;
            };
            tokio::spawn(conn);
            while Instant::now() < deadline {
                let req = hyper::Request::get("/hello")
                    .header("host", &host)
                    .body(Empty::<Bytes>::new())
                    .expect("static request");
                let t = Instant::now();
                let one = async {
                    let resp = tx.send_request(req).await.ok()?;
                    resp.into_body().collect().await.ok()
                };
                // (a request that takes 10 s is a stall, not a latency)
                let Ok(Some(_)) = tokio::time::timeout(STALL * 5, one).await else {
                    break;
                };
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    all.sort();
    (
        all.len() as f64 / secs,
        percentile(&all, 0.5),
        percentile(&all, 0.99),
    )
}

/// The HOST of `ADDR@HOST` (empty without one).
fn host_of(target: &str) -> String {
    target
        .split_once('@')
        .map(|(_, h)| h.to_string())
        .unwrap_or_default()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

/// One WebSocket client (`ws://HOST/ws`, connected to ADDR) sending a message
/// and waiting for its echo, again and again: the round trips.
async fn ws(addr: SocketAddr, host: String, secs: f64) -> Result<Vec<Duration>, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (mut socket, _) = tokio_tungstenite::client_async(format!("ws://{host}/ws"), tcp)
        .await
        .map_err(|e| format!("ws://{host}/ws: {e}"))?;
    let payload = "x".repeat(64);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut rtts = Vec::new();
    while Instant::now() < deadline {
        let t = Instant::now();
        socket
            .send(Message::text(payload.clone()))
            .await
            .map_err(|e| e.to_string())?;
        match socket.next().await {
            Some(Ok(Message::Text(_))) => rtts.push(t.elapsed()),
            other => return Err(format!("unexpected reply {other:?}")),
        }
    }
    let _ = socket.close(None).await;
    rtts.sort();
    Ok(rtts)
}

/// Streams per bulk row: BENCH_STREAMS (default "1 8").
fn stream_counts() -> Vec<usize> {
    let counts: Vec<usize> = std::env::var("BENCH_STREAMS")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .collect();
    if counts.is_empty() {
        vec![1, 8]
    } else {
        counts
    }
}

/// Rounds per throughput row (BENCH_ROUNDS, default 3): the rows take turns
/// within a round, so a change in the machine's load hits all of them.
fn rounds() -> usize {
    std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(3)
}

/// The median over `rounds()` of `measure` for every row, in row order.
async fn rounds_of<F, Fut>(rows: &[(String, String)], measure: F) -> Vec<f64>
where
    F: Fn(&str) -> Fut,
    Fut: std::future::Future<Output = f64>,
{
    let mut samples = vec![Vec::new(); rows.len()];
    for _ in 0..rounds() {
        for (i, (_, v)) in rows.iter().enumerate() {
            samples[i].push(measure(v).await);
        }
    }
    samples
        .into_iter()
        .map(|mut s| {
            s.sort_by(f64::total_cmp);
            s[s.len() / 2]
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).cloned().unwrap_or_default();
    let secs: f64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let rows = targets(args.get(3..).unwrap_or_default());
    if rows.is_empty() {
        eprintln!("usage: bench-ports tcp|conns|http|ws SECS NAME=ADDR[@HOST]...");
        std::process::exit(2);
    }
    let addr = |v: &str| -> SocketAddr {
        v.split('@')
            .next()
            .unwrap_or_default()
            .parse()
            .unwrap_or_else(|e| {
                eprintln!("{v}: {e}");
                std::process::exit(2)
            })
    };
    match mode.as_str() {
        "tcp" => {
            for streams in stream_counts() {
                let gbits = rounds_of(&rows, |v| bulk(addr(v), streams, secs)).await;
                for ((name, _), g) in rows.iter().zip(&gbits) {
                    println!(
                        "tcp {streams} stream(s)  {name:<14} {g:7.2} Gbit/s  {:5.0}% of {}",
                        100.0 * g / gbits[0],
                        rows[0].0
                    );
                }
            }
        }
        "conns" => {
            let rates = rounds_of(&rows, |v| conns(addr(v), secs)).await;
            for ((name, _), c) in rows.iter().zip(&rates) {
                println!(
                    "connections/s (8 at once)  {name:<14} {c:9.0}  {:5.0}% of {}",
                    100.0 * c / rates[0],
                    rows[0].0
                );
            }
        }
        "http" => {
            let mut base = None;
            for (name, v) in &rows {
                let host = host_of(v);
                let (rps, p50, p99) = http(addr(v), host, secs).await;
                let b = *base.get_or_insert(rps);
                println!(
                    "http 64 keep-alive clients  {name:<14} {rps:9.0} req/s  p50 {:7.3} ms  p99 {:7.3} ms  {:5.0}% of {}",
                    p50.as_secs_f64() * 1e3, p99.as_secs_f64() * 1e3, 100.0 * rps / b, rows[0].0
                );
            }
        }
        "ws" => {
            let mut base = None;
            for (name, v) in &rows {
                let host = host_of(v);
                let limit = Duration::from_secs_f64(secs) + STALL * 5;
                let result = tokio::time::timeout(limit, ws(addr(v), host, secs))
                    .await
                    .unwrap_or_else(|_| Err(format!("stalled for more than {limit:?}")));
                match result {
                    Ok(rtts) => {
                        let p50 = percentile(&rtts, 0.5);
                        let p99 = percentile(&rtts, 0.99);
                        let b = *base.get_or_insert(p50);
                        println!(
                            "websocket round trip  {name:<14} {:8} msgs  p50 {:7.3} ms  p99 {:7.3} ms  p50 {:4.2}x of {}",
                            rtts.len(),
                            p50.as_secs_f64() * 1e3,
                            p99.as_secs_f64() * 1e3,
                            p50.as_secs_f64() / b.as_secs_f64().max(1e-9),
                            rows[0].0
                        );
                    }
                    Err(e) => println!("websocket round trip  {name:<14} failed: {e}"),
                }
            }
        }
        other => {
            eprintln!("unknown mode {other:?}");
            std::process::exit(2);
        }
    }
}
