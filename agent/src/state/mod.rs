//! Persistent state under the state directory. Networks are one JSON file
//! each, replaced atomically (write a temporary file, fsync it, rename it
//! over the old one, fsync the directory), so a crash at any moment leaves
//! either the old or the new file, never a torn one.
//!
//! Endpoints are a journal, `endpoints.log`: one JSON line per change
//! (`{"put":ENDPOINT}` or `{"del":"ID"}`), each appended with a single
//! `write` on an O_APPEND file. A file per endpoint cost an ext4 inode
//! allocation per attach (0.15-0.3 ms, a third of the API's overhead at 1,000
//! endpoints). A kill -9 cannot split one `write`; a torn last line (only a
//! machine crash can make one) is ignored on replay. The journal is
//! compacted atomically, like a network file, at start and whenever it holds
//! more than twice the live records (plus 1,024 lines).
//!
//! Endpoint lines skip fsync by default (`fsync_endpoints`): an endpoint
//! cannot outlive the kernel that holds its veth and namespace, so its
//! record only has to survive the daemon (kill -9), which a write to the
//! page cache already guarantees; after a machine crash every endpoint is
//! gone anyway and reconciliation drops its record. With `fsync_endpoints`
//! every line is fdatasync'ed before the call returns. Networks (which do
//! outlive a reboot) are always written with both fsyncs.
//!
//! ```text
//! STATE_DIR/lock                 flock: one daemon per state directory
//! STATE_DIR/instance.json        {"tag":"3fa0"}: names this daemon's links
//! STATE_DIR/networks/NAME.json   model::Network       (networks.rs)
//! STATE_DIR/endpoints.log        journal of model::Endpoint (journal.rs)
//! ```

mod docker;
mod journal;
mod networks;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{Endpoint, Network};
use journal::Journal;

pub use journal::journaled_endpoint_ids;

const NETWORKS: &str = "networks";
/// Per-endpoint files of earlier versions, read once and folded into the
/// journal.
const LEGACY_ENDPOINTS: &str = "endpoints";
const JOURNAL: &str = "endpoints.log";
/// Compact when the journal has more lines than twice the live records
/// plus this.
const JOURNAL_SLACK: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Four hex digits in the names of this daemon's host links.
    pub tag: String,
}

/// Everything loaded from disk at start.
#[derive(Debug, Default)]
pub struct Loaded {
    pub networks: Vec<Network>,
    pub endpoints: Vec<Endpoint>,
    /// Files that could not be read, moved aside as `*.corrupt`.
    pub warnings: Vec<String>,
}

#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    fsync: bool,
    fsync_endpoints: bool,
    counter: AtomicU64,
    journal: Mutex<Journal>,
    _lock: Option<nix::fcntl::Flock<File>>,
}

impl Store {
    /// Open (creating) a state directory and take its lock.
    pub fn open(dir: &Path, fsync: bool) -> Result<Store> {
        for sub in ["", NETWORKS] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(|e| Error::state("create", &d, e))?;
        }
        let lock_path = dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| Error::state("open", &lock_path, e))?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| {
                Error::Conflict(format!(
                    "state directory {} is in use by another conductor-netd ({})",
                    dir.display(),
                    errno.desc()
                ))
            })?;
        Ok(Store {
            dir: dir.to_path_buf(),
            fsync,
            fsync_endpoints: false,
            counter: AtomicU64::new(0),
            journal: Mutex::default(),
            _lock: Some(lock),
        })
    }

    /// Also fsync endpoint records (see the module documentation).
    pub fn with_endpoint_fsync(mut self, on: bool) -> Store {
        self.fsync_endpoints = on && self.fsync;
        self
    }

    pub fn endpoint_fsync(&self) -> bool {
        self.fsync_endpoints
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// This daemon's instance, created on first use.
    pub fn instance(&self) -> Result<Instance> {
        let path = self.dir.join("instance.json");
        match std::fs::read(&path) {
            Ok(bytes) => {
                let inst: Instance = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::state("parse", &path, std::io::Error::other(e.to_string()))
                })?;
                if inst.tag.len() == 4 && inst.tag.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Ok(inst);
                }
                Err(Error::state(
                    "parse",
                    &path,
                    std::io::Error::other(format!("bad tag {:?}", inst.tag)),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let inst = Instance {
                    tag: format!("{:04x}", random_u16()),
                };
                self.write_json(&path, &inst, self.fsync)?;
                Ok(inst)
            }
            Err(e) => Err(Error::state("read", &path, e)),
        }
    }

    /// Read everything back (replay). Unreadable or invalid records are
    /// moved aside as `*.corrupt` and reported; unreadable journal lines are
    /// reported and dropped. Opens the journal, compacted.
    pub fn load(&self) -> Result<Loaded> {
        let mut loaded = Loaded::default();
        loaded.networks = self.load_networks(&mut loaded.warnings)?;
        loaded.endpoints = self.load_endpoints(&mut loaded.warnings)?;
        loaded.networks.sort_by(|a, b| a.name.cmp(&b.name));
        loaded.endpoints.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(loaded)
    }

    /// Every `*.json` record of a subdirectory that parses and passes
    /// `check`; the others are moved aside as `*.corrupt` with a warning.
    /// Stray temporary files (a crash between write and rename) go.
    fn load_dir<T: DeserializeOwned>(
        &self,
        sub: &str,
        warnings: &mut Vec<String>,
        check: impl Fn(&T, &Path) -> std::result::Result<(), String>,
    ) -> Result<Vec<T>> {
        let dir = self.dir.join(sub);
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::state("list", &dir, e))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::state("list", &dir, e))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with('.') && name.contains(".tmp") {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if !name.ends_with(".json") {
                continue;
            }
            let parsed = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<T>(&b).map_err(|e| e.to_string()))
                .and_then(|v| check(&v, &path).map(|()| v));
            match parsed {
                Ok(v) => out.push(v),
                Err(reason) => {
                    let aside = path.with_extension("corrupt");
                    let _ = std::fs::rename(&path, &aside);
                    warnings.push(format!(
                        "{}: {reason} (moved to {})",
                        path.display(),
                        aside.display()
                    ));
                }
            }
        }
        Ok(out)
    }

    fn write_json<T: Serialize>(&self, path: &Path, value: &T, fsync: bool) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(value)
            .map_err(|e| Error::Internal(format!("serialize {}: {e}", path.display())))?;
        self.write_atomic(path, &bytes, fsync)
    }

    /// Write `bytes` to `path` atomically (temp file, [fsync], rename,
    /// [fsync dir]).
    pub fn write_atomic(&self, path: &Path, bytes: &[u8], fsync: bool) -> Result<()> {
        let dir = path.parent().unwrap_or(&self.dir);
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let tmp = dir.join(format!(
            ".{file_name}.tmp-{}-{}",
            std::process::id(),
            self.counter.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(bytes)?;
            if fsync {
                f.sync_all()?;
            }
            drop(f);
            std::fs::rename(&tmp, path)?;
            if fsync {
                File::open(dir)?.sync_all()?;
            }
            Ok(())
        })();
        result.map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::state("write", path, e)
        })
    }

    fn remove(&self, path: &Path, fsync: bool) -> Result<()> {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::state("remove", path, e)),
        }
        if fsync {
            if let Some(dir) = path.parent() {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| Error::state("sync", dir, e))?;
            }
        }
        Ok(())
    }
}

fn random_u16() -> u16 {
    let mut buf = [0u8; 2];
    if let Ok(mut f) = File::open("/dev/urandom") {
        use std::io::Read;
        if f.read_exact(&mut buf).is_ok() {
            return u16::from_le_bytes(buf);
        }
    }
    // Fall back to time and pid: uniqueness between daemons only matters for
    // link names, which are also checked against the kernel.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (t ^ std::process::id()) as u16
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::model::{NsId, Target};

    pub(crate) fn tempdir(tag: &str) -> PathBuf {
        static N: AtomicU64 = AtomicU64::new(0);
        let d = std::env::temp_dir().join(format!(
            "conductor-netd-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    pub(super) fn network(name: &str) -> Network {
        Network {
            name: name.into(),
            bridge: format!("cn-{name}"),
            subnet: "10.89.0.0/24".parse().unwrap(),
            gateway: "10.89.0.1".parse().unwrap(),
            ipv6_subnet: None,
            ipv6_gateway: None,
            mtu: 1500,
            created: 1,
            internal: false,
        }
    }

    pub(super) fn endpoint(id: &str) -> Endpoint {
        Endpoint {
            id: id.into(),
            network: "a".into(),
            target: Target::Pid(42),
            netns_id: NsId { dev: 3, ino: 4 },
            ifname: "eth0".into(),
            host_ifname: id.into(),
            mac: "0a:58:0a:59:00:02".into(),
            ipv4: "10.89.0.2/24".parse().unwrap(),
            ipv6: None,
            default_route: true,
            created: 2,
            detaching: false,
        }
    }

    #[test]
    fn save_load_remove_replays() {
        let dir = tempdir("replay");
        let store = Store::open(&dir, true).unwrap();
        store.load().unwrap();
        store.save_network(&network("a")).unwrap();
        store.save_network(&network("b")).unwrap();
        store.save_endpoint(&endpoint("cn00011")).unwrap();
        let mut changed = network("a");
        changed.mtu = 9000;
        store.save_network(&changed).unwrap();
        store.remove_network("b").unwrap();
        store.remove_network("never-there").unwrap();

        let loaded = store.load().unwrap();
        assert_eq!(loaded.networks, vec![changed]);
        assert_eq!(loaded.endpoints, vec![endpoint("cn00011")]);
        assert!(loaded.warnings.is_empty());
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn torn_temp_files_are_ignored_and_corrupt_files_set_aside() {
        let dir = tempdir("torn");
        let store = Store::open(&dir, false).unwrap();
        store.load().unwrap();
        store.save_network(&network("a")).unwrap();
        // A crash between write and rename leaves only a temp file.
        std::fs::write(dir.join("networks/.b.json.tmp-1-1"), b"{\"na").unwrap();
        std::fs::write(dir.join("networks/c.json"), b"not json").unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.networks.len(), 1);
        assert_eq!(loaded.warnings.len(), 1);
        assert!(loaded.warnings[0].contains("c.json"));
        assert!(!dir.join("networks/.b.json.tmp-1-1").exists());
        assert!(dir.join("networks/c.corrupt").exists());
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn one_daemon_per_state_dir_and_a_stable_instance() {
        let dir = tempdir("lock");
        let store = Store::open(&dir, false).unwrap();
        let e = Store::open(&dir, false).unwrap_err();
        assert_eq!(e.code(), "conflict");
        let tag = store.instance().unwrap();
        assert_eq!(store.instance().unwrap(), tag);
        drop(store);
        let again = Store::open(&dir, false).unwrap();
        assert_eq!(again.instance().unwrap(), tag);
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
