//! The cgroup hierarchy dockerd needs. A sandbox (gVisor) may start with
//! nothing mounted on /sys/fs/cgroup; dockerd then fails to start any
//! container. `docker up` mounts the cgroup v1 controllers dockerd uses
//! (under a tmpfs) when neither v2 nor those controllers are there, and
//! `docker down` unmounts exactly what it mounted.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC, CGROUP_SUPER_MAGIC};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The v1 controllers dockerd (through runc) needs to start containers.
pub const CONTROLLERS: &[&str] = &["cpu", "cpuacct", "cpuset", "memory", "devices", "pids"];

/// What is on /sys/fs/cgroup now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CgroupState {
    /// The unified (v2) hierarchy: dockerd is happy.
    Unified,
    /// Every v1 controller dockerd needs is mounted.
    V1Complete,
    /// Some are missing: these.
    Missing(Vec<String>),
}

/// Mounts made by `docker up`, innermost last (unmounted in reverse).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupMounts {
    pub mounts: Vec<PathBuf>,
}

fn fs_type(path: &Path) -> Option<nix::sys::statfs::FsType> {
    statfs(path).ok().map(|s| s.filesystem_type())
}

pub fn inspect(root: &Path) -> CgroupState {
    if fs_type(root) == Some(CGROUP2_SUPER_MAGIC) {
        return CgroupState::Unified;
    }
    let missing: Vec<String> = CONTROLLERS
        .iter()
        .filter(|c| fs_type(&root.join(c)) != Some(CGROUP_SUPER_MAGIC))
        .map(|c| c.to_string())
        .collect();
    if missing.is_empty() {
        CgroupState::V1Complete
    } else {
        CgroupState::Missing(missing)
    }
}

/// Mount the missing controllers (and a tmpfs under them when the root is
/// not one yet). On failure, whatever was mounted is unmounted again and
/// the error says which mount failed and why.
pub fn mount_missing(root: &Path, missing: &[String]) -> Result<CgroupMounts> {
    let mut made = CgroupMounts::default();
    let result = (|| {
        // With no controller mounted the root is a bare, read-only
        // directory (gVisor): a tmpfs goes there first to hold the
        // controllers' directories.
        if missing.len() == CONTROLLERS.len() {
            mount(
                Some("cgroup"),
                root,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("mode=755"),
            )
            .map_err(|e| mount_error(root, "tmpfs", e))?;
            made.mounts.push(root.to_path_buf());
        }
        for controller in missing {
            let dir = root.join(controller);
            std::fs::create_dir_all(&dir).map_err(|e| {
                Error::Permission(format!(
                    "cannot mount cgroups: create {}: {e}",
                    dir.display()
                ))
            })?;
            mount(
                Some("cgroup"),
                &dir,
                Some("cgroup"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some(controller.as_str()),
            )
            .map_err(|e| mount_error(&dir, "cgroup", e))?;
            made.mounts.push(dir);
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(made),
        Err(e) => {
            unmount(&made);
            Err(e)
        }
    }
}

fn mount_error(path: &Path, fstype: &str, errno: nix::errno::Errno) -> Error {
    let why = match errno {
        nix::errno::Errno::EPERM => " (needs CAP_SYS_ADMIN: run as root)",
        nix::errno::Errno::ENODEV => " (the kernel has no such filesystem or controller)",
        _ => "",
    };
    Error::Permission(format!(
        "cannot mount cgroups: mount -t {fstype} on {}: {}{why}",
        path.display(),
        errno.desc()
    ))
}

/// Unmount what `mount_missing` made, innermost first; errors are logged
/// (a mount already gone is fine).
pub fn unmount(made: &CgroupMounts) -> Vec<String> {
    let mut failures = Vec::new();
    for path in made.mounts.iter().rev() {
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => failures.push(format!("unmount {}: {}", path.display(), e.desc())),
        }
    }
    failures
}
