//! The benchmark's network and traffic: topology, servers in the
//! "internet" namespace, and the clients (bulk stream, connection rate),
//! each run on a thread of its own that is given up on if it gets stuck.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use conductor_netd::egress::NetworkEgress;
use netns::Netns;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

pub(crate) const SERVER: &str = "198.51.100.10";
pub(crate) const SINK_PORT: u16 = 5001;
pub(crate) const RR_PORT: u16 = 5002;
pub(crate) const SPLICE_PORT: u16 = 15001;
pub(crate) const BUFFERED_PORT: u16 = 15003;
pub(crate) const REQUEST: usize = 100;

/// The topology, removed on drop (with our firewall rules).
pub(crate) struct Topology {
    prefix: String,
    env: String,
}

fn topology_script() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("egress/topology.sh")
        .display()
        .to_string()
}

fn sh(prefix: &str, env: &str, what: &str) -> Result<(), String> {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(". {}; {what}", topology_script()))
        .env("P", prefix)
        .env("ENV", env)
        .output()
        .map_err(|e| format!("bash: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{what}: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

impl Topology {
    pub(crate) fn up(env: &str) -> Result<Topology, String> {
        let t = Topology {
            prefix: format!("bx{}", std::process::id() % 100_000),
            env: env.to_string(),
        };
        sh(&t.prefix, env, "topo_up")?;
        Ok(t)
    }

    pub(crate) fn ns(&self, suffix: &str) -> Result<Netns, String> {
        Netns::open(&format!("{}{suffix}", self.prefix)).map_err(|e| e.to_string())
    }

    pub(crate) fn network(&self) -> NetworkEgress {
        NetworkEgress {
            name: "bench".into(),
            bridge: format!("{}br", self.prefix),
            subnet4: "10.231.0.0/24".parse().expect("subnet"),
            gateway4: "10.231.0.1".parse().expect("gateway"),
            subnet6: None,
            gateway6: None,
            dns: None,
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = sh(&self.prefix, &self.env, "topo_down");
    }
}

/// Servers in the internet namespace: a sink that answers with the byte
/// count, and a request/response server. Each listener gets two threads.
pub(crate) fn start_servers(inet: &Netns) -> Result<(), String> {
    let bind = |port: u16| {
        inet.run(move || TcpListener::bind((SERVER, port)))
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("bind {SERVER}:{port}: {e}"))
    };
    let sink = Arc::new(bind(SINK_PORT)?);
    let rr = Arc::new(bind(RR_PORT)?);
    for _ in 0..2 {
        let l = sink.clone();
        std::thread::spawn(move || loop {
            let Ok((mut s, _)) = l.accept() else { return };
            let mut buf = vec![0u8; 256 * 1024];
            let mut total: u64 = 0;
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            let _ = s.write_all(&total.to_be_bytes());
        });
        let l = rr.clone();
        std::thread::spawn(move || loop {
            let Ok((mut s, _)) = l.accept() else { return };
            let mut req = [0u8; REQUEST];
            if s.read_exact(&mut req).is_ok() && s.write_all(&[b'r'; REQUEST]).is_ok() {
                // The client closes first (its TIME_WAIT, which its port
                // allocator knows about, not a server TIME_WAIT that a
                // reused client port would run into with a 1 s SYN retry).
                let _ = s.read(&mut req);
            }
        });
    }
    Ok(())
}

/// How long a transfer may make no progress before it counts as stalled
/// (gVisor 20240729 stalls forwarded bulk TCP; see docs/gvisor-quirks.md).
pub(crate) const STALL: Duration = Duration::from_secs(5);

/// Wait until `s` is ready for `events`, at most STALL.
fn ready(s: &TcpStream, events: PollFlags) -> Result<(), String> {
    let mut fds = [PollFd::new(s.as_fd(), events)];
    let ms = u16::try_from(STALL.as_millis()).unwrap_or(u16::MAX);
    match poll(&mut fds, PollTimeout::from(ms)) {
        Ok(0) => Err("stalled".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("poll: {e}")),
    }
}

/// Bulk send for `secs`; Gbit/s the server confirmed. A stall is reported
/// with how far the stream got (non-blocking I/O: SO_SNDTIMEO does not
/// always fire in gVisor).
pub(crate) fn throughput(secs: f64) -> Result<f64, String> {
    let mut s = TcpStream::connect((SERVER, SINK_PORT)).map_err(|e| format!("connect: {e}"))?;
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    let buf = vec![0x5au8; 256 * 1024];
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let mut sent: u64 = 0;
    let stalled = |sent: u64| format!("stalled after {:.1} MB", sent as f64 / 1e6);
    while Instant::now() < end {
        match s.write(&buf) {
            Ok(n) => sent += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                ready(&s, PollFlags::POLLOUT).map_err(|_| stalled(sent))?
            }
            Err(e) => return Err(format!("send: {e}")),
        }
    }
    s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
    let mut count = [0u8; 8];
    let mut got = 0;
    while got < 8 {
        match s.read(&mut count[got..]) {
            Ok(0) => return Err("server closed without its count".into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                ready(&s, PollFlags::POLLIN).map_err(|_| stalled(sent))?
            }
            Err(e) => return Err(format!("server's count: {e}")),
        }
    }
    let bytes = u64::from_be_bytes(count);
    Ok(bytes as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e9)
}

/// Blocking I/O with a limit, for the short request/response exchanges.
fn guard(s: &TcpStream) -> Result<(), String> {
    s.set_read_timeout(Some(STALL)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(STALL)).map_err(|e| e.to_string())
}

/// Sequential connect + request + answer + close for `secs`.
pub(crate) fn rate(secs: f64) -> Result<(f64, Vec<Duration>), String> {
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let mut lat = Vec::new();
    while Instant::now() < end {
        let t = Instant::now();
        let mut s = TcpStream::connect((SERVER, RR_PORT)).map_err(|e| format!("connect: {e}"))?;
        guard(&s)?;
        s.write_all(&[b'q'; REQUEST]).map_err(|e| e.to_string())?;
        let mut answer = [0u8; REQUEST];
        s.read_exact(&mut answer)
            .map_err(|e| format!("answer: {e}"))?;
        drop(s);
        lat.push(t.elapsed());
    }
    Ok((lat.len() as f64 / start.elapsed().as_secs_f64(), lat))
}

/// Run a client closure in a namespace (None: here, the sandbox) on a
/// thread of its own, and give up on it after `limit`: a stuck system call
/// (seen in gVisor's forwarding path) must not hang the benchmark. A thread
/// given up on stays blocked until the process exits.
pub(crate) fn client<T: Send + 'static>(
    ns: Option<&Netns>,
    limit: Duration,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let ns = match ns {
        Some(ns) => Some(ns.try_clone().map_err(|e| e.to_string())?),
        None => None,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = match ns {
            Some(ns) => ns.run(f).map_err(|e| e.to_string()).and_then(|r| r),
            None => f(),
        };
        let _ = tx.send(r);
    });
    rx.recv_timeout(limit)
        .map_err(|_| format!("no result within {limit:?} (a system call is stuck)"))?
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

pub(crate) fn pct(lat: &mut [Duration], q: f64) -> f64 {
    lat.sort();
    if lat.is_empty() {
        return f64::NAN;
    }
    lat[((lat.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1e6
}
