//! bench-dns: the engine against dnsmasq, same names, same stub upstream,
//! same load generator, same run. Loopback only, no privileges needed.
//! See engines/dns/README.md for the command and the figures.

mod dnsmasq;
mod load;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use conductor_dns::stub::StubUpstream;
use conductor_dns::{
    ClientScopes, EndpointRecord, Engine, EngineConfig, Limits, ListenerSockets, NamespaceListener,
    ScopeId, DOCKER_TTL,
};

use load::{Figures, Names};

#[derive(Parser)]
#[command(about = "DNS engine vs dnsmasq: qps and latency on loopback, and the engine's memory")]
struct Args {
    /// Concurrent clients (closed loop, one query in flight each).
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Measured seconds per server per round.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Rounds; the servers take turns in each, and each row shows the
    /// median round (the machine's other load drifts; turns share it).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Unmeasured warm-up seconds per row.
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
    /// Container names in the table (and in dnsmasq's hosts file).
    #[arg(long, default_value_t = 1000)]
    names: usize,
    /// Namespace listeners for the memory figure.
    #[arg(long, default_value_t = 1000)]
    listeners: usize,
    /// dnsmasq binary (Debian package dnsmasq-base).
    #[arg(long, default_value = "/usr/sbin/dnsmasq")]
    dnsmasq: PathBuf,
    /// LD_PRELOAD for dnsmasq only: inside gVisor dnsmasq needs
    /// conductor-net's preload (it subscribes to netlink route events,
    /// which the sandbox refuses).
    #[arg(long)]
    dnsmasq_preload: Option<PathBuf>,
    /// Only the rows whose query kind contains this text.
    #[arg(long)]
    only: Option<String>,
    /// Skip the memory figure.
    #[arg(long)]
    no_rss: bool,
    /// Threads the engine serves on.
    #[arg(long, default_value_t = 1)]
    engine_threads: usize,
}

fn container_names(n: usize) -> Vec<(String, Ipv4Addr)> {
    (0..n)
        .map(|i| {
            let i = i as u32 + 1;
            (
                format!("c{}", i - 1),
                Ipv4Addr::new(10, 88, (i >> 8) as u8, i as u8),
            )
        })
        .collect()
}

fn fill(engine: &Engine, scope: &ScopeId, names: &[(String, Ipv4Addr)]) {
    for (name, addr) in names {
        let record = EndpointRecord {
            name: name.clone(),
            aliases: vec![],
            ipv4: vec![*addr],
            ipv6: vec![],
        };
        engine
            .records()
            .upsert_endpoint(scope, name, &record)
            .expect("bench names are valid");
    }
}

fn loopback_sockets() -> ListenerSockets {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        let port = udp.local_addr().expect("UDP address").port();
        if let Ok(tcp) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return ListenerSockets {
                udp,
                tcp: Some(tcp),
            };
        }
    }
}

fn self_rss_kb() -> u64 {
    dnsmasq::rss_kb("self").unwrap_or(0)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// 1,000 listeners need 2,000 descriptors: raise the soft limit to the hard one.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

fn micros(d: Duration) -> String {
    format!("{:.0} us", d.as_secs_f64() * 1e6)
}

fn row(scenario: &str, server: &str, f: &Figures) {
    println!(
        "{scenario:<28} {server:<30} {:>9.0} {:>9} {:>9} {:>6}",
        f.qps,
        micros(f.p50),
        micros(f.p99),
        f.lost
    );
}

fn memory(
    runtime: &tokio::runtime::Runtime,
    args: &Args,
    names: &[(String, Ipv4Addr)],
    upstream: SocketAddr,
) {
    let before = self_rss_kb();
    let fds_before = open_fds();
    let engine = Engine::new(EngineConfig {
        upstreams: vec![upstream],
        ..EngineConfig::default()
    })
    .expect("engine");
    let scope = ScopeId::new("memory").expect("scope id");
    fill(&engine, &scope, names);
    let with_names = self_rss_kb();
    let listeners: Vec<NamespaceListener> = (0..args.listeners)
        .map(|_| {
            engine
                .add_namespace_listener(
                    loopback_sockets(),
                    Some(ClientScopes::new([scope.clone()])),
                    None,
                )
                .expect("listener")
        })
        .collect();
    // One query each, so every listener's task has run and holds its buffer.
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").expect("probe socket");
    probe
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut buf = [0u8; 512];
    let mut answered = 0;
    for (i, l) in listeners.iter().enumerate() {
        let query = load::query(i as u16, &format!("c{}.", i % names.len().max(1)));
        if probe.send_to(&query, l.local_addr()).is_ok() && probe.recv(&mut buf).is_ok() {
            answered += 1;
        }
    }
    let with_listeners = self_rss_kb();
    let kb = |k: u64| format!("{:.1} MiB", k as f64 / 1024.0);
    println!("\nMemory (RSS of this process; the load generator is idle):");
    println!(
        "  {} names in one scope:            +{}",
        names.len(),
        kb(with_names.saturating_sub(before))
    );
    println!(
        "  {} namespace listeners (UDP+TCP): +{} ({:.1} KiB each; {answered} answered a query)",
        listeners.len(),
        kb(with_listeners.saturating_sub(with_names)),
        with_listeners.saturating_sub(with_names) as f64 / listeners.len().max(1) as f64
    );
    println!("  process total:                    {}", kb(with_listeners));
    let started = Instant::now();
    runtime.block_on(async {
        for l in listeners {
            l.close().await;
        }
    });
    let closing = started.elapsed();
    // The engine's own thread and its runtime's descriptors go with it.
    drop(engine);
    std::thread::sleep(Duration::from_millis(100));
    println!(
        "  closing them all: {:.1} ms; after dropping the engine, descriptors {} (before it: {})",
        closing.as_secs_f64() * 1e3,
        open_fds(),
        fds_before
    );
}

fn main() {
    let args = Args::parse();
    raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let stub = runtime
        .block_on(StubUpstream::start(
            "fwd.test",
            &[("www", Ipv4Addr::new(192, 0, 2, 10))],
        ))
        .expect("stub upstream");
    let names = container_names(args.names);
    if !args.no_rss {
        memory(&runtime, &args, &names, stub.addr());
    }

    let engine = Engine::new(EngineConfig {
        upstreams: vec![stub.addr()],
        threads: args.engine_threads,
        ..EngineConfig::default()
    })
    .expect("engine");
    let scope = ScopeId::new("bench").expect("scope id");
    fill(&engine, &scope, &names);
    let scopes = ClientScopes::new([scope.clone()]);
    let (namespace, shared) = {
        // Rate limits off: this measures capacity, not policy.
        let namespace = engine
            .add_namespace_listener(
                loopback_sockets(),
                Some(scopes.clone()),
                Some(Limits::unlimited_rate()),
            )
            .expect("namespace listener");
        let shared_limits = Limits {
            udp_batch: Limits::shared().udp_batch,
            udp_recv_buffer: Limits::shared().udp_recv_buffer,
            ..Limits::unlimited_rate()
        };
        let shared = engine
            .add_shared_listener(loopback_sockets(), Some(shared_limits))
            .expect("shared listener");
        shared.set_client(IpAddr::V4(Ipv4Addr::LOCALHOST), scopes);
        (namespace, shared)
    };
    let dnsmasq = match dnsmasq::Dnsmasq::start(
        &args.dnsmasq,
        args.dnsmasq_preload.as_deref(),
        &names,
        DOCKER_TTL,
        stub.addr(),
    ) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("bench-dns: no dnsmasq row: {e}");
            None
        }
    };

    let mut servers = vec![
        ("engine, namespace listener", namespace.local_addr()),
        ("engine, shared listener", shared.local_addr()),
    ];
    if let Some(d) = &dnsmasq {
        servers.push(("dnsmasq 2.90", d.addr));
    }
    let (warmup, measure) = (
        Duration::from_secs_f64(args.warmup),
        Duration::from_secs_f64(args.seconds),
    );
    println!(
        "\nLoad: {} closed-loop UDP clients, {} rounds of {:.1} s per server (median round shown), {} names; stub upstream {}",
        args.clients,
        args.rounds,
        args.seconds,
        args.names,
        stub.addr()
    );
    println!(
        "{:<28} {:<30} {:>9} {:>9} {:>9} {:>6}",
        "query", "server", "qps", "p50", "p99", "lost"
    );
    let scenarios = [
        ("container name", Names::Containers(args.names)),
        ("forwarded, cached", Names::Fixed("www.fwd.test.")),
        ("forwarded, cold miss", Names::Unique),
    ];
    let mut ratios = Vec::new();
    for (scenario, names) in scenarios {
        if args
            .only
            .as_ref()
            .is_some_and(|only| !scenario.contains(only.as_str()))
        {
            continue;
        }
        let mut rounds: Vec<Vec<Figures>> = servers.iter().map(|_| Vec::new()).collect();
        for _ in 0..args.rounds.max(1) {
            for (i, (_, addr)) in servers.iter().enumerate() {
                rounds[i].push(load::run(*addr, names, args.clients, warmup, measure));
            }
        }
        let medians: Vec<Figures> = rounds.into_iter().map(load::median).collect();
        for ((server, _), f) in servers.iter().zip(&medians) {
            row(scenario, server, f);
        }
        if medians.len() == 3 {
            ratios.push((
                scenario,
                medians[0].qps / medians[2].qps,
                medians[1].qps / medians[2].qps,
            ));
        }
    }
    if !ratios.is_empty() {
        println!("\nqps ratio engine / dnsmasq (namespace listener, shared listener):");
        for (scenario, ns, sh) in ratios {
            println!("  {scenario:<26} {ns:.2}  {sh:.2}");
        }
    }
    if let Some(d) = &dnsmasq {
        println!(
            "\nRSS after the runs: dnsmasq {} KiB; this process (engine, stub, load generator) {} KiB",
            dnsmasq::rss_kb(&d.pid().to_string()).unwrap_or(0),
            self_rss_kb()
        );
    }
    println!("stub upstream answered {} queries", stub.queries());
    println!("engine, namespace listener: {:?}", namespace.stats());
    println!("engine, shared listener: {:?}", shared.stats());
    drop(dnsmasq);
    runtime.block_on(async {
        namespace.close().await;
        shared.close().await;
        stub.stop().await;
    });
}
