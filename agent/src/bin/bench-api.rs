//! bench-api: attach/detach through conductor-netd's API, with figures.
//!
//! Runs as root. Everything happens in throwaway named namespaces
//! (`cndb-PID-*`): the daemon is started inside `cndb-PID-host` (so its
//! bridge and veths never touch the machine's namespace), with a temporary
//! state directory and socket; targets are `cndb-PID-tN`. Measures:
//! - the bare `netns` crate (`netns::create_endpoint`, in this process) for
//!   comparison;
//! - API attach and detach, sequential and with C concurrent clients, and
//!   an idempotent re-attach (the API's own cost, no kernel work);
//! - the daemon's RSS idle and with N endpoints.
//!
//! `bench-api [--endpoints 1000] [--concurrency 32] [--bin PATH]
//! [--config-line 'fsync_endpoints = true']... [--json]`
//! (inside gVisor: `--endpoints 200`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conductor_netd::api::types::{AttachRequest, CreateNetwork, DetachRequest};
use conductor_netd::api::Client;
use netns::{EndpointSpec, Handle, Netns, ScratchNamespaces};

struct Opts {
    endpoints: usize,
    concurrency: usize,
    bin: PathBuf,
    json: bool,
    skip_bare: bool,
    /// Written into the daemon's config file (e.g. `fsync_endpoints = true`).
    config: String,
}

fn usage() -> ! {
    eprintln!(
        "usage: bench-api [--endpoints N] [--concurrency C] [--bin PATH] [--skip-bare] [--config-line TOML]... [--json]"
    );
    std::process::exit(2)
}

fn parse() -> Opts {
    let mut o = Opts {
        endpoints: 1000,
        concurrency: 32,
        bin: std::env::var_os("CONDUCTOR_NETD_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                std::env::current_exe()
                    .ok()
                    .and_then(|p| p.parent().map(|d| d.join("conductor-netd")))
                    .unwrap_or_else(|| PathBuf::from("conductor-netd"))
            }),
        json: false,
        skip_bare: false,
        config: String::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--endpoints" => {
                o.endpoints = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--concurrency" => {
                o.concurrency = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--bin" => o.bin = args.next().map(PathBuf::from).unwrap_or_else(|| usage()),
            "--json" => o.json = true,
            "--skip-bare" => o.skip_bare = true,
            "--config-line" => {
                let line = args.next().unwrap_or_else(|| usage());
                o.config.push_str(&line);
                o.config.push('\n');
            }
            _ => usage(),
        }
    }
    if o.endpoints == 0 || o.endpoints > 4000 || o.concurrency == 0 {
        usage();
    }
    o
}

/// Latencies of one phase.
#[derive(Debug, Clone, serde::Serialize)]
struct Phase {
    name: String,
    count: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    total_s: f64,
}

fn phase(name: &str, mut lat: Vec<Duration>, total: Duration) -> Phase {
    lat.sort();
    let pick = |q: f64| {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((lat.len() as f64 * q).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i].as_secs_f64() * 1e3
    };
    Phase {
        name: name.to_string(),
        count: lat.len(),
        p50_ms: pick(0.50),
        p99_ms: pick(0.99),
        max_ms: lat.last().map(|d| d.as_secs_f64() * 1e3).unwrap_or(0.0),
        total_s: total.as_secs_f64(),
    }
}

struct Daemon(Option<Child>);

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().to_string()))
        })
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn die(msg: String) -> ! {
    eprintln!("bench-api: {msg}");
    std::process::exit(1)
}

fn main() {
    let o = parse();
    let platform = conductor_netd::platform::detect();
    let base = format!("cndb-{}", std::process::id());
    let mut spaces = ScratchNamespaces::new(&base);
    let mut make = |name: String| -> Netns {
        let suffix = name
            .strip_prefix(&format!("{base}-"))
            .unwrap_or(&name)
            .to_string();
        spaces
            .create(&suffix)
            .unwrap_or_else(|e| die(format!("create {name}: {e}")))
    };
    let started = Instant::now();
    let host = make(format!("{base}-host"));
    let bare_host = make(format!("{base}-bare"));
    let targets: Vec<String> = (0..o.endpoints).map(|i| format!("{base}-t{i}")).collect();
    let bare_targets: Vec<String> = (0..o.endpoints).map(|i| format!("{base}-u{i}")).collect();
    let mut bare_ns = Vec::new();
    for t in &targets {
        drop(make(t.clone()));
    }
    if !o.skip_bare {
        for t in &bare_targets {
            bare_ns.push(make(t.clone()));
        }
    }
    println!(
        "setup: {} namespaces in {:.1} s",
        spaces.names().len(),
        started.elapsed().as_secs_f64()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| die(e.to_string()));
    let mut phases = Vec::new();

    // The bare netns crate, in this process, for comparison.
    if !o.skip_bare {
        let p = rt.block_on(async {
            let h = Handle::open(&bare_host).unwrap_or_else(|e| die(e.to_string()));
            let br = h
                .ensure_bridge("cndb-br", Some(1500))
                .await
                .unwrap_or_else(|e| die(e.to_string()));
            h.add_address(br.index, "10.201.0.1/20".parse().expect("constant"))
                .await
                .unwrap_or_else(|e| die(e.to_string()));
            let mut lat = Vec::new();
            let t0 = Instant::now();
            for (i, ns) in bare_ns.iter().enumerate() {
                let addr: ipnet::IpNet = format!("10.201.{}.{}/20", (i + 2) / 256, (i + 2) % 256)
                    .parse()
                    .expect("address");
                let name = format!("cb{i}");
                let t = Instant::now();
                netns::create_endpoint(
                    &h,
                    &EndpointSpec {
                        host_ifname: &name,
                        ifname: "eth0",
                        netns: ns,
                        bridge: br.index,
                        addresses: &[addr],
                        gateways: &["10.201.0.1".parse().expect("constant")],
                        mtu: Some(1500),
                        mac: None,
                    },
                )
                .await
                .unwrap_or_else(|e| die(format!("bare endpoint {i}: {e}")));
                lat.push(t.elapsed());
            }
            phase(
                "bare netns::create_endpoint (sequential)",
                lat,
                t0.elapsed(),
            )
        });
        phases.push(p);
        drop(bare_ns);
    }

    // The daemon, inside the host namespace.
    let dir = std::env::temp_dir().join(&base);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| die(e.to_string()));
    let socket = dir.join("netd.sock");
    let config = dir.join("config.toml");
    std::fs::write(&config, &o.config).unwrap_or_else(|e| die(e.to_string()));
    let child = host
        .run(|| {
            Command::new(&o.bin)
                .args(["serve", "--no-probe", "--log-level", "warn", "--socket"])
                .arg(&socket)
                .arg("--state-dir")
                .arg(dir.join("state"))
                .arg("--config")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
        })
        .unwrap_or_else(|e| die(e.to_string()))
        .unwrap_or_else(|e| die(format!("start {}: {e}", o.bin.display())));
    let pid = child.id();
    let daemon = Daemon(Some(child));
    let client = Client::new(&socket);
    let (rss_idle, rss_full, api_phases) = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while client.status().await.is_err() {
            if Instant::now() > deadline {
                die("the daemon did not come up".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        client
            .create_network(&CreateNetwork {
                name: "bench".into(),
                subnet: Some("10.200.0.0/20".into()),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| die(e.to_string()));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let rss_idle = rss_kib(pid);
        let mut out = Vec::new();
        let mut rss_full = 0;
        for (concurrency, wait) in [(1, true), (1, false), (o.concurrency, true)] {
            let label = if concurrency == 1 {
                "sequential".to_string()
            } else {
                format!("{concurrency} concurrent clients")
            };
            let (lat, total) = run_clients(&client, &targets, concurrency, Op::Attach).await;
            out.push(phase(&format!("API attach ({label})"), lat, total));
            rss_full = rss_full.max(rss_kib(pid));
            if concurrency == 1 && wait {
                // The same requests again: answered from the daemon's
                // records, so this is the API's own cost (HTTP, JSON,
                // opening the target) without the kernel's.
                let (lat, total) = run_clients(&client, &targets, 1, Op::Attach).await;
                out.push(phase(
                    "API attach again (idempotent, no kernel)",
                    lat,
                    total,
                ));
            }
            let t0 = Instant::now();
            let (lat, total) =
                run_clients(&client, &targets, concurrency, Op::Detach { wait }).await;
            let how = if wait { "" } else { ", --no-wait" };
            out.push(phase(&format!("API detach ({label}{how})"), lat, total));
            if !wait {
                // Until the background deletions are done.
                loop {
                    let left = client
                        .network_endpoints("bench")
                        .await
                        .unwrap_or_else(|e| die(e.to_string()));
                    if left.is_empty() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                out.push(phase(
                    "  ... background deletions complete",
                    vec![],
                    t0.elapsed(),
                ));
            }
        }
        (rss_idle, rss_full, out)
    });
    phases.extend(api_phases);
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
    drop(host);
    drop(bare_host);
    drop(spaces);

    if o.json {
        let v = serde_json::json!({
            "platform": platform.kind,
            "endpoints": o.endpoints,
            "concurrency": o.concurrency,
            "phases": phases,
            "rss_idle_kib": rss_idle,
            "rss_with_endpoints_kib": rss_full,
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return;
    }
    println!(
        "conductor-netd API benchmark: {} endpoints on one network, {} ({} CPUs)",
        o.endpoints,
        platform.kind,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!(
        "{:<46} {:>9} {:>9} {:>9} {:>9}",
        "phase", "p50 ms", "p99 ms", "max ms", "total s"
    );
    for p in &phases {
        if p.count == 0 {
            println!(
                "{:<46} {:>9} {:>9} {:>9} {:>9.2}",
                p.name, "", "", "", p.total_s
            );
            continue;
        }
        println!(
            "{:<46} {:>9.3} {:>9.3} {:>9.1} {:>9.2}",
            p.name, p.p50_ms, p.p99_ms, p.max_ms, p.total_s
        );
    }
    println!(
        "daemon RSS: idle {:.1} MB, with {} endpoints {:.1} MB",
        rss_idle as f64 / 1024.0,
        o.endpoints,
        rss_full as f64 / 1024.0
    );
}

#[derive(Clone, Copy)]
enum Op {
    Attach,
    Detach { wait: bool },
}

/// Attach (or detach) every target through the API with `concurrency`
/// clients; latencies of every request and the total time.
async fn run_clients(
    client: &Client,
    targets: &[String],
    concurrency: usize,
    op: Op,
) -> (Vec<Duration>, Duration) {
    let next = Arc::new(AtomicUsize::new(0));
    let targets = Arc::new(targets.to_vec());
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let next = next.clone();
        let targets = targets.clone();
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(t) = targets.get(i) else { break };
                let start = Instant::now();
                let r = if let Op::Attach = op {
                    let req = AttachRequest {
                        netns: Some(t.clone()),
                        ..Default::default()
                    };
                    client.attach("bench", &req).await.map(drop)
                } else {
                    let req = DetachRequest {
                        netns: Some(t.clone()),
                        wait: match op {
                            Op::Detach { wait: false } => Some(false),
                            _ => None,
                        },
                        ..Default::default()
                    };
                    client.detach("bench", &req).await.map(drop)
                };
                if let Err(e) = r {
                    let what = match op {
                        Op::Attach => "attach",
                        Op::Detach { .. } => "detach",
                    };
                    die(format!("{what} {t}: {e}"));
                }
                lat.push(start.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    (all, t0.elapsed())
}
