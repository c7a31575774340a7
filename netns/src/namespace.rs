//! Network namespaces, compatible with iproute2's named namespaces
//! (a bind mount of the namespace file under /run/netns), and running code
//! inside one on a dedicated OS thread.
//!
//! `setns` changes the calling *thread*. Doing it on a tokio worker would
//! silently move every task later scheduled on that worker into the other
//! namespace, so every entry happens on a short-lived thread of our own.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::error::{errno_of, Error, Result};

/// Where iproute2 keeps named network namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// An open network namespace. Holding it keeps the namespace alive.
#[derive(Debug)]
pub struct Netns {
    file: File,
    path: PathBuf,
    name: Option<String>,
}

/// Names of named namespaces (files under /run/netns), as iproute2 takes them.
pub fn validate_netns_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "must not be empty"
    } else if name.len() > 255 {
        "longer than 255 bytes"
    } else if name == "." || name == ".." {
        "reserved name"
    } else if name.contains('/') {
        "contains '/'"
    } else if name.contains('\0') || name.chars().any(char::is_whitespace) {
        "contains whitespace or NUL"
    } else {
        return Ok(());
    };
    Err(Error::invalid("namespace name", name, reason))
}

/// iproute2 makes the run dir a shared mount so that namespaces created later
/// propagate into mount namespaces made after it (e.g. `ip netns exec`).
fn prepare_run_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::os("create directory", dir.display().to_string(), errno_of(&e)))?;
    let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
    match mount(None::<&str>, dir, Some("none"), shared, None::<&str>) {
        Ok(()) => Ok(()),
        Err(Errno::EINVAL) => {
            // Not a mount point yet: bind it onto itself, then share it.
            mount(
                Some(dir),
                dir,
                Some("none"),
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| Error::os("bind-mount", dir.display().to_string(), e))?;
            mount(None::<&str>, dir, Some("none"), shared, None::<&str>)
                .map_err(|e| Error::os("make shared", dir.display().to_string(), e))
        }
        Err(e) => Err(Error::os("make shared", dir.display().to_string(), e)),
    }
}

impl Netns {
    /// Create a named namespace under /run/netns (like `ip netns add NAME`).
    pub fn create(name: &str) -> Result<Netns> {
        validate_netns_name(name)?;
        let dir = Path::new(NETNS_RUN_DIR);
        prepare_run_dir(dir)?;
        let path = dir.join(name);
        let object = format!("namespace {name:?}");
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&path)
            .map_err(|e| Error::os("create", object.clone(), errno_of(&e)))?;

        let target = path.clone();
        let bound = std::thread::scope(|s| {
            s.spawn(move || -> std::result::Result<(), Errno> {
                unshare(CloneFlags::CLONE_NEWNET)?;
                let own = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
                mount(
                    Some(own.as_str()),
                    &target,
                    Some("none"),
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
            })
            .join()
            .unwrap_or(Err(Errno::EIO))
        });
        if let Err(errno) = bound {
            let _ = std::fs::remove_file(&path);
            return Err(Error::os("create", object, errno));
        }
        match Self::open_file(&path, Some(name.to_string())) {
            Ok(ns) => Ok(ns),
            Err(e) => {
                let _ = umount2(&path, MntFlags::MNT_DETACH);
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// Open a named namespace (one under /run/netns).
    pub fn open(name: &str) -> Result<Netns> {
        validate_netns_name(name)?;
        Self::open_file(&Path::new(NETNS_RUN_DIR).join(name), Some(name.to_string()))
    }

    /// Open a namespace by the path of its namespace file.
    pub fn open_path(path: impl AsRef<Path>) -> Result<Netns> {
        Self::open_file(path.as_ref(), None)
    }

    /// Open the namespace a process lives in.
    pub fn open_pid(pid: i32) -> Result<Netns> {
        if pid <= 0 {
            return Err(Error::invalid("pid", pid.to_string(), "must be positive"));
        }
        let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
        Self::open_file(&path, None).map_err(|e| match e.errno() {
            Some(errno) => Error::os("open namespace of", format!("pid {pid}"), errno),
            None => e,
        })
    }

    /// The namespace of the calling thread.
    pub fn current() -> Result<Netns> {
        let path = PathBuf::from(format!("/proc/self/task/{}/ns/net", nix::unistd::gettid()));
        Self::open_file(&path, None)
    }

    fn open_file(path: &Path, name: Option<String>) -> Result<Netns> {
        let object = match &name {
            Some(n) => format!("namespace {n:?}"),
            None => format!("namespace {}", path.display()),
        };
        // O_NONBLOCK: a FIFO (or a device) given as a namespace path must not
        // block the caller until someone opens its other end.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .map_err(|e| Error::os("open", object.clone(), errno_of(&e)))?;
        let ns = Netns {
            file,
            path: path.to_path_buf(),
            name,
        };
        let fstype = nix::sys::statfs::fstatfs(&ns.file)
            .map_err(|e| Error::os("stat", object.clone(), e))?
            .filesystem_type();
        let nsfs = fstype == nix::sys::statfs::NSFS_MAGIC;
        if !nsfs && fstype != PROC_SUPER_MAGIC && ns.name.is_some() {
            // A plain file under /run/netns: `ip netns add` has made it and
            // not yet bound the namespace onto it, or `ip netns delete` has
            // unmounted it and not yet removed it. Busy, as the kernel's
            // EACCES for a daemon without CAP_DAC_OVERRIDE says (the file is
            // mode 0); gVisor lets root open it.
            return Err(Error::os("open", object, Errno::EBUSY));
        }
        let network = match crate::sys::namespace_type(ns.file.as_fd()) {
            Ok(kind) => kind == libc::CLONE_NEWNET,
            // gVisor answers ENOTTY for every file; its namespace files are
            // on nsfs, plain procfs files (/proc/self/status) are not.
            Err(Errno::ENOTTY) => nsfs,
            Err(e) => return Err(Error::os("identify", object, e)),
        };
        if !network {
            return Err(Error::invalid(
                "namespace path",
                path.display().to_string(),
                "not a network namespace file (such as /proc/PID/ns/net or /run/netns/NAME)",
            ));
        }
        Ok(ns)
    }

    /// Delete a named namespace (like `ip netns delete NAME`). The namespace
    /// itself lives on while any process or open handle still holds it.
    pub fn delete(name: &str) -> Result<()> {
        validate_netns_name(name)?;
        let path = Path::new(NETNS_RUN_DIR).join(name);
        let object = format!("namespace {name:?}");
        if !path.exists() {
            return Err(Error::os("delete", object, Errno::ENOENT));
        }
        match umount2(&path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(Errno::EINVAL) => {}
            Err(e) => return Err(Error::os("unmount", object, e)),
        }
        std::fs::remove_file(&path).map_err(|e| Error::os("delete", object, errno_of(&e)))
    }

    /// Names of the namespaces under /run/netns.
    pub fn list() -> Result<Vec<String>> {
        let entries = match std::fs::read_dir(NETNS_RUN_DIR) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::os("list", NETNS_RUN_DIR, errno_of(&e))),
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Run `f` on a fresh OS thread that has entered this namespace.
    pub fn run<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let fd = self.file.as_fd();
        std::thread::scope(|s| {
            s.spawn(move || {
                setns(fd, CloneFlags::CLONE_NEWNET)
                    .map_err(|e| Error::os("enter", self.describe(), e))?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| {
                Err(Error::protocol(
                    "run in",
                    self.describe(),
                    "the namespace thread panicked",
                ))
            })
        })
    }

    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// (device, inode) of the namespace: equal for two handles of the same one.
    pub fn id(&self) -> Result<(u64, u64)> {
        let meta = self
            .file
            .metadata()
            .map_err(|e| Error::os("stat", self.describe(), errno_of(&e)))?;
        Ok((meta.dev(), meta.ino()))
    }

    /// A human-readable name for errors and logs.
    pub fn describe(&self) -> String {
        match &self.name {
            Some(n) => format!("namespace {n:?}"),
            None => format!("namespace {}", self.path.display()),
        }
    }

    pub fn try_clone(&self) -> Result<Netns> {
        Ok(Netns {
            file: self
                .file
                .try_clone()
                .map_err(|e| Error::os("duplicate", self.describe(), errno_of(&e)))?,
            path: self.path.clone(),
            name: self.name.clone(),
        })
    }
}

/// gVisor serves namespace files from procfs rather than nsfs.
const PROC_SUPER_MAGIC: nix::sys::statfs::FsType = nix::sys::statfs::PROC_SUPER_MAGIC;

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl AsRawFd for Netns {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names_are_validated() {
        for bad in ["", "a/b", ".", "..", "a b"] {
            let err = Netns::open(bad).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidInput, "{bad:?}");
            assert!(err.to_string().contains(&format!("{bad:?}")));
        }
    }

    #[test]
    fn missing_pid_is_not_found() {
        let err = Netns::open_pid(i32::MAX).unwrap_err();
        assert!(err.is_not_found(), "{err}");
        assert!(err.to_string().contains(&i32::MAX.to_string()));
        assert!(Netns::open_pid(-4).is_err());
    }

    #[test]
    fn current_namespace_opens() {
        let ns = Netns::current().unwrap();
        let again = Netns::current().unwrap();
        assert_eq!(ns.id().unwrap(), again.id().unwrap());
    }
}
