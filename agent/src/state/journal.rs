//! The endpoint journal, `endpoints.log`: one JSON line per change
//! (`{"put":ENDPOINT}` or `{"del":"ID"}`), each appended with a single
//! `write` on an O_APPEND file, replayed at start and compacted atomically.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::MutexGuard;

use serde::{Deserialize, Serialize};

use super::{Store, JOURNAL, JOURNAL_SLACK, LEGACY_ENDPOINTS};
use crate::error::{Error, Result};
use crate::model::Endpoint;

/// One journal line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub(super) enum JournalEntry {
    Put(Endpoint),
    Del(String),
}

/// The open journal and what it holds.
#[derive(Debug, Default)]
pub(super) struct Journal {
    /// Opened by `load` (appends before that go nowhere).
    file: Option<File>,
    /// The live records, as the lines that put them.
    live: HashMap<String, Vec<u8>>,
    lines: usize,
}

impl Store {
    pub(super) fn journal_path(&self) -> PathBuf {
        self.dir.join(JOURNAL)
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

    /// Replay the journal (and fold in per-file records of earlier
    /// versions), then open it compacted. Damaged lines become warnings.
    pub(super) fn load_endpoints(&self, warnings: &mut Vec<String>) -> Result<Vec<Endpoint>> {
        let mut replayed = replay_journal(&self.journal_path(), warnings)?;
        let legacy_dir = self.dir.join(LEGACY_ENDPOINTS);
        let legacy: Vec<Endpoint> = if legacy_dir.is_dir() {
            self.load_dir(LEGACY_ENDPOINTS, warnings, |_: &Endpoint, _: &Path| Ok(()))?
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
        let mut endpoints = Vec::with_capacity(replayed.len());
        let mut journal = self.journal();
        for (id, (ep, line)) in replayed {
            journal.live.insert(id, line);
            endpoints.push(ep);
        }
        self.compact(&mut journal)?;
        drop(journal);
        if legacy_dir.is_dir() {
            for file in legacy_files {
                let _ = std::fs::remove_file(file);
            }
            let _ = std::fs::remove_dir(&legacy_dir);
        }
        Ok(endpoints)
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

#[cfg(test)]
mod tests {
    use super::super::tests::{endpoint, tempdir};
    use super::*;

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
}
