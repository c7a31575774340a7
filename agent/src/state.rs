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
//! STATE_DIR/networks/NAME.json   model::Network
//! STATE_DIR/endpoints.log        journal of model::Endpoint
//! ```

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{Endpoint, Network};

const NETWORKS: &str = "networks";
/// Per-endpoint files of earlier versions, read once and folded into the
/// journal.
const LEGACY_ENDPOINTS: &str = "endpoints";
const JOURNAL: &str = "endpoints.log";
/// Compact when the journal has more lines than twice the live records
/// plus this.
const JOURNAL_SLACK: usize = 1024;

/// One journal line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
enum JournalEntry {
    Put(Endpoint),
    Del(String),
}

/// The open journal and what it holds.
#[derive(Debug, Default)]
struct Journal {
    /// Opened by `load` (appends before that go nowhere).
    file: Option<File>,
    /// The live records, as the lines that put them.
    live: HashMap<String, Vec<u8>>,
    lines: usize,
}

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

    fn network_path(&self, name: &str) -> PathBuf {
        self.dir.join(NETWORKS).join(format!("{name}.json"))
    }

    fn journal_path(&self) -> PathBuf {
        self.dir.join(JOURNAL)
    }

    pub fn save_network(&self, net: &Network) -> Result<()> {
        self.write_json(&self.network_path(&net.name), net, self.fsync)
    }

    pub fn remove_network(&self, name: &str) -> Result<()> {
        self.remove(&self.network_path(name), self.fsync)
    }

    pub fn save_endpoint(&self, ep: &Endpoint) -> Result<()> {
        let line = journal_line(&JournalEntry::Put(ep.clone()))?;
        let mut journal = self.journal();
        self.append(&mut journal, &line)?;
        journal.live.insert(ep.id.clone(), line);
        self.maybe_compact(&mut journal)
    }

    pub fn remove_endpoint(&self, id: &str) -> Result<()> {
        let mut journal = self.journal();
        if !journal.live.contains_key(id) {
            return Ok(());
        }
        let line = journal_line(&JournalEntry::Del(id.to_string()))?;
        self.append(&mut journal, &line)?;
        journal.live.remove(id);
        self.maybe_compact(&mut journal)
    }

    fn journal(&self) -> MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One `write` of one whole line (O_APPEND: never interleaved).
    fn append(&self, journal: &mut Journal, line: &[u8]) -> Result<()> {
        let path = self.journal_path();
        let Some(file) = journal.file.as_mut() else {
            return Err(Error::Internal(
                "endpoint journal written before the state was loaded".into(),
            ));
        };
        let written = file
            .write(line)
            .map_err(|e| Error::state("append to", &path, e))?;
        if written != line.len() {
            // A short write (disk full): the torn line is ignored on replay,
            // and compaction rewrites the journal without it.
            return Err(Error::state(
                "append to",
                &path,
                std::io::Error::other(format!("short write ({written} of {} bytes)", line.len())),
            ));
        }
        if self.fsync_endpoints {
            file.sync_data()
                .map_err(|e| Error::state("sync", &path, e))?;
        }
        journal.lines += 1;
        Ok(())
    }

    fn maybe_compact(&self, journal: &mut Journal) -> Result<()> {
        if journal.lines > 2 * journal.live.len() + JOURNAL_SLACK {
            self.compact(journal)?;
        }
        Ok(())
    }

    /// Rewrite the journal as just its live records, atomically.
    fn compact(&self, journal: &mut Journal) -> Result<()> {
        let path = self.journal_path();
        let mut ids: Vec<&String> = journal.live.keys().collect();
        ids.sort();
        let mut bytes = Vec::new();
        for id in ids {
            bytes.extend_from_slice(&journal.live[id]);
        }
        // Atomic replace, always with fsync: a machine crash must not lose
        // the journal it replaces.
        self.write_atomic(&path, &bytes, self.fsync)?;
        let file = OpenOptions::new()
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::state("open", &path, e))?;
        journal.file = Some(file);
        journal.lines = journal.live.len();
        Ok(())
    }

    /// Read everything back (replay). Stray temporary files are removed;
    /// unreadable files are renamed `*.corrupt` and reported; unreadable
    /// journal lines are reported and dropped. Opens the journal, compacted.
    pub fn load(&self) -> Result<Loaded> {
        let mut loaded = Loaded::default();
        loaded.networks = self.load_dir(NETWORKS, &mut loaded.warnings)?;
        let mut replayed = replay_journal(&self.journal_path(), &mut loaded.warnings)?;
        let legacy_dir = self.dir.join(LEGACY_ENDPOINTS);
        let legacy: Vec<Endpoint> = if legacy_dir.is_dir() {
            self.load_dir(LEGACY_ENDPOINTS, &mut loaded.warnings)?
        } else {
            Vec::new()
        };
        let legacy_files: Vec<PathBuf> = legacy
            .iter()
            .map(|ep| legacy_dir.join(format!("{}.json", ep.id)))
            .collect();
        for ep in legacy {
            let line = journal_line(&JournalEntry::Put(ep.clone()))?;
            replayed.insert(ep.id.clone(), (ep, line));
        }
        let mut journal = self.journal();
        for (id, (ep, line)) in replayed {
            journal.live.insert(id, line);
            loaded.endpoints.push(ep);
        }
        self.compact(&mut journal)?;
        drop(journal);
        if legacy_dir.is_dir() {
            for file in legacy_files {
                let _ = std::fs::remove_file(file);
            }
            let _ = std::fs::remove_dir(&legacy_dir);
        }
        loaded.networks.sort_by(|a, b| a.name.cmp(&b.name));
        loaded.endpoints.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(loaded)
    }

    fn load_dir<T: DeserializeOwned>(
        &self,
        sub: &str,
        warnings: &mut Vec<String>,
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
                .and_then(|b| serde_json::from_slice::<T>(&b).map_err(|e| e.to_string()));
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

/// The live endpoints of a journal, each with the line that put it.
fn replay_journal(
    path: &Path,
    warnings: &mut Vec<String>,
) -> Result<HashMap<String, (Endpoint, Vec<u8>)>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::state("read", path, e)),
    };
    let mut live = HashMap::new();
    for (number, line) in bytes.split_inclusive(|b| *b == b'\n').enumerate() {
        let number = number + 1;
        // Only the last line can lack its end: a write torn by a machine crash.
        let complete = line.ends_with(b"\n");
        match serde_json::from_slice::<JournalEntry>(line) {
            Ok(_) if !complete => {
                warnings.push(format!(
                    "{}: line {number} has no end (dropped)",
                    path.display()
                ));
            }
            Ok(JournalEntry::Put(ep)) => {
                live.insert(ep.id.clone(), (ep, line.to_vec()));
            }
            Ok(JournalEntry::Del(id)) => {
                live.remove(&id);
            }
            // A torn tail is expected after a machine crash; only damage
            // elsewhere is reported.
            Err(e) if complete => {
                warnings.push(format!("{}: line {number}: {e} (dropped)", path.display()));
            }
            Err(_) => {}
        }
    }
    Ok(live)
}

/// The ids of the endpoints a state directory's journal holds, sorted; read
/// without the lock, for tests and tools (a running daemon may append).
pub fn journaled_endpoint_ids(state_dir: &Path) -> Result<Vec<String>> {
    let mut ids: Vec<String> = replay_journal(&state_dir.join(JOURNAL), &mut Vec::new())?
        .into_keys()
        .collect();
    ids.sort();
    Ok(ids)
}

fn journal_line(entry: &JournalEntry) -> Result<Vec<u8>> {
    let mut line = serde_json::to_vec(entry)
        .map_err(|e| Error::Internal(format!("serialize journal entry: {e}")))?;
    line.push(b'\n');
    Ok(line)
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
mod tests {
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

    fn network(name: &str) -> Network {
        Network {
            name: name.into(),
            bridge: format!("cn-{name}"),
            subnet: "10.89.0.0/24".parse().unwrap(),
            gateway: "10.89.0.1".parse().unwrap(),
            ipv6_subnet: None,
            ipv6_gateway: None,
            mtu: 1500,
            created: 1,
        }
    }

    fn endpoint(id: &str) -> Endpoint {
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
    fn journal_replays_puts_and_dels_and_compacts() {
        let dir = tempdir("journal");
        let store = Store::open(&dir, false).unwrap();
        store.load().unwrap();
        store.save_endpoint(&endpoint("cn1")).unwrap();
        store.save_endpoint(&endpoint("cn2")).unwrap();
        let mut moved = endpoint("cn1");
        moved.detaching = true;
        store.save_endpoint(&moved).unwrap();
        store.remove_endpoint("cn2").unwrap();
        store.remove_endpoint("never-there").unwrap();
        drop(store);
        let store = Store::open(&dir, false).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.endpoints, vec![moved.clone()]);
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        // Compacted at load: one line per live record.
        let text = std::fs::read_to_string(dir.join(JOURNAL)).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        // Churn far past the slack stays bounded.
        for i in 0..3 * JOURNAL_SLACK {
            let id = format!("cx{i}");
            store.save_endpoint(&endpoint(&id)).unwrap();
            store.remove_endpoint(&id).unwrap();
        }
        let lines = std::fs::read_to_string(dir.join(JOURNAL))
            .unwrap()
            .lines()
            .count();
        assert!(lines <= 2 + JOURNAL_SLACK + 1, "{lines} lines");
        drop(store);
        let store = Store::open(&dir, false).unwrap();
        assert_eq!(store.load().unwrap().endpoints, vec![moved]);
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn torn_journal_tail_is_dropped_and_damage_reported() {
        let dir = tempdir("journal-torn");
        std::fs::create_dir_all(&dir).unwrap();
        let mut text =
            String::from_utf8(journal_line(&JournalEntry::Put(endpoint("cn1"))).unwrap()).unwrap();
        text.push_str("garbage\n");
        text.push_str(
            &String::from_utf8(journal_line(&JournalEntry::Put(endpoint("cn2"))).unwrap()).unwrap(),
        );
        text.push_str("{\"put\":{\"id\":\"cn3\"");
        std::fs::write(dir.join(JOURNAL), text).unwrap();
        let store = Store::open(&dir, false).unwrap();
        let loaded = store.load().unwrap();
        let ids: Vec<&str> = loaded.endpoints.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["cn1", "cn2"]);
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
        assert!(
            loaded.warnings[0].contains("line 2"),
            "{:?}",
            loaded.warnings
        );
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn legacy_endpoint_files_fold_into_the_journal() {
        let dir = tempdir("legacy");
        std::fs::create_dir_all(dir.join(LEGACY_ENDPOINTS)).unwrap();
        std::fs::write(
            dir.join(LEGACY_ENDPOINTS).join("cn7.json"),
            serde_json::to_vec(&endpoint("cn7")).unwrap(),
        )
        .unwrap();
        let store = Store::open(&dir, false).unwrap();
        assert_eq!(store.load().unwrap().endpoints, vec![endpoint("cn7")]);
        assert!(!dir.join(LEGACY_ENDPOINTS).exists());
        drop(store);
        let store = Store::open(&dir, false).unwrap();
        assert_eq!(store.load().unwrap().endpoints, vec![endpoint("cn7")]);
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
