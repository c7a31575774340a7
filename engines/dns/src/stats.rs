//! Per-listener counters.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of one listener's counters since it was added.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ListenerStats {
    /// Queries that passed the rate limit.
    pub queries: u64,
    /// Answered from the record table (including NODATA and errors known
    /// without upstream).
    pub local: u64,
    /// Forwarded names answered from the forwarding cache.
    pub cached: u64,
    /// Forwarded names sent upstream (cache misses).
    pub forwarded: u64,
    /// Answered REFUSED by a policy.
    pub refused: u64,
    /// Answered SERVFAIL because the scopes did not arrive in time.
    pub hold_expired: u64,
    /// Queries held until the scopes were known.
    pub held: u64,
    /// Dropped by the rate limit.
    pub rate_limited: u64,
    /// Dropped because too many queries were waiting.
    pub overloaded: u64,
    /// Answered FORMERR.
    pub malformed: u64,
    /// Not answered: shorter than a header, or a response.
    pub ignored: u64,
    /// TCP connections accepted.
    pub tcp_accepted: u64,
    /// TCP connections closed at once because the cap was reached.
    pub tcp_rejected: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) queries: AtomicU64,
    pub(crate) local: AtomicU64,
    pub(crate) cached: AtomicU64,
    pub(crate) forwarded: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) hold_expired: AtomicU64,
    pub(crate) held: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    pub(crate) overloaded: AtomicU64,
    pub(crate) malformed: AtomicU64,
    pub(crate) ignored: AtomicU64,
    pub(crate) tcp_accepted: AtomicU64,
    pub(crate) tcp_rejected: AtomicU64,
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self) -> ListenerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ListenerStats {
            queries: get(&self.queries),
            local: get(&self.local),
            cached: get(&self.cached),
            forwarded: get(&self.forwarded),
            refused: get(&self.refused),
            hold_expired: get(&self.hold_expired),
            held: get(&self.held),
            rate_limited: get(&self.rate_limited),
            overloaded: get(&self.overloaded),
            malformed: get(&self.malformed),
            ignored: get(&self.ignored),
            tcp_accepted: get(&self.tcp_accepted),
            tcp_rejected: get(&self.tcp_rejected),
        }
    }
}
