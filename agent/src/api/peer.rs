//! Who may use the API socket: root and members of the configured group
//! (everything), members of the read-only group (GET routes), identified
//! with SO_PEERCRED (with gVisor's quirk handled).

use crate::error::{Error, Result};

/// Who may use the socket besides root.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Access {
    pub group: Option<u32>,
    /// Members may use the GET routes only.
    pub readonly_group: Option<u32>,
    /// Permission bits of the socket file.
    pub socket_mode: u32,
}

/// What an admitted peer may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Every route.
    Full,
    /// GET routes only.
    ReadOnly,
}

/// Resolve a group given by name or number.
pub fn resolve_group(group: &str) -> Result<u32> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(Error::invalid("socket group", group, "no such group")),
        Err(e) => Err(Error::invalid("socket group", group, e.desc())),
    }
}

/// Supplementary groups of a process, from /proc/PID/status.
fn process_groups(pid: i32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Groups:").map(|g| g.to_string()))
        })
        .map(|g| {
            g.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Decide whether a peer may use the API.
///
/// gVisor (20240729) answers SO_PEERCRED on an accepted socket with the
/// *listener's* credentials (our own pid, uid and gid), so a peer that claims
/// to be this very process is not identified at all. Then only the socket
/// file's permissions stand between the peer and the API: that is accepted
/// when they admit nobody but the owner (root) and the group, refused when
/// "others" have access.
pub fn check_peer(uid: u32, gid: u32, pid: Option<i32>, access: Access) -> Result<Grant, String> {
    if pid == Some(std::process::id() as i32) {
        if access.socket_mode & 0o007 != 0 {
            return Err(format!(
                "cannot identify the peer: SO_PEERCRED reports this daemon's own credentials \
                 (gVisor), and the socket mode {:04o} lets others in; use a mode without \
                 access for others (e.g. 0660) to rely on the socket's permissions",
                access.socket_mode
            ));
        }
        warn_unidentified_once();
        return Ok(Grant::Full);
    }
    if uid == 0 {
        return Ok(Grant::Full);
    }
    if access.group.is_some() || access.readonly_group.is_some() {
        let supplementary = pid.map(process_groups).unwrap_or_default();
        let member = |g: Option<u32>| g.is_some_and(|g| gid == g || supplementary.contains(&g));
        if member(access.group) {
            return Ok(Grant::Full);
        }
        if member(access.readonly_group) {
            return Ok(Grant::ReadOnly);
        }
    }
    let allowed = match (access.group, access.readonly_group) {
        (None, None) => "only root may use this socket".to_string(),
        (Some(g), None) => format!("only root and members of group {g} may use this socket"),
        (None, Some(r)) => format!("only root may use this socket (members of group {r} may read)"),
        (Some(g), Some(r)) => format!(
            "only root and members of group {g} may use this socket (members of group {r} \
             may read)"
        ),
    };
    Err(format!("uid {uid} is not allowed: {allowed}"))
}

fn warn_unidentified_once() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing::warn!(
            "SO_PEERCRED reports this daemon's own credentials (gVisor): peers are \
             admitted by the socket file's permissions only"
        );
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers() {
        assert_eq!(check_peer(0, 0, None, Access::default()), Ok(Grant::Full));
        let e = check_peer(1000, 1000, None, Access::default()).unwrap_err();
        assert!(e.contains("uid 1000"), "{e}");
        let g = Access {
            group: Some(1234),
            readonly_group: Some(77),
            socket_mode: 0o660,
        };
        assert_eq!(check_peer(1000, 1234, None, g), Ok(Grant::Full));
        assert_eq!(check_peer(1000, 77, None, g), Ok(Grant::ReadOnly));
        let e = check_peer(1000, 1000, None, g).unwrap_err();
        assert!(e.contains("1234") && e.contains("77"), "{e}");
        // Supplementary groups of a live process are read from /proc.
        assert!(!process_groups(std::process::id() as i32).contains(&u32::MAX));
    }

    #[test]
    fn unidentified_peers_rely_on_the_socket_mode() {
        let me = Some(std::process::id() as i32);
        let closed = Access {
            socket_mode: 0o660,
            ..Access::default()
        };
        assert!(check_peer(0, 0, me, closed).is_ok());
        let open = Access {
            socket_mode: 0o666,
            ..Access::default()
        };
        let e = check_peer(0, 0, me, open).unwrap_err();
        assert!(e.contains("SO_PEERCRED") && e.contains("0666"), "{e}");
    }

    #[test]
    fn groups_by_name_or_number() {
        assert_eq!(resolve_group("0").unwrap(), 0);
        assert_eq!(resolve_group("root").unwrap(), 0);
        assert!(resolve_group("no-such-group-here").is_err());
    }
}
