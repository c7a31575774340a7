//! The suites kept as scripts (they drive other programs: ip, dockerd, Go):
//! `vm-tests/<suite>/run.sh ENV`, printing `ok NAME` / `FAIL NAME: reason`.
//! Each runs in its own process group under a time limit, so one that hangs
//! fails by name instead of holding up every suite after it.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::harness::{Env, Tally};

/// A suite's time limit unless VM_TESTS_SUITE_LIMIT_SECS says otherwise:
/// the longest (workers in gVisor, both dockerds) takes about 15 minutes.
const DEFAULT_LIMIT: Duration = Duration::from_secs(1800);
/// Between TERM (the scripts' traps clean up) and KILL.
const GRACE: Duration = Duration::from_secs(20);

/// `vm-tests/<suite>/run.sh` for every suite folder, sorted.
pub fn suites(root: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("run.sh"))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found
}

fn limit() -> Duration {
    std::env::var("VM_TESTS_SUITE_LIMIT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_LIMIT)
}

/// Run one script suite, recording its rows (and a failure of its own if it
/// reported none, or ran out of time).
pub fn run(script: &Path, env: Env, filter: Option<&str>, tally: &mut Tally) {
    let suite = script
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    if filter.is_some_and(|f| !suite.contains(f)) {
        return;
    }
    let spawned = Command::new("sh")
        .arg(script)
        .arg(env.name())
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            tally.record(&suite, Err(format!("start {}: {e}", script.display())), 0.0);
            return;
        }
    };
    let group = Pid::from_raw(child.id() as i32);
    let limit = limit();
    let (done, finished) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if finished.recv_timeout(limit).is_ok() {
            return false;
        }
        let _ = killpg(group, Signal::SIGTERM);
        if finished.recv_timeout(GRACE).is_err() {
            let _ = killpg(group, Signal::SIGKILL);
        }
        true
    });
    let mut reported = 0;
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(name) = line.strip_prefix("ok ") {
                tally.record(&format!("{suite}/{name}"), Ok(()), 0.0);
                reported += 1;
            } else if let Some(rest) = line.strip_prefix("FAIL ") {
                tally.record(&format!("{suite}/{rest}"), Err(String::new()), 0.0);
                reported += 1;
            } else {
                println!("  {line}");
            }
        }
    }
    let ok = child.wait().map(|s| s.success()).unwrap_or(false);
    let _ = done.send(());
    let timed_out = watchdog.join().unwrap_or(false);
    if timed_out {
        tally.record(
            &format!("{suite}/time-limit"),
            Err(format!(
                "still running after {} s; stopped (VM_TESTS_SUITE_LIMIT_SECS)",
                limit.as_secs()
            )),
            0.0,
        );
    } else if !ok && reported == 0 {
        tally.record(
            &suite,
            Err("script failed without reporting a test".into()),
            0.0,
        );
    }
}
