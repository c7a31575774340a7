//! The egress pieces driven from the `egress` suite (vm-tests/egress/run.sh)
//! until the daemon wires them: the agent's backends (apply / disable /
//! remove-all / describe, through the real iptables programs) and the
//! conductor-egress engine (serve), plus two tiny peers the suite needs
//! (an upstream proxy that accepts and never answers; a UDP echo that
//! reports the sender's address).

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use conductor_egress::{CopyMode, Decision, Engine, EngineConfig, Policy, ProxyEnv, Request};
use conductor_netd::egress::choose::{build, Choice};
use conductor_netd::egress::firewall::{Firewall, Tool};
use conductor_netd::egress::nat::NatMode;
use conductor_netd::egress::proxy::ProxyPorts;
use conductor_netd::egress::runner::ProcessRunner;
use conductor_netd::egress::stack::NamespaceStack;
use conductor_netd::egress::{BackendKind, EgressBackend, NetworkEgress};

#[derive(Parser)]
#[command(about = "Egress backends and engine for the egress suite (root)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args)]
struct FirewallArgs {
    /// legacy or nft
    #[arg(long, default_value = "legacy")]
    tool: String,
    /// Whether ip6tables is usable.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    ipv6: bool,
}

#[derive(clap::Args)]
struct NetworkArgs {
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
    /// Enable a backend for a network.
    Apply {
        #[arg(long)]
        backend: String,
        /// masquerade or snat (nat only)
        #[arg(long, default_value = "masquerade")]
        nat_mode: String,
        #[arg(long, default_value_t = 15001)]
        proxy_port: u16,
        #[arg(long)]
        proxy_port6: Option<u16>,
        #[command(flatten)]
        fw: FirewallArgs,
        #[command(flatten)]
        net: NetworkArgs,
    },
    /// Remove a network's rules.
    Disable {
        #[command(flatten)]
        fw: FirewallArgs,
        #[command(flatten)]
        net: NetworkArgs,
    },
    /// Remove every rule and chain of ours.
    RemoveAll {
        #[command(flatten)]
        fw: FirewallArgs,
    },
    /// Serve the engine: transparent listeners and/or an explicit one. The
    /// upstream proxy comes from HTTPS_PROXY & co. in the environment.
    Serve {
        #[arg(long)]
        transparent: Vec<SocketAddr>,
        #[arg(long)]
        explicit: Vec<SocketAddr>,
        #[arg(long, default_value_t = 3000)]
        connect_timeout_ms: u64,
        /// Deny this destination port (a one-rule policy, to show denials).
        #[arg(long)]
        deny_port: Option<u16>,
        /// Copy through a buffer instead of splice.
        #[arg(long)]
        no_splice: bool,
        #[arg(long)]
        network: Option<String>,
    },
    /// Accept TCP connections and never answer (a hanging upstream).
    Blackhole {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Answer every UDP datagram with `udp-peer <sender address>`.
    UdpEcho {
        #[arg(long)]
        listen: Vec<SocketAddr>,
    },
    /// Send one UDP datagram and print the answer (exit 1 if none in 2 s).
    UdpAsk {
        #[arg(long)]
        to: SocketAddr,
    },
}

fn firewall(fw: &FirewallArgs) -> Result<Firewall<ProcessRunner>, String> {
    let tool = match fw.tool.as_str() {
        "legacy" => Tool::Legacy,
        "nft" => Tool::Nft,
        other => return Err(format!("unknown tool {other:?} (legacy or nft)")),
    };
    Ok(Firewall::new(ProcessRunner::default(), tool, fw.ipv6))
}

fn network(n: &NetworkArgs) -> Result<NetworkEgress, String> {
    let parse_err = |what: &str, v: &str| format!("bad {what} {v:?}");
    Ok(NetworkEgress {
        name: n.bridge.clone(),
        bridge: n.bridge.clone(),
        subnet4: n
            .subnet4
            .parse()
            .map_err(|_| parse_err("subnet4", &n.subnet4))?,
        gateway4: n
            .gateway4
            .parse()
            .map_err(|_| parse_err("gateway4", &n.gateway4))?,
        subnet6: n
            .subnet6
            .as_deref()
            .map(|s| s.parse().map_err(|_| parse_err("subnet6", s)))
            .transpose()?,
        gateway6: n
            .gateway6
            .as_deref()
            .map(|s| s.parse().map_err(|_| parse_err("gateway6", s)))
            .transpose()?,
        dns: None,
    })
}

/// Denies one port; allows the rest.
struct DenyPort(Option<u16>);

impl Policy for DenyPort {
    fn decide(&self, r: &Request<'_>) -> Decision {
        match self.0 {
            Some(p) if p == r.port => Decision::Deny {
                rule: format!("deny port {p} (egress-harness --deny-port)"),
            },
            _ => Decision::Allow,
        }
    }

    fn wants_host_name(&self) -> bool {
        false
    }
}

async fn run(cmd: Cmd) -> Result<(), String> {
    match cmd {
        Cmd::Apply {
            backend,
            nat_mode,
            proxy_port,
            proxy_port6,
            fw,
            net,
        } => {
            let kind: BackendKind = backend.parse().map_err(|e| format!("{e}"))?;
            let fw = firewall(&fw)?;
            let choice = Choice {
                kind,
                tool: fw.tool(),
                nat_mode: Some(match nat_mode.as_str() {
                    "snat" => NatMode::Snat,
                    _ => NatMode::Masquerade { conntrack: true },
                }),
                explicit_proxy: false,
                reason: "egress-harness".into(),
            };
            let ports = ProxyPorts {
                v4: proxy_port,
                v6: proxy_port6,
            };
            let b = build(&choice, Arc::new(fw), Arc::new(NamespaceStack), ports)
                .map_err(|e| e.to_string())?;
            b.enable(&network(&net)?).await.map_err(|e| e.to_string())?;
            println!("{}: {}", b.kind(), b.describe().detail);
            Ok(())
        }
        Cmd::Disable { fw, net } => {
            let fw = Arc::new(firewall(&fw)?);
            fw.remove_network(&network(&net)?.bridge)
                .await
                .map_err(|e| e.to_string())
        }
        Cmd::RemoveAll { fw } => firewall(&fw)?.remove_all().await.map_err(|e| e.to_string()),
        Cmd::Serve {
            transparent,
            explicit,
            connect_timeout_ms,
            deny_port,
            no_splice,
            network,
        } => {
            serve(
                transparent,
                explicit,
                connect_timeout_ms,
                deny_port,
                no_splice,
                network,
            )
            .await
        }
        Cmd::Blackhole { listen } => {
            let l = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| format!("bind {listen}: {e}"))?;
            let mut held = Vec::new();
            loop {
                let (s, _) = l.accept().await.map_err(|e| e.to_string())?;
                held.push(s);
            }
        }
        Cmd::UdpEcho { listen } => {
            let mut threads = Vec::new();
            for addr in listen {
                let sock = UdpSocket::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
                threads.push(std::thread::spawn(move || {
                    let mut buf = [0u8; 512];
                    while let Ok((_, from)) = sock.recv_from(&mut buf) {
                        let _ = sock.send_to(format!("udp-peer {}\n", from.ip()).as_bytes(), from);
                    }
                }));
            }
            for t in threads {
                let _ = t.join();
            }
            Ok(())
        }
        Cmd::UdpAsk { to } => {
            let bind = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            let sock = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
            sock.set_read_timeout(Some(Duration::from_secs(2)))
                .map_err(|e| e.to_string())?;
            sock.send_to(b"x", to)
                .map_err(|e| format!("send to {to}: {e}"))?;
            let mut buf = [0u8; 512];
            let (n, _) = sock
                .recv_from(&mut buf)
                .map_err(|e| format!("no answer from {to}: {e}"))?;
            print!("{}", String::from_utf8_lossy(&buf[..n]));
            Ok(())
        }
    }
}

async fn serve(
    transparent: Vec<SocketAddr>,
    explicit: Vec<SocketAddr>,
    connect_timeout_ms: u64,
    deny_port: Option<u16>,
    no_splice: bool,
    network: Option<String>,
) -> Result<(), String> {
    let upstream = ProxyEnv::from_env().map_err(|e| e.to_string())?;
    let config = EngineConfig {
        connect_timeout: Duration::from_millis(connect_timeout_ms),
        upstream,
        copy_mode: if no_splice {
            CopyMode::Buffered
        } else {
            CopyMode::Splice
        },
        ..EngineConfig::default()
    };
    tracing::info!(upstream = ?config.upstream, "engine starting");
    let engine = Engine::new(config, Arc::new(DenyPort(deny_port)));
    let mut tasks = tokio::task::JoinSet::new();
    for (addr, is_transparent) in transparent
        .iter()
        .map(|a| (*a, true))
        .chain(explicit.iter().map(|a| (*a, false)))
    {
        let listener = bind(addr)?;
        let e = engine.clone();
        let network = network.clone();
        tasks.spawn(async move {
            if is_transparent {
                e.serve_transparent(listener, network).await
            } else {
                e.serve_explicit(listener, network).await
            }
        });
    }
    // Ready: the suite waits for this line.
    println!("serving");
    tasks.join_next().await;
    Ok(())
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
            tracing_subscriber::EnvFilter::try_from_env("EGRESS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("egress-harness: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(cli.cmd)) {
        eprintln!("egress-harness: {e}");
        std::process::exit(1);
    }
}
