//! Network records: `networks/NAME.json`, one file each, replaced
//! atomically; every record is validated on load with the API's rules.

use std::path::{Path, PathBuf};

use super::{Store, NETWORKS};
use crate::error::Result;
use crate::model::Network;

impl Store {
    fn network_path(&self, name: &str) -> PathBuf {
        self.dir.join(NETWORKS).join(format!("{name}.json"))
    }

    pub fn save_network(&self, net: &Network) -> Result<()> {
        self.write_json(&self.network_path(&net.name), net, self.fsync)
    }

    pub fn remove_network(&self, name: &str) -> Result<()> {
        self.remove(&self.network_path(name), self.fsync)
    }

    /// Every network record; invalid ones (damaged, edited, or written by
    /// something else) are moved aside with a warning naming the file and
    /// what is wrong, never trusted.
    pub(super) fn load_networks(&self, warnings: &mut Vec<String>) -> Result<Vec<Network>> {
        self.load_dir(NETWORKS, warnings, check_network)
    }
}

/// A record must be valid and stored under its own name.
fn check_network(net: &Network, path: &Path) -> std::result::Result<(), String> {
    net.validate().map_err(|e| e.to_string())?;
    let expected = format!("{}.json", net.name);
    if path
        .file_name()
        .is_some_and(|f| f.to_string_lossy() != expected)
    {
        return Err(format!("name {:?} does not match the file name", net.name));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{network, tempdir};
    use super::*;

    #[test]
    fn invalid_records_are_moved_aside_naming_file_and_field() {
        let dir = tempdir("invalid-records");
        let store = Store::open(&dir, false).unwrap();
        store.save_network(&network("good")).unwrap();
        // A gateway outside its subnet (once an IPAM underflow), a name
        // that escapes the directory, a name that is not the file's.
        let mut outside = network("outside");
        outside.gateway = "10.1.2.3".parse().unwrap();
        let mut escape = network("escape");
        escape.name = "../../x".into();
        let mut renamed = network("renamed");
        renamed.name = "other".into();
        for (file, net) in [
            ("outside", &outside),
            ("escape", &escape),
            ("renamed", &renamed),
        ] {
            let path = dir.join(NETWORKS).join(format!("{file}.json"));
            std::fs::write(&path, serde_json::to_vec(net).unwrap()).unwrap();
        }
        let loaded = store.load().unwrap();
        let names: Vec<&str> = loaded.networks.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["good"]);
        assert_eq!(loaded.warnings.len(), 3, "{:?}", loaded.warnings);
        let all = loaded.warnings.join("\n");
        assert!(
            all.contains("outside.json") && all.contains("gateway"),
            "{all}"
        );
        assert!(
            all.contains("escape.json") && all.contains("../../x"),
            "{all}"
        );
        assert!(
            all.contains("renamed.json") && all.contains("file name"),
            "{all}"
        );
        for file in ["outside", "escape", "renamed"] {
            assert!(dir.join(NETWORKS).join(format!("{file}.corrupt")).exists());
        }
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
