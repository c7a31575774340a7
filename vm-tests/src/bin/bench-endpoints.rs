//! Endpoint set-up cost, three ways, in one run: the `netns` crate, the
//! equivalent `ip` commands from a shell script, and the CNI bridge plugin
//! (Debian's containernetworking-plugins, ADD with host-local IPAM).
//!
//! Each endpoint gets a fresh namespace first, timed separately (a container
//! runtime creates it in real use). The endpoint itself: a veth pair with the
//! peer created inside that namespace, host end on the bridge, an address, a
//! default route, and the interface and lo up.
//!
//! Runs on the real kernel in a private network + mount namespace, and inside
//! gVisor (`runsc do`); nothing is left on the machine.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use netns::{create_endpoint, EndpointSpec, Handle, IpNet, ScratchNamespaces};
use vm_tests::isolation;

#[derive(Parser)]
#[command(about = "Endpoint set-up: netns crate vs ip script vs CNI bridge plugin (root)")]
struct Args {
    /// kernel, gvisor or all
    #[arg(long, default_value = "all")]
    env: String,
    /// Endpoints per method on the real kernel.
    #[arg(long, default_value_t = 200)]
    count: usize,
    /// Endpoints per method inside gVisor.
    #[arg(long, default_value_t = 100)]
    gvisor_count: usize,
    /// Run in the current environment (used by the re-executed child).
    #[arg(long, hide = true)]
    inner: Option<String>,
}

fn main() {
    let args = Args::parse();
    if let Some(env) = &args.inner {
        if let Err(e) = run_inner(env, &args) {
            eprintln!("bench-endpoints: {e}");
            std::process::exit(1);
        }
        return;
    }
    let envs: Vec<&str> = match args.env.as_str() {
        "all" => vec!["kernel", "gvisor"],
        "kernel" => vec!["kernel"],
        "gvisor" => vec!["gvisor"],
        other => {
            eprintln!("bench-endpoints: unknown environment {other:?}");
            std::process::exit(2);
        }
    };
    let me = std::env::current_exe().expect("own path");
    let mut failed = false;
    for env in envs {
        let pass = [
            "--count".to_string(),
            args.count.to_string(),
            "--gvisor-count".to_string(),
            args.gvisor_count.to_string(),
            "--inner".to_string(),
            env.to_string(),
        ];
        let status = if env == "kernel" {
            Command::new(&me).args(pass).status()
        } else {
            let root = std::env::temp_dir().join(format!("bench-runsc-{}", std::process::id()));
            let _ = std::fs::create_dir_all(&root);
            let s = Command::new("runsc")
                .arg("--root")
                .arg(&root)
                .args(["--network=none", "--net-raw", "--platform=ptrace", "do"])
                .arg(&me)
                .args(pass)
                .status();
            let _ = std::fs::remove_dir_all(&root);
            s
        };
        failed |= !status.map(|s| s.success()).unwrap_or(false);
    }
    if failed {
        std::process::exit(1);
    }
}

struct Stats {
    p50: f64,
    p99: f64,
    mean: f64,
}

fn stats(samples: &mut [Duration]) -> Stats {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let at = |q: f64| ms(samples[((samples.len() as f64 - 1.0) * q).round() as usize]);
    Stats {
        p50: at(0.50),
        p99: at(0.99),
        mean: samples.iter().map(|d| ms(*d)).sum::<f64>() / samples.len() as f64,
    }
}

fn run_inner(env: &str, args: &Args) -> Result<(), String> {
    let count = if env == "gvisor" {
        args.gvisor_count
    } else {
        args.count
    };
    if env == "kernel" {
        isolation::enter_private_namespaces()?;
    }
    isolation::loopback_up()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    println!("== {env}: {count} endpoints per method ==");

    let mut ns_times = Vec::new();
    let netns_times = rt.block_on(bench_netns(count, &mut ns_times))?;
    let ns_stats = stats(&mut ns_times);
    let mut ip_ns = Vec::new();
    let ip_times = bench_ip_script(count, &mut ip_ns);
    let mut cni_ns = Vec::new();
    let cni_times = bench_cni(count, &mut cni_ns);

    println!(
        "{:<28} p50 {:>8.3} ms   p99 {:>8.3} ms   mean {:>8.3} ms",
        "namespace creation", ns_stats.p50, ns_stats.p99, ns_stats.mean
    );
    let mut base = netns_times;
    let b = stats(&mut base);
    println!(
        "{:<28} p50 {:>8.3} ms   p99 {:>8.3} ms   mean {:>8.3} ms",
        "netns crate (endpoint)", b.p50, b.p99, b.mean
    );
    for (name, result) in [
        ("ip script (endpoint)", ip_times),
        ("CNI bridge plugin (endpoint)", cni_times),
    ] {
        match result {
            Ok(mut t) => {
                let s = stats(&mut t);
                println!(
                    "{:<28} p50 {:>8.3} ms   p99 {:>8.3} ms   mean {:>8.3} ms   = {:.1}x / {:.1}x the netns crate (p50 / p99)",
                    name,
                    s.p50,
                    s.p99,
                    s.mean,
                    s.p50 / b.p50,
                    s.p99 / b.p99
                );
            }
            Err(e) => println!("{name:<28} failed: {e}"),
        }
    }
    Ok(())
}

fn addr_of(i: usize) -> (IpNet, String) {
    // 10.96.0.0/16 for the netns crate; hosts .2 upwards.
    let host = i + 2;
    let s = format!("10.96.{}.{}/16", host / 256, host % 256);
    (s.parse().expect("valid"), s)
}

async fn bench_netns(count: usize, ns_times: &mut Vec<Duration>) -> Result<Vec<Duration>, String> {
    let host = Handle::current().map_err(|e| e.to_string())?;
    let bridge = host
        .ensure_bridge("bnbr", None)
        .await
        .map_err(|e| e.to_string())?;
    host.add_address(bridge.index, "10.96.0.1/16".parse().expect("valid"))
        .await
        .map_err(|e| e.to_string())?;
    let gw = ["10.96.0.1".parse().expect("valid")];
    let mut times = Vec::with_capacity(count);
    let mut namespaces = Vec::with_capacity(count);
    let mut scratch = ScratchNamespaces::new("bn");
    for i in 0..count {
        let t = Instant::now();
        let ns = scratch.create(&i.to_string()).map_err(|e| e.to_string())?;
        ns_times.push(t.elapsed());
        let (addr, _) = addr_of(i);
        let t = Instant::now();
        create_endpoint(
            &host,
            &EndpointSpec {
                host_ifname: &format!("bnv{i}"),
                ifname: "eth0",
                netns: &ns,
                bridge: bridge.index,
                addresses: &[addr],
                gateways: &gw,
                mtu: None,
                mac: None,
            },
        )
        .await
        .map_err(|e| e.to_string())?;
        times.push(t.elapsed());
        namespaces.push(ns);
    }
    drop(namespaces);
    drop(scratch);
    let _ = host.delete_link(bridge.index).await;
    Ok(times)
}

fn sh(script: &str) -> Result<(), String> {
    let out = Command::new("sh")
        .args(["-e", "-c", script])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn bench_ip_script(count: usize, ns_times: &mut Vec<Duration>) -> Result<Vec<Duration>, String> {
    sh("ip link add ipbr type bridge && ip link set ipbr up && ip addr add 10.97.0.1/16 dev ipbr")?;
    let mut times = Vec::with_capacity(count);
    let result = (|| {
        for i in 0..count {
            let t = Instant::now();
            sh(&format!("ip netns add ip{i}"))?;
            ns_times.push(t.elapsed());
            let host = i + 2;
            let script = format!(
                "ip link add ipv{i} type veth peer name eth0 netns ip{i}\n\
                 ip link set ipv{i} master ipbr\n\
                 ip link set ipv{i} up\n\
                 ip -n ip{i} addr add 10.97.{}.{}/16 dev eth0\n\
                 ip -n ip{i} link set eth0 up\n\
                 ip -n ip{i} link set lo up\n\
                 ip -n ip{i} route add default via 10.97.0.1\n",
                host / 256,
                host % 256
            );
            let t = Instant::now();
            sh(&script)?;
            times.push(t.elapsed());
        }
        Ok(times)
    })();
    for i in 0..count {
        let _ = sh(&format!("ip netns delete ip{i}"));
    }
    let _ = sh("ip link delete ipbr");
    result
}

const CNI_DIR: &str = "/usr/lib/cni";

fn bench_cni(count: usize, ns_times: &mut Vec<Duration>) -> Result<Vec<Duration>, String> {
    let plugin = format!("{CNI_DIR}/bridge");
    if !std::path::Path::new(&plugin).exists() {
        return Err(format!(
            "{plugin} not found (apt-get install containernetworking-plugins)"
        ));
    }
    let data = std::env::temp_dir().join(format!("bench-cni-{}", std::process::id()));
    let config = format!(
        r#"{{"cniVersion":"1.0.0","name":"bench","type":"bridge","bridge":"cnibr","isGateway":true,"ipMasq":false,"ipam":{{"type":"host-local","subnet":"10.98.0.0/16","dataDir":"{}"}}}}"#,
        data.display()
    );
    let mut times = Vec::with_capacity(count);
    let mut scratch = ScratchNamespaces::new("cn");
    let result = (|| {
        for i in 0..count {
            let t = Instant::now();
            let ns = scratch.create(&i.to_string()).map_err(|e| e.to_string())?;
            ns_times.push(t.elapsed());
            drop(ns);
            let t = Instant::now();
            let mut child = Command::new(&plugin)
                .env("CNI_COMMAND", "ADD")
                .env("CNI_CONTAINERID", format!("bench{i}"))
                .env(
                    "CNI_NETNS",
                    format!("/run/netns/{}", scratch.name(&i.to_string())),
                )
                .env("CNI_IFNAME", "eth0")
                .env("CNI_PATH", CNI_DIR)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| e.to_string())?;
            child
                .stdin
                .take()
                .ok_or("no stdin")?
                .write_all(config.as_bytes())
                .map_err(|e| e.to_string())?;
            let out = child.wait_with_output().map_err(|e| e.to_string())?;
            times.push(t.elapsed());
            if !out.status.success() {
                return Err(format!(
                    "ADD #{i}: {}{}",
                    String::from_utf8_lossy(&out.stdout).trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        Ok(times)
    })();
    drop(scratch);
    let _ = sh("ip link delete cnibr");
    let _ = std::fs::remove_dir_all(&data);
    result
}
