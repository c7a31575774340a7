//! The record table: per scope, endpoints with their names and addresses.
//! Updated in place under a short write lock, so an update is visible to
//! the very next query (no rebuild, no reload, no socket touched).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use hickory_proto::rr::Name;

use crate::error::{Error, Result};
use crate::names;
use crate::policy::{PolicyQuery, QueryPolicy, Verdict};
use crate::scopes::{check_id, ScopeId};

/// One endpoint (a container on one network) as the daemon describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointRecord {
    /// The container's name; also what PTR answers carry.
    pub name: String,
    /// Other names on this network: `--network-alias`, the Compose service
    /// name, a short container id. Several endpoints may share one (a
    /// scaled service): the name then has all their addresses.
    pub aliases: Vec<String>,
    /// IPv4 addresses on this network.
    pub ipv4: Vec<Ipv4Addr>,
    /// IPv6 addresses on this network.
    pub ipv6: Vec<Ipv6Addr>,
}

/// Which addresses a lookup wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    V4,
    V6,
    Both,
}

/// The outcome of a name lookup in a client's scopes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NameLookup {
    /// Addresses of the wanted family, from the first scope that has some.
    Found(Vec<IpAddr>),
    /// The name is local but has no address of the wanted family: answer
    /// NOERROR with no records (Docker's "ipv6Miss"), never forward.
    NoData,
    /// Not a local name.
    NotLocal,
}

/// Seeded per process; keys are inserted by the daemon only, so the cheap
/// hash cannot be steered into long chains by clients.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

struct StoredEndpoint {
    id: Box<str>,
    name: Box<str>,
    keys: Vec<Box<str>>,
    ipv4: Vec<Ipv4Addr>,
    ipv6: Vec<Ipv6Addr>,
}

#[derive(Default)]
struct Scope {
    /// The network's name, for `name.<network>` lookups.
    domain: Option<Box<str>>,
    policy: Option<Arc<dyn QueryPolicy>>,
    endpoints: Map<Box<str>, Arc<StoredEndpoint>>,
    /// Name or alias -> endpoints carrying it.
    names: Map<Box<str>, Vec<Arc<StoredEndpoint>>>,
    /// Address -> endpoint, for PTR.
    addrs: Map<IpAddr, Arc<StoredEndpoint>>,
}

impl Scope {
    fn is_empty(&self) -> bool {
        self.endpoints.is_empty() && self.domain.is_none() && self.policy.is_none()
    }

    fn unlink(&mut self, endpoint: &Arc<StoredEndpoint>) {
        for key in &endpoint.keys {
            if let Some(carriers) = self.names.get_mut(key) {
                carriers.retain(|e| !Arc::ptr_eq(e, endpoint));
                if carriers.is_empty() {
                    self.names.remove(key);
                }
            }
        }
        let addrs = endpoint.ipv4.iter().map(|a| IpAddr::V4(*a));
        for addr in addrs.chain(endpoint.ipv6.iter().map(|a| IpAddr::V6(*a))) {
            if self
                .addrs
                .get(&addr)
                .is_some_and(|e| Arc::ptr_eq(e, endpoint))
            {
                self.addrs.remove(&addr);
            }
        }
    }

    fn link(&mut self, endpoint: &Arc<StoredEndpoint>) {
        for key in &endpoint.keys {
            self.names
                .entry(key.clone())
                .or_default()
                .push(endpoint.clone());
        }
        let addrs = endpoint.ipv4.iter().map(|a| IpAddr::V4(*a));
        for addr in addrs.chain(endpoint.ipv6.iter().map(|a| IpAddr::V6(*a))) {
            self.addrs.insert(addr, endpoint.clone());
        }
    }

    /// Addresses of `key` in this scope: `None` if the name is not here.
    fn addresses(&self, key: &str, family: Family, out: &mut Vec<IpAddr>) -> Option<()> {
        for endpoint in self.names.get(key)? {
            if family != Family::V6 {
                out.extend(endpoint.ipv4.iter().map(|a| IpAddr::V4(*a)));
            }
            if family != Family::V4 {
                out.extend(endpoint.ipv6.iter().map(|a| IpAddr::V6(*a)));
            }
        }
        Some(())
    }
}

/// All scopes' records. Shared by every listener of an engine.
#[derive(Default)]
pub struct RecordTable {
    scopes: RwLock<Map<ScopeId, Scope>>,
}

impl RecordTable {
    fn read(&self) -> RwLockReadGuard<'_, Map<ScopeId, Scope>> {
        // No code path panics while holding the lock; recover rather than
        // propagate a poison that cannot mean torn data.
        self.scopes.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Map<ScopeId, Scope>> {
        self.scopes.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds or replaces endpoint `endpoint` of `scope` (the scope is
    /// created on first use). Visible to the next query.
    pub fn upsert_endpoint(
        &self,
        scope: &ScopeId,
        endpoint: &str,
        record: &EndpointRecord,
    ) -> Result<()> {
        check_id("endpoint", endpoint)?;
        if record.ipv4.is_empty() && record.ipv6.is_empty() {
            return Err(Error::NoAddress {
                scope: scope.to_string(),
                endpoint: endpoint.to_string(),
            });
        }
        let name = names::normalize(&record.name)?;
        let mut keys = vec![name.clone()];
        for alias in &record.aliases {
            let key = names::normalize(alias)?;
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        let mut ipv4 = record.ipv4.clone();
        ipv4.dedup();
        let mut ipv6 = record.ipv6.clone();
        ipv6.dedup();
        let stored = Arc::new(StoredEndpoint {
            id: endpoint.into(),
            name,
            keys,
            ipv4,
            ipv6,
        });

        let mut scopes = self.write();
        let scope = scopes.entry(scope.clone()).or_default();
        if let Some(old) = scope.endpoints.remove(endpoint) {
            scope.unlink(&old);
        }
        scope.link(&stored);
        scope.endpoints.insert(stored.id.clone(), stored);
        Ok(())
    }

    /// Removes an endpoint; `false` if it was not there.
    pub fn remove_endpoint(&self, scope: &ScopeId, endpoint: &str) -> bool {
        let mut scopes = self.write();
        let Some(s) = scopes.get_mut(scope) else {
            return false;
        };
        let Some(old) = s.endpoints.remove(endpoint) else {
            return false;
        };
        s.unlink(&old);
        if s.is_empty() {
            scopes.remove(scope);
        }
        true
    }

    /// Removes a scope with all its records, domain and policy.
    pub fn remove_scope(&self, scope: &ScopeId) -> bool {
        self.write().remove(scope).is_some()
    }

    /// Sets the network name under which `name.<domain>` finds names of this
    /// scope (Docker resolves `container.network`); `None` removes it.
    pub fn set_scope_domain(&self, scope: &ScopeId, domain: Option<&str>) -> Result<()> {
        let domain = domain.map(names::normalize).transpose()?;
        let mut scopes = self.write();
        let s = scopes.entry(scope.clone()).or_default();
        s.domain = domain;
        if s.is_empty() {
            scopes.remove(scope);
        }
        Ok(())
    }

    /// Sets (or with `None` removes) the policy asked about names that
    /// clients of this scope would have forwarded.
    pub fn set_scope_policy(&self, scope: &ScopeId, policy: Option<Arc<dyn QueryPolicy>>) {
        let mut scopes = self.write();
        let s = scopes.entry(scope.clone()).or_default();
        s.policy = policy;
        if s.is_empty() {
            scopes.remove(scope);
        }
    }

    /// Number of (scope, name) pairs the table answers for.
    pub fn name_count(&self) -> usize {
        self.read().values().map(|s| s.names.len()).sum()
    }

    /// Looks `key` up as Docker does: the whole name in the client's scopes
    /// in order, then for `a.b.c` the name `a.b` in the scope whose domain
    /// is `c`, then `a` in the scope whose domain is `b.c`.
    pub(crate) fn lookup(&self, scopes: &[ScopeId], key: &str, family: Family) -> NameLookup {
        if scopes.is_empty() {
            return NameLookup::NotLocal;
        }
        let table = self.read();
        let mut out = Vec::new();
        let mut split = key.len();
        loop {
            let (name, domain) = if split == key.len() {
                (key, None)
            } else {
                (&key[..split], Some(&key[split + 1..]))
            };
            let mut exists = false;
            for id in scopes {
                let Some(scope) = table.get(id) else {
                    continue;
                };
                if domain.is_some() && scope.domain.as_deref() != domain {
                    continue;
                }
                if scope.addresses(name, family, &mut out).is_some() {
                    if !out.is_empty() {
                        // Sorted: a stable order the responder rotates.
                        if out.len() > 1 {
                            out.sort_unstable();
                            out.dedup();
                        }
                        return NameLookup::Found(out);
                    }
                    exists = true;
                }
            }
            if exists {
                return NameLookup::NoData;
            }
            match key[..split].rfind('.') {
                Some(dot) => split = dot,
                None => return NameLookup::NotLocal,
            }
        }
    }

    /// The PTR target for `addr` in the client's scopes: the endpoint's
    /// name, qualified by the scope's domain when it has one (Docker
    /// answers `container.network`).
    pub(crate) fn reverse(&self, scopes: &[ScopeId], addr: IpAddr) -> Option<Name> {
        let table = self.read();
        for id in scopes {
            let Some(scope) = table.get(id) else {
                continue;
            };
            let Some(endpoint) = scope.addrs.get(&addr) else {
                continue;
            };
            return match &scope.domain {
                Some(domain) => names::fqdn(&format!("{}.{}", endpoint.name, domain)),
                None => names::fqdn(&endpoint.name),
            };
        }
        None
    }

    /// Whether a policy of one of these scopes refuses `query`.
    pub(crate) fn any_policy_refuses(&self, scopes: &[ScopeId], query: &PolicyQuery<'_>) -> bool {
        // Policies are called outside the lock: they are the daemon's code.
        let policies: Vec<Arc<dyn QueryPolicy>> = {
            let table = self.read();
            scopes
                .iter()
                .filter_map(|id| table.get(id)?.policy.clone())
                .collect()
        };
        policies.iter().any(|p| p.check(query) == Verdict::Refuse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(id: &str) -> ScopeId {
        ScopeId::new(id).unwrap()
    }

    fn ep(name: &str, aliases: &[&str], v4: &[&str], v6: &[&str]) -> EndpointRecord {
        EndpointRecord {
            name: name.into(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            ipv4: v4.iter().map(|a| a.parse().unwrap()).collect(),
            ipv6: v6.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    fn found(addrs: &[&str]) -> NameLookup {
        NameLookup::Found(addrs.iter().map(|a| a.parse().unwrap()).collect())
    }

    #[test]
    fn names_aliases_and_scaled_services() {
        let t = RecordTable::default();
        let net = scope("n1");
        t.upsert_endpoint(&net, "e1", &ep("web-1", &["web"], &["10.0.0.2"], &[]))
            .unwrap();
        t.upsert_endpoint(&net, "e2", &ep("web-2", &["web"], &["10.0.0.3"], &[]))
            .unwrap();
        let s = [net.clone()];
        assert_eq!(t.lookup(&s, "web-1", Family::V4), found(&["10.0.0.2"]));
        assert_eq!(
            t.lookup(&s, "web", Family::V4),
            found(&["10.0.0.2", "10.0.0.3"])
        );
        assert_eq!(t.lookup(&s, "web", Family::V6), NameLookup::NoData);
        assert_eq!(t.lookup(&s, "db", Family::V4), NameLookup::NotLocal);
        assert!(t.remove_endpoint(&net, "e1"));
        assert_eq!(t.lookup(&s, "web", Family::V4), found(&["10.0.0.3"]));
        assert_eq!(t.lookup(&s, "web-1", Family::V4), NameLookup::NotLocal);
        assert!(!t.remove_endpoint(&net, "e1"));
    }

    #[test]
    fn replacing_an_endpoint_drops_its_old_names_and_addresses() {
        let t = RecordTable::default();
        let net = scope("n1");
        t.upsert_endpoint(&net, "e1", &ep("a", &["old"], &["10.0.0.2"], &[]))
            .unwrap();
        t.upsert_endpoint(&net, "e1", &ep("a", &["new"], &["10.0.0.9"], &[]))
            .unwrap();
        let s = [net];
        assert_eq!(t.lookup(&s, "old", Family::V4), NameLookup::NotLocal);
        assert_eq!(t.lookup(&s, "new", Family::V4), found(&["10.0.0.9"]));
        assert_eq!(t.reverse(&s, "10.0.0.2".parse().unwrap()), None);
        assert!(t.reverse(&s, "10.0.0.9".parse().unwrap()).is_some());
    }

    #[test]
    fn scopes_are_isolated_and_ordered() {
        let t = RecordTable::default();
        let (a, b) = (scope("a"), scope("b"));
        t.upsert_endpoint(&a, "e1", &ep("db", &[], &["10.1.0.2"], &[]))
            .unwrap();
        t.upsert_endpoint(&b, "e2", &ep("db", &[], &["10.2.0.2"], &["fd00::2"]))
            .unwrap();
        assert_eq!(
            t.lookup(std::slice::from_ref(&a), "db", Family::V4),
            found(&["10.1.0.2"])
        );
        assert_eq!(
            t.lookup(&[b.clone(), a.clone()], "db", Family::V4),
            found(&["10.2.0.2"])
        );
        // The first scope with the family wins; v6 only exists in b.
        assert_eq!(
            t.lookup(&[a.clone(), b.clone()], "db", Family::V6),
            found(&["fd00::2"])
        );
        assert_eq!(
            t.lookup(std::slice::from_ref(&a), "db", Family::V6),
            NameLookup::NoData
        );
        assert_eq!(
            t.lookup(&[scope("c")], "db", Family::V4),
            NameLookup::NotLocal
        );
        assert_eq!(t.lookup(&[], "db", Family::V4), NameLookup::NotLocal);
    }

    #[test]
    fn name_dot_network_finds_the_name_in_that_network_only() {
        let t = RecordTable::default();
        let (a, b) = (scope("id-a"), scope("id-b"));
        t.set_scope_domain(&a, Some("front.net")).unwrap();
        t.set_scope_domain(&b, Some("back")).unwrap();
        t.upsert_endpoint(&a, "e1", &ep("api", &[], &["10.1.0.2"], &[]))
            .unwrap();
        t.upsert_endpoint(&b, "e2", &ep("api", &[], &["10.2.0.2"], &[]))
            .unwrap();
        let both = [a.clone(), b.clone()];
        assert_eq!(
            t.lookup(&both, "api.back", Family::V4),
            found(&["10.2.0.2"])
        );
        assert_eq!(
            t.lookup(&both, "api.front.net", Family::V4),
            found(&["10.1.0.2"])
        );
        assert_eq!(
            t.lookup(&both, "api.other", Family::V4),
            NameLookup::NotLocal
        );
        // Only networks the client is on.
        assert_eq!(
            t.lookup(std::slice::from_ref(&a), "api.back", Family::V4),
            NameLookup::NotLocal
        );
        assert_eq!(
            t.reverse(&both, "10.2.0.2".parse().unwrap())
                .unwrap()
                .to_ascii(),
            "api.back."
        );
    }

    #[test]
    fn bad_input_is_refused_with_the_value() {
        let t = RecordTable::default();
        let net = scope("n");
        let err = t.upsert_endpoint(&net, "e", &ep("bad name", &[], &["10.0.0.1"], &[]));
        assert!(err.unwrap_err().to_string().contains("\"bad name\""));
        let err = t.upsert_endpoint(&net, "e", &ep("ok", &[], &[], &[]));
        assert!(err.unwrap_err().to_string().contains("no address"));
        assert!(t
            .upsert_endpoint(&net, "", &ep("ok", &[], &["10.0.0.1"], &[]))
            .is_err());
        assert_eq!(t.name_count(), 0);
    }

    #[test]
    fn empty_scopes_do_not_linger() {
        let t = RecordTable::default();
        let net = scope("n");
        t.upsert_endpoint(&net, "e", &ep("x", &[], &["10.0.0.1"], &[]))
            .unwrap();
        t.remove_endpoint(&net, "e");
        assert!(t.read().is_empty());
    }
}
