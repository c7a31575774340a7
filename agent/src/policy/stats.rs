//! What a network's policy decided: counters per kind of decision, and
//! which rules denied how often (bounded: the first 256 rule names get a
//! counter each, the rest share one).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

const MAX_NAMED: usize = 256;
const OTHER: &str = "(other rules)";

#[derive(Debug, Default)]
pub struct NetworkStats {
    allowed: AtomicU64,
    denied: AtomicU64,
    dns_allowed: AtomicU64,
    dns_refused: AtomicU64,
    by_rule: Mutex<BTreeMap<String, u64>>,
}

/// The counters as shown by `policy stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsView {
    pub allowed: u64,
    pub denied: u64,
    pub dns_allowed: u64,
    pub dns_refused: u64,
    /// Denials (connections and DNS) by the rule that denied.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub denied_by_rule: BTreeMap<String, u64>,
}

impl NetworkStats {
    pub fn connection(&self, allowed: bool, rule: &str) {
        if allowed {
            self.allowed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.denied.fetch_add(1, Ordering::Relaxed);
            self.by_rule(rule);
        }
    }

    pub fn query(&self, allowed: bool, rule: &str) {
        if allowed {
            self.dns_allowed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.dns_refused.fetch_add(1, Ordering::Relaxed);
            self.by_rule(rule);
        }
    }

    fn by_rule(&self, rule: &str) {
        let mut m = self.by_rule.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(rule) {
            *n += 1;
        } else if m.len() < MAX_NAMED {
            m.insert(rule.to_string(), 1);
        } else {
            *m.entry(OTHER.to_string()).or_default() += 1;
        }
    }

    pub fn view(&self) -> StatsView {
        StatsView {
            allowed: self.allowed.load(Ordering::Relaxed),
            denied: self.denied.load(Ordering::Relaxed),
            dns_allowed: self.dns_allowed.load(Ordering::Relaxed),
            dns_refused: self.dns_refused.load(Ordering::Relaxed),
            denied_by_rule: self
                .by_rule
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}
