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

use std::process::Command;
use std::time::Duration;

use clap::Parser;

mod inner;
mod traffic;

use traffic::STALL;

#[derive(Parser, Clone)]
#[command(about = "Egress: proxy vs nat vs direct, throughput and connection rate (root)")]
pub(crate) struct Args {
    /// kernel, gvisor or all
    #[arg(long, default_value = "all")]
    pub(crate) env: String,
    /// Seconds per throughput sample.
    #[arg(long, default_value_t = 3.0)]
    pub(crate) seconds: f64,
    /// Seconds per connection-rate sample.
    #[arg(long, default_value_t = 2.0)]
    pub(crate) rate_seconds: f64,
    /// Rounds (phases alternate within a round; medians are reported).
    #[arg(long, default_value_t = 3)]
    pub(crate) rounds: usize,
    /// The engine's runtime: `multi` (the process's two-worker runtime, as
    /// in the daemon) or `current` (one thread of its own).
    #[arg(long, default_value = "multi")]
    pub(crate) engine_runtime: String,
    #[arg(long, hide = true)]
    pub(crate) inner: Option<String>,
    /// Phases for an inner run (nat, splice, buffered, direct).
    #[arg(
        long,
        hide = true,
        value_delimiter = ',',
        default_value = "splice,buffered,direct,nat"
    )]
    pub(crate) phases: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Nat,
    Splice,
    Buffered,
    Direct,
}

impl Phase {
    pub(crate) const ALL: [Phase; 4] = [Phase::Nat, Phase::Splice, Phase::Buffered, Phase::Direct];

    pub(crate) fn key(self) -> &'static str {
        match self {
            Phase::Nat => "nat",
            Phase::Splice => "splice",
            Phase::Buffered => "buffered",
            Phase::Direct => "direct",
        }
    }

    pub(crate) fn title(self) -> &'static str {
        match self {
            Phase::Nat => "nat",
            Phase::Splice => "proxy (splice)",
            Phase::Buffered => "proxy (buffered copy)",
            Phase::Direct => "direct from the sandbox",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Phase> {
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
        if let Err(e) = inner::run_inner(&env, &args) {
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
        c.env("TMPDIR", &root)
            .arg("--root")
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
