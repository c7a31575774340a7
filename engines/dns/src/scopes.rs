//! Scopes (one per network) and what a client may see: its ordered scopes
//! and an optional policy.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::policy::QueryPolicy;

const MAX_ID_LEN: usize = 256;

/// One network's records, named by an id the daemon chooses (Docker's
/// network id, a conductor network name, ...). Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScopeId(Arc<str>);

impl ScopeId {
    /// A scope id; refuses empty and over-long ids.
    pub fn new(id: &str) -> Result<Self> {
        check_id("scope", id)?;
        Ok(Self(Arc::from(id)))
    }

    /// The id as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for ScopeId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ScopeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for ScopeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) fn check_id(what: &'static str, id: &str) -> Result<()> {
    let reason = if id.is_empty() {
        "empty"
    } else if id.len() > MAX_ID_LEN {
        "longer than 256 bytes"
    } else {
        return Ok(());
    };
    Err(Error::InvalidId {
        what,
        id: id.chars().take(64).collect(),
        reason,
    })
}

/// What one client sees: its scopes in priority order (a name is answered
/// from the first scope that has it, as Docker orders a container's
/// networks) and an optional policy for forwarded names.
#[derive(Clone, Default)]
pub struct ClientScopes {
    pub(crate) scopes: Arc<[ScopeId]>,
    pub(crate) policy: Option<Arc<dyn QueryPolicy>>,
}

impl ClientScopes {
    /// A client on these scopes, first = highest priority. An empty list is
    /// a known client with no local names (everything is forwarded).
    pub fn new(scopes: impl IntoIterator<Item = ScopeId>) -> Self {
        Self {
            scopes: scopes.into_iter().collect(),
            policy: None,
        }
    }

    /// The same client with a policy for its forwarded names.
    pub fn with_policy(mut self, policy: Arc<dyn QueryPolicy>) -> Self {
        self.policy = Some(policy);
        self
    }

    /// The scopes, in priority order.
    pub fn scopes(&self) -> &[ScopeId] {
        &self.scopes
    }
}

impl fmt::Debug for ClientScopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientScopes")
            .field("scopes", &self.scopes)
            .field("policy", &self.policy.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(ScopeId::new("net-1").is_ok());
        assert!(ScopeId::new("").is_err());
        let long = "x".repeat(300);
        let err = ScopeId::new(&long).unwrap_err().to_string();
        assert!(err.contains("longer than 256"), "{err}");
    }
}
