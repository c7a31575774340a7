//! Keeping privileged tests to themselves: a private network + mount
//! namespace for the kernel run, and a check that a test left nothing behind.

use std::time::{Duration, Instant};

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};

/// Move this (still single-threaded) process into fresh network and mount
/// namespaces with a private /run/netns, so nothing a test makes is visible
/// to, or can leak onto, the machine.
pub fn enter_private_namespaces() -> Result<(), String> {
    unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("unshare(net, mount): {e}"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("make / private: {e}"))?;
    std::fs::create_dir_all("/run/netns").map_err(|e| format!("mkdir /run/netns: {e}"))?;
    mount(
        Some("tmpfs"),
        "/run/netns",
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=755"),
    )
    .map_err(|e| format!("mount tmpfs on /run/netns: {e}"))?;
    Ok(())
}

/// Bring `lo` up in the current namespace (fresh namespaces start with it down).
pub fn loopback_up() -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let h = netns::Handle::current().map_err(|e| e.to_string())?;
        h.set_up(1, true).await.map_err(|e| e.to_string())
    })
}

/// Everything named with `prefix` that is still around: links in this
/// namespace, named namespaces, mounts, and child processes of ours.
pub fn leftovers(prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        rt.block_on(async {
            if let Ok(h) = netns::Handle::current() {
                if let Ok(links) = h.links().await {
                    for l in links.into_iter().filter(|l| l.name.starts_with(prefix)) {
                        found.push(format!("link {}", l.name));
                    }
                }
            }
        });
    }
    for name in netns::Netns::list().unwrap_or_default() {
        if name.starts_with(prefix) {
            found.push(format!("namespace {name}"));
        }
    }
    if let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") {
        for line in mounts.lines().filter(|l| l.contains(prefix)) {
            found.push(format!("mount {line}"));
        }
    }
    found.extend(
        child_processes()
            .into_iter()
            .map(|p| format!("process {p}")),
    );
    found
}

/// Our live (not zombie) child processes, as "pid comm".
pub fn child_processes() -> Vec<String> {
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let pid = entry.file_name().to_string_lossy().to_string();
        if !pid.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        if fields.len() > 1 && fields[1] == me && fields[0] != "Z" {
            let comm = &stat[stat.find('(').unwrap_or(0) + 1..close];
            out.push(format!("{pid} {comm}"));
        }
    }
    out
}

/// Leftovers after a grace period: the kernel frees a deleted namespace's
/// links asynchronously.
pub fn leftovers_after_grace(prefix: &str, grace: Duration) -> Vec<String> {
    let start = Instant::now();
    loop {
        let found = leftovers(prefix);
        if found.is_empty() || start.elapsed() > grace {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Remove whatever a failed test left behind (links and named namespaces
/// with its prefix). Returns what could not be removed.
pub fn cleanup(prefix: &str) -> Vec<String> {
    if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        rt.block_on(async {
            if let Ok(h) = netns::Handle::current() {
                for l in h.links().await.unwrap_or_default() {
                    if l.name.starts_with(prefix) {
                        let _ = h.delete_link(l.index).await;
                    }
                }
            }
        });
    }
    for name in netns::Netns::list().unwrap_or_default() {
        if name.starts_with(prefix) {
            let _ = netns::Netns::delete(&name);
        }
    }
    leftovers_after_grace(prefix, Duration::from_secs(3))
}
