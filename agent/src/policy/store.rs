//! Every network's policy, kept in `<state dir>/policies.json` and in a
//! snapshot that deciders read without waiting on writers. A change is
//! checked whole (every rule parses) before anything is written; a write
//! that fails leaves the old policy in force. Networks are told apart by
//! name (conductor networks and Docker's share the name space); the
//! deciders that only see a client address find its network through the
//! subnets the egress backend registered.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::compiled::{Compiled, PolicySpec};
use super::rule::{self, Rule};
use super::stats::{NetworkStats, StatsView};
use super::PolicyError;

/// At most this many rules per network (the API's body limit is lower;
/// the state file takes this many).
pub const MAX_RULES: usize = 100_000;

const FILE: &str = "policies.json";

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    #[serde(default)]
    networks: BTreeMap<String, PolicySpec>,
}

#[derive(Default)]
struct Snapshot {
    policies: HashMap<String, Arc<Compiled>>,
    uses_names: bool,
}

/// The policies of every network, and what they decided.
pub struct Policies {
    path: Option<PathBuf>,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Network subnets (from the egress backend), longest prefix first.
    subnets: RwLock<Arc<Vec<(IpNet, String)>>>,
    stats: RwLock<HashMap<String, Arc<NetworkStats>>>,
    /// Serialises changes (read-modify-write of the file).
    writer: tokio::sync::Mutex<()>,
    changed: broadcast::Sender<String>,
    /// Puts a changed policy into the kernel's rules before the change is
    /// answered (set by the egress backend).
    applier: std::sync::OnceLock<Arc<dyn PolicyApplier>>,
}

/// Applies a network's policy where it is enforced outside this store (the
/// kernel's rules). A change is answered after `apply` ran, so it holds for
/// every connection made after the answer.
pub trait PolicyApplier: Send + Sync {
    fn apply<'a>(
        &'a self,
        network: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

/// Network names: what conductor and Docker accept, nothing that could
/// smuggle a path or a rule.
pub fn check_network(name: &str) -> Result<(), PolicyError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(PolicyError::BadNetwork(name.to_string()))
    }
}

fn compile(spec: PolicySpec) -> Result<Compiled, PolicyError> {
    if spec.rules.len() > MAX_RULES {
        return Err(PolicyError::TooMany {
            count: spec.rules.len(),
            max: MAX_RULES,
        });
    }
    Compiled::new(spec).map_err(PolicyError::Rule)
}

/// What `policy show` prints for one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyView {
    pub network: String,
    #[serde(flatten)]
    pub spec: PolicySpec,
    pub stats: StatsView,
}

impl Policies {
    /// In memory only (tests, benchmarks).
    pub fn in_memory() -> Policies {
        Policies {
            path: None,
            snapshot: RwLock::default(),
            subnets: RwLock::default(),
            stats: RwLock::default(),
            writer: tokio::sync::Mutex::new(()),
            changed: broadcast::channel(64).0,
            applier: std::sync::OnceLock::new(),
        }
    }

    /// Set (once) what applies a change before it is answered; without it
    /// changes are only announced to `subscribe`rs.
    pub fn set_applier(&self, applier: Arc<dyn PolicyApplier>) {
        let _ = self.applier.set(applier);
    }

    /// Load `<dir>/policies.json` (absent: every network open). A file
    /// that does not parse is an error: starting with no policy would
    /// silently open what was locked.
    pub fn open(dir: &Path) -> Result<Policies, PolicyError> {
        let path = dir.join(FILE);
        let file: File = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| PolicyError::State {
                path: path.clone(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => File::default(),
            Err(e) => {
                return Err(PolicyError::State {
                    path,
                    reason: e.to_string(),
                })
            }
        };
        let mut policies = HashMap::new();
        for (name, spec) in file.networks {
            check_network(&name)?;
            let c = compile(spec).map_err(|e| PolicyError::State {
                path: path.clone(),
                reason: format!("network {name:?}: {e}"),
            })?;
            policies.insert(name, Arc::new(c));
        }
        let p = Policies {
            path: Some(path),
            ..Policies::in_memory()
        };
        p.install(policies);
        Ok(p)
    }

    /// Read the file again and put what it says in force (for processes
    /// that share the file with another writer, like the test harness).
    pub fn reload(&self) -> Result<(), PolicyError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let fresh = Policies::open(dir)?;
        let policies = read(&fresh.snapshot).policies.clone();
        let names: Vec<String> = policies.keys().cloned().collect();
        self.install(policies);
        for n in names {
            let _ = self.changed.send(n);
        }
        Ok(())
    }

    fn install(&self, policies: HashMap<String, Arc<Compiled>>) {
        let uses_names = policies.values().any(|c| c.uses_names());
        *write(&self.snapshot) = Arc::new(Snapshot {
            policies,
            uses_names,
        });
    }

    /// Network names whose policy changed, as they change.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.changed.subscribe()
    }

    /// The compiled policy of a network (`None`: open, nothing set).
    pub fn get(&self, network: &str) -> Option<Arc<Compiled>> {
        read(&self.snapshot).policies.get(network).cloned()
    }

    pub fn uses_names(&self) -> bool {
        read(&self.snapshot).uses_names
    }

    pub fn view(&self, network: &str) -> Result<PolicyView, PolicyError> {
        check_network(network)?;
        Ok(PolicyView {
            network: network.to_string(),
            spec: self
                .get(network)
                .map(|c| c.spec().clone())
                .unwrap_or_default(),
            stats: self.stats_of(network).view(),
        })
    }

    /// Every network with a policy or with decisions counted.
    pub fn list(&self) -> Vec<PolicyView> {
        let mut names: Vec<String> = read(&self.snapshot).policies.keys().cloned().collect();
        names.extend(read(&self.stats).keys().cloned());
        names.sort();
        names.dedup();
        names.iter().filter_map(|n| self.view(n).ok()).collect()
    }

    /// Replace a network's policy (the default, open with no rules,
    /// removes it).
    pub async fn set(&self, network: &str, spec: PolicySpec) -> Result<PolicyView, PolicyError> {
        check_network(network)?;
        let _w = self.writer.lock().await;
        let compiled = compile(spec)?;
        self.commit(network, compiled).await?;
        self.view(network)
    }

    /// Append rules (each must parse; a rule already there is not added
    /// twice).
    pub async fn add(&self, network: &str, rules: &[String]) -> Result<PolicyView, PolicyError> {
        check_network(network)?;
        rule::parse_all(rules).map_err(PolicyError::Rule)?;
        let _w = self.writer.lock().await;
        let mut spec = self
            .get(network)
            .map(|c| c.spec().clone())
            .unwrap_or_default();
        let mut have: Vec<Rule> = rule::parse_all(&spec.rules).map_err(PolicyError::Rule)?;
        for r in rules {
            let parsed: Rule = r.parse().map_err(|e| {
                PolicyError::Rule(rule::ListError {
                    index: 0,
                    text: r.clone(),
                    error: e,
                })
            })?;
            if !have.contains(&parsed) {
                spec.rules.push(parsed.to_string());
                have.push(parsed);
            }
        }
        let compiled = compile(spec)?;
        self.commit(network, compiled).await?;
        self.view(network)
    }

    /// Remove rules (compared as parsed: `deny  Example.COM.` removes
    /// `deny example.com`); one that is not there is an error and nothing
    /// is removed.
    pub async fn remove(&self, network: &str, rules: &[String]) -> Result<PolicyView, PolicyError> {
        check_network(network)?;
        let gone = rule::parse_all(rules).map_err(PolicyError::Rule)?;
        let _w = self.writer.lock().await;
        let current = self.get(network);
        let mut spec = current
            .as_ref()
            .map(|c| c.spec().clone())
            .unwrap_or_default();
        let have: Vec<Rule> = current.map(|c| c.rules().to_vec()).unwrap_or_default();
        for (r, text) in gone.iter().zip(rules) {
            if !have.contains(r) {
                return Err(PolicyError::NoSuchRule {
                    network: network.to_string(),
                    rule: text.clone(),
                });
            }
        }
        spec.rules = spec
            .rules
            .into_iter()
            .zip(have)
            .filter(|(_, r)| !gone.contains(r))
            .map(|(t, _)| t)
            .collect();
        let compiled = compile(spec)?;
        self.commit(network, compiled).await?;
        self.view(network)
    }

    /// Write the file with the new policy, then put it in force.
    async fn commit(&self, network: &str, compiled: Compiled) -> Result<(), PolicyError> {
        let mut next = read(&self.snapshot).policies.clone();
        if compiled.spec() == &PolicySpec::default() {
            next.remove(network);
        } else {
            next.insert(network.to_string(), Arc::new(compiled));
        }
        if let Some(path) = &self.path {
            let file = File {
                networks: next
                    .iter()
                    .map(|(k, v)| (k.clone(), v.spec().clone()))
                    .collect(),
            };
            let bytes = serde_json::to_vec_pretty(&file).map_err(|e| PolicyError::State {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let path = path.clone();
            tokio::task::spawn_blocking(move || write_atomic(&path, &bytes))
                .await
                .map_err(|e| PolicyError::State {
                    path: PathBuf::from(FILE),
                    reason: format!("writer task: {e}"),
                })??;
        }
        self.install(next);
        tracing::info!(network, "egress policy changed");
        match self.applier.get() {
            Some(applier) => applier.apply(network).await,
            None => {
                let _ = self.changed.send(network.to_string());
            }
        }
        Ok(())
    }

    /// Tell which network a client address belongs to (the egress backend
    /// calls this for every network it enables).
    pub fn register_network(&self, network: &str, subnets: &[IpNet]) {
        let mut next: Vec<(IpNet, String)> = read(&self.subnets)
            .iter()
            .filter(|(_, n)| n != network)
            .cloned()
            .collect();
        next.extend(subnets.iter().map(|s| (*s, network.to_string())));
        next.sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
        *write(&self.subnets) = Arc::new(next);
    }

    pub fn unregister_network(&self, network: &str) {
        self.register_network(network, &[]);
    }

    /// The network a client address is on (networks are few: a scan).
    pub fn network_of(&self, ip: IpAddr) -> Option<String> {
        let ip = ip.to_canonical();
        read(&self.subnets)
            .iter()
            .find(|(net, _)| net.contains(&ip))
            .map(|(_, n)| n.clone())
    }

    pub fn stats_of(&self, network: &str) -> Arc<NetworkStats> {
        if let Some(s) = read(&self.stats).get(network) {
            return s.clone();
        }
        write(&self.stats)
            .entry(network.to_string())
            .or_default()
            .clone()
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PolicyError> {
    let state = |e: std::io::Error| PolicyError::State {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{FILE}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(state)
}
