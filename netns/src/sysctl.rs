//! Network sysctls (net.*), read and written inside a namespace.
//!
//! On Linux /proc/sys/net shows the namespace of the thread that opens it.
//! gVisor (20240729) instead shows the namespace of whoever mounted procfs, so
//! writing through the host's /proc from a thread inside another namespace
//! changes the *host's* value (even `ip netns exec` gets this wrong there).
//! A procfs mounted from inside the namespace is right on both, so the
//! namespace thread gets a private mount namespace with a fresh /proc.

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};

use crate::error::{errno_of, Error, Result};

use crate::namespace::Netns;

fn path_of(key: &str) -> Result<String> {
    let parts: Vec<&str> = key.split(['.', '/']).collect();
    let valid = parts.len() >= 3
        && parts[0] == "net"
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
    if !valid {
        return Err(Error::invalid(
            "sysctl key",
            key,
            "expected net.<group>.<name> made of [A-Za-z0-9_-]",
        ));
    }
    Ok(format!("/proc/sys/{}", parts.join("/")))
}

/// Give the calling (namespace) thread its own mount namespace with a procfs
/// mounted from inside the network namespace. Both vanish with the thread.
fn private_proc() -> std::result::Result<(), nix::errno::Errno> {
    unshare(CloneFlags::CLONE_NEWNS)?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )?;
    mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
}

/// Read a net.* sysctl inside `ns`, trimmed.
pub fn read_sysctl(ns: &Netns, key: &str) -> Result<String> {
    let path = path_of(key)?;
    ns.run(|| {
        private_proc().map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
        std::fs::read_to_string(&path)
    })?
    .map(|s| s.trim().to_string())
    .map_err(|e| {
        Error::os(
            "read sysctl",
            format!("{key} in {}", ns.describe()),
            errno_of(&e),
        )
    })
}

/// Write a net.* sysctl inside `ns`.
pub fn write_sysctl(ns: &Netns, key: &str, value: &str) -> Result<()> {
    let path = path_of(key)?;
    ns.run(|| {
        private_proc().map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
        std::fs::write(&path, value)
    })?
    .map_err(|e| {
        Error::os(
            "write sysctl",
            format!("{key}={value} in {}", ns.describe()),
            errno_of(&e),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_proc_paths() {
        assert_eq!(
            path_of("net.ipv4.ip_forward").unwrap(),
            "/proc/sys/net/ipv4/ip_forward"
        );
        assert_eq!(
            path_of("net/ipv6/conf/all/disable_ipv6").unwrap(),
            "/proc/sys/net/ipv6/conf/all/disable_ipv6"
        );
    }

    #[test]
    fn escapes_are_refused() {
        for bad in [
            "net..ipv4",
            "kernel.hostname",
            "net.ipv4",
            "net.ipv4.a b",
            "net.../etc",
        ] {
            let err = path_of(bad).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
    }
}
