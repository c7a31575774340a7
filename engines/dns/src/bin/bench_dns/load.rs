//! A closed-loop load generator: K threads, each with its own UDP socket,
//! one query in flight per thread. The same code drives every server, so
//! client costs are equal.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conductor_dns::proto::op::{Message, MessageType, OpCode, Query};
use conductor_dns::proto::rr::{Name, RecordType};

/// What each query asks.
#[derive(Clone, Copy)]
pub enum Names {
    /// The same name every time.
    Fixed(&'static str),
    /// `c<i>.` for i in 0..n, round robin (container names).
    Containers(usize),
    /// A name no cache has seen: `<thread>-<n>.cold.fwd.test.`.
    Unique,
}

/// The figures of one run.
pub struct Figures {
    pub qps: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub lost: u64,
}

pub fn query(id: u16, name: &str) -> Vec<u8> {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    let name = Name::from_ascii(name).expect("bench names are valid");
    message.add_query(Query::query(name, RecordType::A));
    message.to_vec().expect("bench queries encode")
}

fn worker(
    thread: usize,
    server: SocketAddr,
    names: Names,
    warmup: Duration,
    stop: Arc<AtomicBool>,
) -> (Vec<u32>, u64) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a client socket");
    socket.connect(server).expect("connect the client socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("set a read timeout");
    // Prebuilt queries where the name repeats; the id is patched in.
    let fixed: Vec<Vec<u8>> = match names {
        Names::Fixed(name) => vec![query(0, name)],
        Names::Containers(n) => (0..n).map(|i| query(0, &format!("c{i}."))).collect(),
        Names::Unique => Vec::new(),
    };
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(1 << 16);
    let mut lost = 0;
    let mut buf = [0u8; 1500];
    let mut n: usize = thread * 7919;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let id = n as u16;
        let mut packet = match names {
            Names::Unique => query(id, &format!("t{thread}-{n}.cold.fwd.test.")),
            _ => fixed[n % fixed.len()].clone(),
        };
        packet[..2].copy_from_slice(&id.to_be_bytes());
        let sent = Instant::now();
        if socket.send(&packet).is_err() {
            lost += 1;
            continue;
        }
        loop {
            match socket.recv(&mut buf) {
                Ok(len) if len >= 2 && buf[..2] == id.to_be_bytes() => {
                    if sent.duration_since(started) >= warmup {
                        latencies.push(sent.elapsed().as_nanos().min(u32::MAX as u128) as u32);
                    }
                    break;
                }
                // A late answer to an earlier, timed-out query.
                Ok(_) => continue,
                Err(_) => {
                    lost += 1;
                    break;
                }
            }
        }
    }
    (latencies, lost)
}

/// Runs `clients` closed-loop clients against `server` for `warmup +
/// measure`; figures cover the measured part.
pub fn run(
    server: SocketAddr,
    names: Names,
    clients: usize,
    warmup: Duration,
    measure: Duration,
) -> Figures {
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..clients)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || worker(t, server, names, warmup, stop))
        })
        .collect();
    std::thread::sleep(warmup + measure);
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut lost = 0;
    for thread in threads {
        let (latencies, l) = thread.join().expect("a load thread panicked");
        all.extend(latencies);
        lost += l;
    }
    all.sort_unstable();
    let at = |q: f64| {
        all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
            .map_or(Duration::ZERO, |&ns| Duration::from_nanos(u64::from(ns)))
    };
    Figures {
        qps: all.len() as f64 / measure.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
        lost,
    }
}

/// The round with the median qps (its latencies come with it).
pub fn median(mut rounds: Vec<Figures>) -> Figures {
    rounds.sort_by(|a, b| a.qps.total_cmp(&b.qps));
    let mid = rounds.len() / 2;
    rounds.swap_remove(mid)
}
