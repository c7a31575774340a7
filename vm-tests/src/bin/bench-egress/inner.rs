//! One inner run: the phases, in the environment this process is in.

use std::sync::Arc;
use std::time::Duration;

use conductor_egress::{CopyMode, Engine, EngineConfig};
use conductor_netd::egress::firewall::{Firewall, Tool};
use conductor_netd::egress::nat::{NatBackend, NatMode};
use conductor_netd::egress::proxy::{ProxyBackend, ProxyPorts};
use conductor_netd::egress::runner::ProcessRunner;
use conductor_netd::egress::stack::NamespaceStack;
use conductor_netd::egress::EgressBackend;
use netns::Netns;
use vm_tests::isolation;

use crate::traffic::{
    client, median, pct, rate, start_servers, throughput, Topology, BUFFERED_PORT, SPLICE_PORT,
    STALL,
};
use crate::{Args, Phase};

#[derive(Default)]
struct Samples {
    gbps: Vec<f64>,
    cps: Vec<f64>,
    lat: Vec<Duration>,
}

pub(crate) fn run_inner(env: &str, args: &Args) -> Result<(), String> {
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
