//! The egress policy's pieces for the `policy` suite
//! (vm-tests/policy/run.sh): the policy store (the same code the API
//! calls), the agent's backends with the policy applied (the `nat`
//! backend's kernel rules), the proxy engine and a DNS engine deciding
//! with it, and a tiny DNS server for the stand-in internet.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use conductor_dns::proto::op::{Message, MessageType, ResponseCode};
use conductor_dns::proto::rr::{RData, Record, RecordType};
use conductor_egress::{Engine, EngineConfig};
use conductor_netd::egress::choose::{build, AnyBackend, Choice};
use conductor_netd::egress::firewall::{Firewall, Tool};
use conductor_netd::egress::nat::NatMode;
use conductor_netd::egress::proxy::ProxyPorts;
use conductor_netd::egress::runner::ProcessRunner;
use conductor_netd::egress::stack::NamespaceStack;
use conductor_netd::egress::{BackendKind, EgressBackend, NetworkEgress};
use conductor_netd::policy::{DnsPolicy, EgressPolicy, Policies, PolicySpec, Preset};

#[derive(Parser)]
#[command(about = "Egress policy pieces for the policy suite (root)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct Net {
    /// The network's name (its policy's key).
    #[arg(long)]
    network: String,
    #[arg(long)]
    bridge: String,
    #[arg(long)]
    subnet4: String,
    #[arg(long)]
    gateway4: String,
    #[arg(long)]
    subnet6: Option<String>,
    #[arg(long)]
    gateway6: Option<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Change a network's policy in the store, as the API does.
    Set {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "open")]
        preset: String,
        network: String,
        rules: Vec<String>,
    },
    /// Append rules, as the API does.
    Add {
        #[arg(long)]
        dir: PathBuf,
        network: String,
        rules: Vec<String>,
    },
    /// Enable a backend for the network, with its policy (nat: in the kernel).
    Apply {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        backend: String,
        #[arg(long, default_value = "legacy")]
        tool: String,
        #[arg(long, default_value = "masquerade")]
        nat_mode: String,
        #[command(flatten)]
        net: Net,
    },
    /// Remove every rule and chain of ours.
    RemoveAll {
        #[arg(long, default_value = "legacy")]
        tool: String,
    },
    /// The proxy engine (transparent and explicit) and a DNS engine on
    /// `--dns`, deciding with the store's policies; SIGHUP re-reads the
    /// store, SIGUSR1 prints the network's counters as JSON.
    Serve {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        transparent: Vec<SocketAddr>,
        #[arg(long)]
        explicit: Vec<SocketAddr>,
        #[arg(long)]
        dns: Option<SocketAddr>,
        #[arg(long)]
        upstream: Vec<SocketAddr>,
        #[command(flatten)]
        net: Net,
    },
    /// Answer every A query with `--a` and AAAA with `--aaaa`.
    DnsAnswer {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        a: std::net::Ipv4Addr,
        #[arg(long)]
        aaaa: std::net::Ipv6Addr,
    },
}

fn network(n: &Net) -> Result<NetworkEgress, String> {
    let bad = |what: &str, v: &str| format!("bad {what} {v:?}");
    Ok(NetworkEgress {
        name: n.network.clone(),
        bridge: n.bridge.clone(),
        subnet4: n.subnet4.parse().map_err(|_| bad("subnet4", &n.subnet4))?,
        gateway4: n
            .gateway4
            .parse()
            .map_err(|_| bad("gateway4", &n.gateway4))?,
        subnet6: n
            .subnet6
            .as_deref()
            .map(|s| s.parse().map_err(|_| bad("subnet6", s)))
            .transpose()?,
        gateway6: n
            .gateway6
            .as_deref()
            .map(|s| s.parse().map_err(|_| bad("gateway6", s)))
            .transpose()?,
        dns: None,
    })
}

fn tool(t: &str) -> Result<Tool, String> {
    match t {
        "legacy" => Ok(Tool::Legacy),
        "nft" => Ok(Tool::Nft),
        other => Err(format!("unknown tool {other:?}")),
    }
}

fn store(dir: &PathBuf) -> Result<Arc<Policies>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Policies::open(dir).map(Arc::new).map_err(|e| e.to_string())
}

async fn run(cmd: Cmd) -> Result<(), String> {
    match cmd {
        Cmd::Set {
            dir,
            preset,
            network,
            rules,
        } => {
            let preset: Preset = preset.parse()?;
            let v = store(&dir)?
                .set(&network, PolicySpec { preset, rules })
                .await
                .map_err(|e| e.to_string())?;
            println!("{}", serde_json::to_string(&v).unwrap_or_default());
            Ok(())
        }
        Cmd::Add {
            dir,
            network,
            rules,
        } => {
            let v = store(&dir)?
                .add(&network, &rules)
                .await
                .map_err(|e| e.to_string())?;
            println!("{}", serde_json::to_string(&v).unwrap_or_default());
            Ok(())
        }
        Cmd::Apply {
            dir,
            backend,
            tool: t,
            nat_mode,
            net,
        } => {
            let kind: BackendKind = backend.parse().map_err(|e| format!("{e}"))?;
            let fw = Firewall::new(ProcessRunner::default(), tool(&t)?, true);
            let choice = Choice {
                kind,
                tool: fw.tool(),
                nat_mode: Some(match nat_mode.as_str() {
                    "snat" => NatMode::Snat,
                    _ => NatMode::Masquerade { conntrack: true },
                }),
                explicit_proxy: false,
                reason: "policy-harness".into(),
            };
            let ports = ProxyPorts {
                v4: 15001,
                v6: Some(15002),
            };
            let b = build(&choice, Arc::new(fw), Arc::new(NamespaceStack), ports)
                .map_err(|e| e.to_string())?;
            if let AnyBackend::Nat(nat) = &b {
                nat.set_policy_source(store(&dir)?);
            }
            b.enable(&network(&net)?).await.map_err(|e| e.to_string())?;
            println!("{}: {}", b.kind(), b.describe().detail);
            Ok(())
        }
        Cmd::RemoveAll { tool: t } => Firewall::new(ProcessRunner::default(), tool(&t)?, true)
            .remove_all()
            .await
            .map_err(|e| e.to_string()),
        Cmd::Serve {
            dir,
            transparent,
            explicit,
            dns,
            upstream,
            net,
        } => serve(dir, transparent, explicit, dns, upstream, net).await,
        Cmd::DnsAnswer { listen, a, aaaa } => dns_answer(listen, a, aaaa),
    }
}

async fn serve(
    dir: PathBuf,
    transparent: Vec<SocketAddr>,
    explicit: Vec<SocketAddr>,
    dns: Option<SocketAddr>,
    upstream: Vec<SocketAddr>,
    net: Net,
) -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let policies = store(&dir)?;
    let spec = network(&net)?;
    policies.register_network(
        &net.network,
        &conductor_netd::policy::subnets(spec.subnet4, spec.subnet6),
    );
    let config = EngineConfig {
        connect_timeout: Duration::from_secs(3),
        ..EngineConfig::default()
    };
    let engine = Engine::new(config, Arc::new(EgressPolicy(policies.clone())));
    let mut tasks = tokio::task::JoinSet::new();
    for (addr, is_transparent) in transparent
        .iter()
        .map(|a| (*a, true))
        .chain(explicit.iter().map(|a| (*a, false)))
    {
        let listener = bind(addr)?;
        let e = engine.clone();
        tasks.spawn(async move {
            if is_transparent {
                e.serve_transparent(listener, None).await
            } else {
                e.serve_explicit(listener, None).await
            }
        });
    }
    let _dns = match dns {
        Some(addr) => {
            let engine = conductor_dns::Engine::new(conductor_dns::EngineConfig {
                upstreams: upstream,
                ..conductor_dns::EngineConfig::default()
            })
            .map_err(|e| format!("DNS engine: {e}"))?;
            let sockets = conductor_dns::ListenerSockets::bind(
                addr,
                conductor_dns::BindOptions {
                    freebind: true,
                    udp_only: false,
                },
            )
            .map_err(|e| format!("DNS listener {addr}: {e}"))?;
            let scopes = conductor_dns::ClientScopes::new([]).with_policy(Arc::new(DnsPolicy {
                policies: policies.clone(),
                network: net.network.clone(),
            }));
            let l = engine
                .add_namespace_listener(sockets, Some(scopes), None)
                .map_err(|e| format!("DNS listener: {e}"))?;
            Some((engine, l))
        }
        None => None,
    };
    let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    let mut usr1 = signal(SignalKind::user_defined1()).map_err(|e| e.to_string())?;
    println!("serving");
    loop {
        tokio::select! {
            _ = hup.recv() => match policies.reload() {
                Ok(()) => println!("reloaded"),
                Err(e) => eprintln!("policy-harness: reload: {e}"),
            },
            _ = usr1.recv() => {
                let v = policies.view(&net.network).map_err(|e| e.to_string())?;
                println!("{}", serde_json::to_string(&v.stats).unwrap_or_default());
            }
            _ = tasks.join_next() => return Ok(()),
        }
    }
}

fn dns_answer(
    listen: SocketAddr,
    a: std::net::Ipv4Addr,
    aaaa: std::net::Ipv6Addr,
) -> Result<(), String> {
    let sock = UdpSocket::bind(listen).map_err(|e| format!("bind {listen}: {e}"))?;
    println!("serving");
    let mut buf = [0u8; 1500];
    loop {
        let (n, from) = sock.recv_from(&mut buf).map_err(|e| e.to_string())?;
        let Ok(q) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        let mut r = Message::new(q.metadata.id, MessageType::Response, q.metadata.op_code);
        r.metadata.recursion_desired = q.metadata.recursion_desired;
        r.metadata.recursion_available = true;
        r.metadata.response_code = ResponseCode::NoError;
        for query in &q.queries {
            r.add_query(query.clone());
            let data = match query.query_type() {
                RecordType::A => Some(RData::A(a.into())),
                RecordType::AAAA => Some(RData::AAAA(aaaa.into())),
                _ => None,
            };
            if let Some(d) = data {
                r.add_answer(Record::from_rdata(query.name().clone(), 60, d));
            }
        }
        if let Ok(bytes) = r.to_vec() {
            let _ = sock.send_to(&bytes, from);
        }
    }
}

/// A listener; IPv6 ones are v6-only (IPv4 gets its own).
fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(|e| e.to_string())?;
    if addr.is_ipv6() {
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::Ipv6V6Only, &true)
            .map_err(|e| format!("IPV6_V6ONLY on {addr}: {e}"))?;
    }
    sock.set_reuseaddr(true).map_err(|e| e.to_string())?;
    sock.bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    sock.listen(1024).map_err(|e| format!("listen {addr}: {e}"))
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("POLICY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("policy-harness: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(cli.cmd)) {
        eprintln!("policy-harness: {e}");
        std::process::exit(1);
    }
}
