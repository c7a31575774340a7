//! The network namespaces the daemon can see, for reconciliation to find
//! the peers of host veths whose records are lost: named ones (under
//! /run/netns), namespace files bind-mounted elsewhere (nsfs mounts in
//! /proc/self/mountinfo, e.g. a container runtime's), and those of live
//! processes (/proc/PID/ns/net). Blocking (it reads /proc and opens files):
//! run it off the async workers.

use std::collections::HashSet;
use std::path::PathBuf;

use netns::Netns;

use crate::model::{NsId, Target};

/// A namespace found, open, with how to name it.
pub struct Visible {
    pub target: Target,
    pub ns: Netns,
    pub id: NsId,
}

/// Every visible network namespace but `skip` (the daemon's own), once
/// each, named the most stable way found: a name, else a mount, else a pid.
pub fn visible_namespaces(skip: NsId) -> Vec<Visible> {
    let mut seen: HashSet<NsId> = HashSet::from([skip]);
    let mut out = Vec::new();
    let mut add = |target: Target, opened: netns::Result<Netns>| {
        let Ok(ns) = opened else { return };
        let Ok((dev, ino)) = ns.id() else { return };
        let id = NsId { dev, ino };
        if seen.insert(id) {
            out.push(Visible { target, ns, id });
        }
    };
    for name in Netns::list().unwrap_or_default() {
        let opened = Netns::open(&name);
        add(Target::Netns(name), opened);
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for path in nsfs_mounts(&mountinfo) {
        if path.starts_with(netns::NETNS_RUN_DIR) {
            continue; // named, above
        }
        let opened = Netns::open_path(&path);
        add(Target::NetnsPath(path), opened);
    }
    let pids = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok());
    for pid in pids {
        add(Target::Pid(pid), Netns::open_pid(pid));
    }
    out
}

/// Mount points of nsfs mounts (bind-mounted namespace files).
fn nsfs_mounts(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            if right.split_whitespace().next()? != "nsfs" {
                return None;
            }
            left.split_whitespace().nth(4).map(unescape)
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let text = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(text, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nsfs_mount_points_are_read_and_unescaped() {
        let text = "\
74 73 0:4 net:[4026532541] /run/netns/e1 rw shared:3 - nsfs nsfs rw
75 73 0:4 net:[4026532542] /var/run/docker/netns/a\\040b rw - nsfs nsfs rw
24 18 0:19 /run/netns /run/netns rw shared:1 - overlay none rw
25 24 0:4 / /run/netns/g1 rw shared:2 - nsfs none rw
";
        assert_eq!(
            nsfs_mounts(text),
            vec![
                PathBuf::from("/run/netns/e1"),
                PathBuf::from("/var/run/docker/netns/a b"),
                PathBuf::from("/run/netns/g1"),
            ]
        );
    }

    #[test]
    fn the_skipped_namespace_is_not_listed() {
        let own = Netns::current().unwrap();
        let (dev, ino) = own.id().unwrap();
        let skip = NsId { dev, ino };
        assert!(visible_namespaces(skip).iter().all(|v| v.id != skip));
    }
}
