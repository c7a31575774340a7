//! The hook through which the daemon refuses names (issue 12's egress
//! policy). The engine has no rules of its own: it asks, and answers
//! REFUSED when told to.

use std::net::IpAddr;

use hickory_proto::rr::RecordType;

use crate::scopes::ScopeId;

/// What the engine knows about a query it is about to forward.
#[derive(Debug, Clone, Copy)]
pub struct PolicyQuery<'a> {
    /// The queried name, lowercase, without the trailing dot.
    pub name: &'a str,
    /// The queried type.
    pub qtype: RecordType,
    /// The asking client's address (127.0.0.1 on a namespace listener).
    pub source: IpAddr,
    /// The asking client's scopes, in priority order.
    pub scopes: &'a [ScopeId],
}

/// A policy's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forward the query.
    Allow,
    /// Answer REFUSED without asking upstream.
    Refuse,
}

/// Decides whether a name that is not local may be forwarded. Consulted
/// for every query that would go upstream (names answered from the record
/// table are never asked about: they do not leave the networks). Set per
/// scope ([`crate::RecordTable::set_scope_policy`]) and per client
/// ([`crate::ClientScopes::with_policy`]); any refusal wins. Called on the
/// query path: it must be quick and must not block.
pub trait QueryPolicy: Send + Sync + 'static {
    /// The verdict for one query.
    fn check(&self, query: &PolicyQuery<'_>) -> Verdict;
}

impl<F> QueryPolicy for F
where
    F: Fn(&PolicyQuery<'_>) -> Verdict + Send + Sync + 'static,
{
    fn check(&self, query: &PolicyQuery<'_>) -> Verdict {
        self(query)
    }
}
