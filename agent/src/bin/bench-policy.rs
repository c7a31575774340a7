//! The egress policy's decision cost: p50/p99 of one decision (name,
//! address and port) with N rules, against a linear scan of the same rules
//! in the same run; plus compile time and memory.
//!
//! `cargo run --release -p conductor-netd --bin bench-policy [-- --samples N]`

use std::net::IpAddr;
use std::time::{Duration, Instant};

use conductor_netd::policy::rule::{Action, Rule, Target};
use conductor_netd::policy::{Compiled, PolicySpec, Preset};

/// A small deterministic generator (no dependency for a benchmark).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn rules(n: usize, rng: &mut Rng) -> Vec<String> {
    (0..n)
        .map(|i| {
            let r = rng.next();
            let verb = if i % 4 == 0 { "allow" } else { "deny" };
            match i % 5 {
                0 | 1 => format!("{verb} host{}.svc{}.example.test", r % 100_000, i % 97),
                2 => format!("{verb} *.zone{}.example.test", r % 50_000),
                3 => {
                    let len = 16 + (r % 17) as u8;
                    let a = std::net::Ipv4Addr::from_bits((r >> 8) as u32);
                    let net = ipnet::Ipv4Net::new(a, len).unwrap().trunc();
                    format!("{verb} {net}")
                }
                _ => {
                    let len = 32 + (r % 97) as u8;
                    let a = std::net::Ipv6Addr::from_bits(((r as u128) << 64) | 0x2001_0db8 << 96);
                    let net = ipnet::Ipv6Net::new(a, len).unwrap().trunc();
                    format!("{verb} {net}")
                }
            }
        })
        .collect()
}

type Query = (String, IpAddr, u16);

fn queries(n: usize, rng: &mut Rng) -> Vec<Query> {
    (0..n)
        .map(|i| {
            let r = rng.next();
            let host = match i % 3 {
                0 => format!("host{}.svc{}.example.test", r % 100_000, r % 97),
                1 => format!("a.zone{}.example.test", r % 50_000),
                _ => format!("www.site{}.test", r % 1000),
            };
            let ip = if i % 2 == 0 {
                IpAddr::V4(std::net::Ipv4Addr::from_bits((r >> 16) as u32))
            } else {
                IpAddr::V6(std::net::Ipv6Addr::from_bits(
                    ((r as u128) << 64) | 0x2001_0db8 << 96,
                ))
            };
            (host, ip, 443)
        })
        .collect()
}

/// The alternative: every rule checked in order (what a naive list does).
fn linear(rules: &[Rule], q: &Query) -> bool {
    let mut allowed = false;
    for r in rules {
        let hit = match &r.target {
            Target::Domain { name, wildcard } => {
                if *wildcard {
                    q.0.strip_suffix(name.as_str())
                        .is_some_and(|p| p.ends_with('.'))
                } else {
                    q.0 == *name
                }
            }
            Target::Cidr(n) => n.contains(&q.1),
            Target::Port { lo, hi } => (*lo..=*hi).contains(&q.2),
        };
        if hit {
            match r.action {
                Action::Deny => return false,
                Action::Allow => allowed = true,
            }
        }
    }
    allowed
}

fn pct(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p) as usize]
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let mut samples = 100_000usize;
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--samples") {
        samples = args
            .get(i + 1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(samples);
    }
    println!(
        "{:>8} {:>10} {:>9} {:>10} {:>10} {:>12} {:>12} {:>8}",
        "rules", "compile", "mem", "p50", "p99", "linear p50", "linear p99", "ratio"
    );
    for n in [10_000usize, 100_000] {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ n as u64);
        let texts = rules(n, &mut rng);
        let before = rss_kib();
        let t = Instant::now();
        let c = Compiled::new(PolicySpec {
            preset: Preset::Balanced,
            rules: texts,
        })
        .expect("generated rules parse");
        let compile = t.elapsed();
        let mem = rss_kib().saturating_sub(before);
        let qs = queries(samples, &mut rng);
        let mut times = Vec::with_capacity(qs.len());
        let mut denied = 0usize;
        for q in &qs {
            let t = Instant::now();
            let v = c.decide(Some(&q.0), Some(q.1), q.2);
            times.push(t.elapsed());
            denied += usize::from(!std::hint::black_box(v).allow);
        }
        let lin_n = (samples / 20).clamp(200, 5000);
        let mut lin = Vec::with_capacity(lin_n);
        for q in qs.iter().take(lin_n) {
            let t = Instant::now();
            std::hint::black_box(linear(c.rules(), q));
            lin.push(t.elapsed());
        }
        let (p50, p99) = (pct(times.clone(), 0.5), pct(times, 0.99));
        let (l50, l99) = (pct(lin.clone(), 0.5), pct(lin, 0.99));
        println!(
            "{:>8} {:>8.1}ms {:>6}KiB {:>8.2}µs {:>8.2}µs {:>10.1}µs {:>10.1}µs {:>7.0}x",
            n,
            compile.as_secs_f64() * 1e3,
            mem,
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6,
            l50.as_secs_f64() * 1e6,
            l99.as_secs_f64() * 1e6,
            l50.as_secs_f64() / p50.as_secs_f64().max(1e-9),
        );
        println!("  ({n} rules: {samples} decisions, {denied} denied; linear scan over {lin_n})");
    }
}
