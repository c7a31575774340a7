//! Egress throughput and connection rate, three ways in one run: from a
//! container namespace through the `proxy` backend (REDIRECT + the
//! conductor-egress engine, splice and buffered copy), through the `nat`
//! backend (MASQUERADE on the kernel, SNAT inside gVisor), and directly from
//! the sandbox namespace (no container, no translation) - to a server in an
//! "internet" namespace (vm-tests/egress/topology.sh).
//!
//! Throughput: one TCP stream, bulk, `--seconds`; the figure counts bytes the
//! server confirmed. Rate: sequential connect + 100-byte request + 100-byte
//! answer + close, `--rate-seconds`, with per-connection latency. Phases
//! alternate for `--rounds` rounds and the medians are printed, with the
//! ratios against nat.
//!
//! Inside gVisor 20240729 forwarded TCP (nat) stalls and then wedges the
//! uplink for every later connection (docs/gvisor-quirks.md), so there the
//! nat phase runs in a sandbox of its own, after the others; a stuck client
//! is given up on after a limit and reported.
//!
//! Runs on the real kernel in a private network + mount namespace, and
//! inside gVisor (`runsc do`); nothing is left on the machine.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use conductor_egress::{CopyMode, Engine, EngineConfig};
use conductor_netd::egress::firewall::{Firewall, Tool};
use conductor_netd::egress::nat::{NatBackend, NatMode};
use conductor_netd::egress::proxy::{ProxyBackend, ProxyPorts};
use conductor_netd::egress::runner::ProcessRunner;
use conductor_netd::egress::stack::NamespaceStack;
use conductor_netd::egress::{EgressBackend, NetworkEgress};
use netns::Netns;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use vm_tests::isolation;

#[derive(Parser, Clone)]
#[command(about = "Egress: proxy vs nat vs direct, throughput and connection rate (root)")]
struct Args {
    /// kernel, gvisor or all
    #[arg(long, default_value = "all")]
    env: String,
    /// Seconds per throughput sample.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Seconds per connection-rate sample.
    #[arg(long, default_value_t = 2.0)]
    rate_seconds: f64,
    /// Rounds (phases alternate within a round; medians are reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// The engine's runtime: `multi` (the process's two-worker runtime, as
    /// in the daemon) or `current` (one thread of its own).
    #[arg(long, default_value = "multi")]
    engine_runtime: String,
    #[arg(long, hide = true)]
    inner: Option<String>,
    /// Phases for an inner run (nat, splice, buffered, direct).
    #[arg(
        long,
        hide = true,
        value_delimiter = ',',
        default_value = "splice,buffered,direct,nat"
    )]
    phases: Vec<String>,
}

const SERVER: &str = "198.51.100.10";
const SINK_PORT: u16 = 5001;
const RR_PORT: u16 = 5002;
const SPLICE_PORT: u16 = 15001;
const BUFFERED_PORT: u16 = 15003;
const REQUEST: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Nat,
    Splice,
    Buffered,
    Direct,
}

impl Phase {
    const ALL: [Phase; 4] = [Phase::Nat, Phase::Splice, Phase::Buffered, Phase::Direct];

    fn key(self) -> &'static str {
        match self {
            Phase::Nat => "nat",
            Phase::Splice => "splice",
            Phase::Buffered => "buffered",
            Phase::Direct => "direct",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Phase::Nat => "nat",
            Phase::Splice => "proxy (splice)",
            Phase::Buffered => "proxy (buffered copy)",
            Phase::Direct => "direct from the sandbox",
        }
    }

    fn parse(s: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.key() == s)
    }
}

/// One phase's figures, as an inner run reports them.
#[derive(Debug, Clone, Default)]
struct Figures {
    gbps: Option<f64>,
    cps: Option<f64>,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
    failures: Vec<String>,
}

fn main() {
    let args = Args::parse();
    if let Some(env) = args.inner.clone() {
        if let Err(e) = run_inner(&env, &args) {
            println!("FAIL setup {e}");
            println!("DONE");
        }
        // Threads stuck in a wedged stack must not keep the process alive.
        std::process::exit(0);
    }
    let envs: Vec<&str> = match args.env.as_str() {
        "all" => vec!["kernel", "gvisor"],
        "kernel" => vec!["kernel"],
        "gvisor" => vec!["gvisor"],
        other => {
            eprintln!("bench-egress: unknown environment {other:?}");
            std::process::exit(2);
        }
    };
    let mut failed = false;
    for env in envs {
        println!(
            "== {env}: {} rounds, {}s bulk / {}s connection-rate samples ==",
            args.rounds, args.seconds, args.rate_seconds
        );
        // In gVisor nat gets a sandbox of its own, after the others.
        let others: Vec<&str> = args
            .phases
            .iter()
            .map(String::as_str)
            .filter(|p| *p != "nat")
            .collect();
        let with_nat = args.phases.iter().any(|p| p == "nat");
        let groups: Vec<String> = if env == "gvisor" {
            let mut g = vec![others.join(",")];
            if with_nat {
                g.push("nat".into());
            }
            g.retain(|g| !g.is_empty());
            g
        } else {
            vec![args.phases.join(",")]
        };
        let mut figures: Vec<(Phase, Figures)> = Vec::new();
        for group in &groups {
            match run_child(env, group, &args) {
                Ok(f) => figures.extend(f),
                Err(e) => {
                    println!("  {group}: {e}");
                    failed = true;
                }
            }
        }
        print_table(&figures);
    }
    if failed {
        std::process::exit(1);
    }
}

/// Run one group of phases in a child (kernel: a private namespace; gVisor:
/// its own sandbox), killed if it outlives its time.
fn run_child(env: &str, phases: &str, args: &Args) -> Result<Vec<(Phase, Figures)>, String> {
    use std::io::BufRead;
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let inner_args = [
        "--seconds".to_string(),
        args.seconds.to_string(),
        "--rate-seconds".to_string(),
        args.rate_seconds.to_string(),
        "--rounds".to_string(),
        args.rounds.to_string(),
        "--phases".to_string(),
        phases.to_string(),
        "--engine-runtime".to_string(),
        args.engine_runtime.clone(),
        "--inner".to_string(),
        env.to_string(),
    ];
    let root = std::env::temp_dir().join(format!("bench-egress-runsc-{}", std::process::id()));
    let mut cmd = if env == "kernel" {
        let mut c = Command::new(&me);
        c.args(&inner_args);
        c
    } else {
        let _ = std::fs::create_dir_all(&root);
        let mut c = Command::new("runsc");
        // runsc do keeps its bundle in TMPDIR; a sandbox killed because its
        // stack wedged cannot remove it, so it goes with our own folder.
        c.env("TMPDIR", &root).arg("--root")
            .arg(&root)
            .args(["--network=none", "--net-raw", "--platform=ptrace", "do"])
            .arg(&me)
            .args(&inner_args);
        c
    };
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("start: {e}"))?;
    let pid = child.id();
    let n = phases.split(',').count() as f64;
    let budget = Duration::from_secs_f64(
        args.rounds as f64 * n * (args.seconds + args.rate_seconds + 3.0 * STALL.as_secs_f64())
            + 120.0,
    );
    // A watchdog kills the child (ours, by pid) if it outlives its budget.
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(budget).is_err() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    });
    let mut figures: Vec<(Phase, Figures)> = Vec::new();
    if let Some(out) = child.stdout.take() {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["DONE"] => break,
                ["RESULT", phase, kind, values @ ..] => {
                    let Some(phase) = Phase::parse(phase) else {
                        continue;
                    };
                    let f = match figures.iter_mut().find(|(p, _)| *p == phase) {
                        Some((_, f)) => f,
                        None => {
                            figures.push((phase, Figures::default()));
                            &mut figures.last_mut().expect("just pushed").1
                        }
                    };
                    let v: Vec<f64> = values.iter().filter_map(|x| x.parse().ok()).collect();
                    match (*kind, v.as_slice()) {
                        ("bulk", [g]) => f.gbps = Some(*g),
                        ("rate", [c, p50, p99]) => {
                            f.cps = Some(*c);
                            f.p50_us = Some(*p50);
                            f.p99_us = Some(*p99);
                        }
                        _ => {}
                    }
                }
                ["FAIL", phase, rest @ ..] => {
                    let msg = rest.join(" ");
                    match Phase::parse(phase) {
                        Some(p) => match figures.iter_mut().find(|(q, _)| *q == p) {
                            Some((_, f)) => f.failures.push(msg),
                            None => figures.push((
                                p,
                                Figures {
                                    failures: vec![msg],
                                    ..Default::default()
                                },
                            )),
                        },
                        None => println!("  {phase}: {msg}"),
                    }
                }
                _ => println!("  {line}"),
            }
        }
    }
    // The inner run exits after DONE once its namespaces are gone; a wedged
    // sandbox may never: give it a few seconds.
    for _ in 0..100 {
        if matches!(child.try_wait(), Ok(Some(_))) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = child.wait();
    let _ = done_tx.send(());
    let _ = watchdog.join();
    let _ = std::fs::remove_dir_all(&root);
    Ok(figures)
}

fn print_table(figures: &[(Phase, Figures)]) {
    let get = |p: Phase| {
        figures
            .iter()
            .find(|(q, _)| *q == p)
            .map(|(_, f)| f.clone())
    };
    let nat = get(Phase::Nat).unwrap_or_default();
    let num =
        |v: Option<f64>, digits: usize| v.map_or("failed".to_string(), |v| format!("{v:.digits$}"));
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "n/a".to_string(),
    };
    println!(
        "{:<26} {:>9} {:>9} {:>9} {:>9}   vs nat: throughput, conn/s",
        "path", "Gbit/s", "conn/s", "p50 us", "p99 us"
    );
    for phase in Phase::ALL {
        let Some(f) = get(phase) else { continue };
        let versus = if phase == Phase::Nat {
            "-".to_string()
        } else {
            format!("{}, {}", ratio(f.gbps, nat.gbps), ratio(f.cps, nat.cps))
        };
        println!(
            "{:<26} {:>9} {:>9} {:>9} {:>9}   {}",
            phase.title(),
            num(f.gbps, 2),
            num(f.cps, 0),
            num(f.p50_us, 0),
            num(f.p99_us, 0),
            versus
        );
    }
    for (phase, f) in figures {
        for e in &f.failures {
            println!("  {}: {e}", phase.title());
        }
    }
}

/// The topology, removed on drop (with our firewall rules).
struct Topology {
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
    fn up(env: &str) -> Result<Topology, String> {
        let t = Topology {
            prefix: format!("bx{}", std::process::id() % 100_000),
            env: env.to_string(),
        };
        sh(&t.prefix, env, "topo_up")?;
        Ok(t)
    }

    fn ns(&self, suffix: &str) -> Result<Netns, String> {
        Netns::open(&format!("{}{suffix}", self.prefix)).map_err(|e| e.to_string())
    }

    fn network(&self) -> NetworkEgress {
        NetworkEgress {
            name: "bench".into(),
            bridge: format!("{}br", self.prefix),
            subnet4: "10.231.0.0/24".parse().expect("subnet"),
            gateway4: "10.231.0.1".parse().expect("gateway"),
            subnet6: None,
            gateway6: None,
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
fn start_servers(inet: &Netns) -> Result<(), String> {
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
const STALL: Duration = Duration::from_secs(5);

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
fn throughput(secs: f64) -> Result<f64, String> {
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
fn rate(secs: f64) -> Result<(f64, Vec<Duration>), String> {
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
fn client<T: Send + 'static>(
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

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

fn pct(lat: &mut [Duration], q: f64) -> f64 {
    lat.sort();
    if lat.is_empty() {
        return f64::NAN;
    }
    lat[((lat.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1e6
}

#[derive(Default)]
struct Samples {
    gbps: Vec<f64>,
    cps: Vec<f64>,
    lat: Vec<Duration>,
}

fn run_inner(env: &str, args: &Args) -> Result<(), String> {
    let phases: Vec<Phase> = args
        .phases
        .iter()
        .map(|p| Phase::parse(p).ok_or_else(|| format!("unknown phase {p:?}")))
        .collect::<Result<_, _>>()?;
    if env == "kernel" {
        isolation::enter_private_namespaces()?;
    }
    isolation::loopback_up()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let topo = Topology::up(env)?;
    let inet = topo.ns("i")?;
    let c1 = topo.ns("c1")?;
    start_servers(&inet)?;
    if env == "kernel" {
        // Clients close first: let them reuse their TIME_WAIT ports, as a
        // busy client would (gVisor has no such switch).
        for ns in [
            Netns::current().map_err(|e| e.to_string())?,
            c1.try_clone().map_err(|e| e.to_string())?,
        ] {
            netns::write_sysctl(&ns, "net.ipv4.tcp_tw_reuse", "1").map_err(|e| e.to_string())?;
        }
    }

    // The engine in the sandbox namespace: one splicing, one buffered.
    let mut listeners = Vec::new();
    for (port, mode) in [
        (SPLICE_PORT, CopyMode::Splice),
        (BUFFERED_PORT, CopyMode::Buffered),
    ] {
        let l = std::net::TcpListener::bind(("0.0.0.0", port))
            .map_err(|e| format!("bind proxy port {port}: {e}"))?;
        l.set_nonblocking(true).map_err(|e| e.to_string())?;
        listeners.push((l, mode));
    }
    let serve = |listeners: Vec<(std::net::TcpListener, CopyMode)>| async move {
        let mut set = tokio::task::JoinSet::new();
        for (l, mode) in listeners {
            let engine = Engine::allow_all(EngineConfig {
                copy_mode: mode,
                ..EngineConfig::default()
            });
            let l = tokio::net::TcpListener::from_std(l).expect("listener");
            set.spawn(async move { engine.serve_transparent(l, None).await });
        }
        set.join_all().await;
    };
    if args.engine_runtime == "multi" {
        let _guard = rt.enter();
        rt.spawn(serve(listeners));
    } else {
        std::thread::spawn(move || {
            let Ok(own) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            own.block_on(serve(listeners));
        });
    }

    let (tool, nat_mode) = if env == "kernel" {
        (Tool::Nft, NatMode::Masquerade { conntrack: true })
    } else {
        (Tool::Legacy, NatMode::Snat)
    };
    let fw = Arc::new(Firewall::new(ProcessRunner::default(), tool, false));
    let net = topo.network();
    let nat = NatBackend::new(fw.clone(), Arc::new(NamespaceStack), nat_mode);
    let proxy = |port| ProxyBackend::new(fw.clone(), ProxyPorts { v4: port, v6: None });
    let spliced = proxy(SPLICE_PORT).map_err(|e| e.to_string())?;
    let buffered = proxy(BUFFERED_PORT).map_err(|e| e.to_string())?;

    let secs = args.seconds;
    let rs = args.rate_seconds;
    let limit = Duration::from_secs_f64(secs.max(rs)) + STALL * 3;
    let mut samples: Vec<(Phase, Samples)> =
        phases.iter().map(|p| (*p, Samples::default())).collect();
    let mut stalled = false;
    let result = (|| -> Result<(), String> {
        for _ in 0..args.rounds {
            for (phase, s) in samples.iter_mut() {
                if stalled {
                    // A wedged stack may hang even the next rule change.
                    break;
                }
                let ns = match phase {
                    Phase::Nat => rt.block_on(nat.enable(&net)).map(|_| Some(&c1)),
                    Phase::Splice => rt.block_on(spliced.enable(&net)).map(|_| Some(&c1)),
                    Phase::Buffered => rt.block_on(buffered.enable(&net)).map(|_| Some(&c1)),
                    Phase::Direct => Ok(None),
                }
                .map_err(|e| e.to_string())?;
                eprintln!("  {} ...", phase.title());
                match client(ns, limit, move || rate(rs)) {
                    Ok((c, lat)) => {
                        let slow = lat
                            .iter()
                            .filter(|d| **d > Duration::from_millis(200))
                            .count();
                        if slow > 0 {
                            eprintln!("    {} connections over 200 ms of {}", slow, lat.len());
                        }
                        s.cps.push(c);
                        s.lat.extend(lat);
                    }
                    Err(e) => {
                        println!("FAIL {} connection rate: {e}", phase.key());
                        stalled = true;
                        continue;
                    }
                }
                match client(ns, limit, move || throughput(secs)) {
                    Ok(g) => s.gbps.push(g),
                    Err(e) => {
                        println!("FAIL {} bulk: {e}", phase.key());
                        stalled = true;
                    }
                }
            }
        }
        Ok(())
    })();
    if stalled {
        // Is the sandbox's own way out still usable after that?
        let after = client(None, limit, move || throughput(1.0))
            .map(|g| format!("{g:.2} Gbit/s"))
            .unwrap_or_else(|e| e);
        println!("after the failure, bulk from the sandbox itself: {after}");
    }
    result?;
    for (phase, s) in samples.iter_mut() {
        if !s.gbps.is_empty() {
            println!("RESULT {} bulk {:.3}", phase.key(), median(&s.gbps));
        }
        if !s.cps.is_empty() {
            println!(
                "RESULT {} rate {:.1} {:.1} {:.1}",
                phase.key(),
                median(&s.cps),
                pct(&mut s.lat, 0.50),
                pct(&mut s.lat, 0.99)
            );
        }
    }
    // Results are out; tearing down a wedged gVisor stack may never finish.
    println!("DONE");
    let _ = rt.block_on(fw.remove_all());
    Ok(())
}
