//! Capabilities: check what `serve` needs at start, and drop the rest once
//! the sockets are open.

use caps::{CapSet, Capability, CapsHashSet};

use crate::error::{Error, Result};

/// What `serve` must hold to start.
pub const REQUIRED: &[Capability] = &[Capability::CAP_NET_ADMIN, Capability::CAP_SYS_ADMIN];

/// What it keeps after start-up: netlink changes and iptables (NET_ADMIN),
/// the raw socket iptables-legacy talks to the kernel through (NET_RAW),
/// DNS on port 53 inside containers (NET_BIND_SERVICE), entering
/// namespaces and private /proc mounts for sysctls (SYS_ADMIN), and opening
/// /proc/PID/ns/net of other users' processes (SYS_PTRACE).
pub const KEPT: &[Capability] = &[
    Capability::CAP_NET_ADMIN,
    Capability::CAP_NET_RAW,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_ADMIN,
    Capability::CAP_SYS_PTRACE,
];

/// The required capabilities missing from the effective set, by name.
pub fn missing() -> Result<Vec<String>> {
    let effective = caps::read(None, CapSet::Effective)
        .map_err(|e| Error::Internal(format!("read capabilities: {e}")))?;
    Ok(REQUIRED
        .iter()
        .filter(|c| !effective.contains(c))
        .map(|c| c.to_string())
        .collect())
}

/// Fail with a message naming every missing capability.
pub fn require() -> Result<()> {
    let missing = missing()?;
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::Permission(format!(
        "conductor-netd serve needs {}; missing: {} (run it as root)",
        REQUIRED
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(" and "),
        missing.join(", ")
    )))
}

/// Also kept inside gVisor, whose procfs checks file permissions on sysctl
/// writes even for root with CAP_NET_ADMIN (Linux does not): egress turns
/// on forwarding.
pub const KEPT_IN_GVISOR: &[Capability] = &[Capability::CAP_DAC_OVERRIDE];

/// Drop every capability but `KEPT` (and `extra`) from the calling thread
/// (and so from every thread it starts later): bounding, inheritable,
/// ambient, permitted and effective sets. Returns what was dropped from the
/// permitted set.
pub fn drop_unneeded(extra: &[Capability]) -> Result<Vec<String>> {
    let keep: CapsHashSet = KEPT.iter().chain(extra).copied().collect();
    let permitted = caps::read(None, CapSet::Permitted)
        .map_err(|e| Error::Internal(format!("read capabilities: {e}")))?;
    // The bounding set first: dropping from it needs CAP_SETPCAP, which goes
    // with the effective set below.
    if let Ok(bounding) = caps::read(None, CapSet::Bounding) {
        for cap in bounding.difference(&keep) {
            if let Err(e) = caps::drop(None, CapSet::Bounding, *cap) {
                tracing::debug!(cap = %cap, error = %e, "could not drop from the bounding set");
            }
        }
    }
    let _ = caps::clear(None, CapSet::Ambient);
    let kept: CapsHashSet = permitted.intersection(&keep).copied().collect();
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new())
        .map_err(|e| Error::Internal(format!("clear inheritable capabilities: {e}")))?;
    caps::set(None, CapSet::Effective, &kept)
        .map_err(|e| Error::Internal(format!("set effective capabilities: {e}")))?;
    caps::set(None, CapSet::Permitted, &kept)
        .map_err(|e| Error::Internal(format!("set permitted capabilities: {e}")))?;
    let mut dropped: Vec<String> = permitted.difference(&keep).map(|c| c.to_string()).collect();
    dropped.sort();
    Ok(dropped)
}
