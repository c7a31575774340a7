//! The API server's time-outs and caps, and the table of connections that
//! enforces the caps: in total, per peer uid, a reserve for root, and a
//! small pen for refused peers. When a cap is reached the connection that
//! has been idle longest (no request in flight) makes room; only when
//! every connection is busy is the newcomer turned away. So idle
//! connections, however many, never lock a client out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// Time-outs and caps of the API server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// From accepting (or the end of the previous answer) to a request's
    /// complete headers.
    pub header_timeout: Duration,
    /// From a request's headers to its complete body.
    pub body_timeout: Duration,
    /// A connection with no traffic, and no request in flight, this long
    /// is closed.
    pub idle_timeout: Duration,
    /// Connections at once (root may exceed it by `root_reserve`).
    pub max_connections: usize,
    /// Connections at once of one non-root uid.
    pub max_per_uid: usize,
    pub root_reserve: usize,
    /// Refused peers being answered at once; more are closed at once.
    pub max_refused: usize,
    /// Refused peers get their 403 within this, or are cut off.
    pub refused_timeout: Duration,
}

/// File descriptors kept for everything but connections (netlink
/// sockets, deletion threads, state files, path opens, stdio).
const SPARE_FDS: u64 = 128;

impl Default for Limits {
    fn default() -> Self {
        Limits::from_config(&Config::default())
    }
}

impl Limits {
    pub fn from_config(c: &Config) -> Limits {
        Limits {
            header_timeout: Duration::from_millis(c.api_header_timeout_ms),
            body_timeout: Duration::from_millis(c.api_body_timeout_ms),
            idle_timeout: Duration::from_millis(c.api_idle_timeout_ms),
            max_connections: c.api_max_connections,
            max_per_uid: c.api_max_connections_per_uid,
            root_reserve: 128,
            max_refused: 32,
            refused_timeout: Duration::from_secs(2),
        }
    }

    /// The configured limits, fitted to the process's current fd limit.
    pub fn for_daemon(c: &Config) -> Limits {
        let limits = Limits::from_config(c);
        match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
            Ok((soft, _)) => {
                let fitted = limits.fit_fd_limit(soft);
                if fitted != limits {
                    tracing::warn!(
                        fd_limit = soft,
                        max_connections = fitted.max_connections,
                        root_reserve = fitted.root_reserve,
                        "connection caps lowered to fit the fd limit"
                    );
                }
                fitted
            }
            Err(_) => limits,
        }
    }

    /// Lower the caps to what `fds` open files allow: each connection
    /// holds one, and a request in flight up to two more (the namespace it
    /// attaches and a netlink socket inside it). Without this, connections
    /// beyond the limit make `accept` (and every attach) fail with EMFILE.
    pub fn fit_fd_limit(self, fds: u64) -> Limits {
        let budget = (fds.saturating_sub(SPARE_FDS) / 3).max(4) as usize;
        let total = self.max_connections + self.root_reserve + self.max_refused;
        if total <= budget {
            return self;
        }
        let scale = |n: usize| (n * budget / total).max(1);
        let max_connections = scale(self.max_connections);
        Limits {
            max_connections,
            max_per_uid: self.max_per_uid.min(max_connections),
            root_reserve: scale(self.root_reserve),
            max_refused: scale(self.max_refused),
            ..self
        }
    }
}

/// What a connection shares with the table: whether a request of it is in
/// flight, when it last moved, and how to close it.
#[derive(Debug)]
pub struct ConnState {
    in_flight: AtomicUsize,
    /// Milliseconds since the table's epoch.
    last_active: AtomicU64,
    epoch: Instant,
    /// Cancelled to close the connection (evicted to make room).
    pub evicted: CancellationToken,
}

impl ConnState {
    fn new(epoch: Instant) -> ConnState {
        let state = ConnState {
            in_flight: AtomicUsize::new(0),
            last_active: AtomicU64::new(0),
            epoch,
            evicted: CancellationToken::new(),
        };
        state.touch();
        state
    }

    pub fn touch(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.last_active.store(now, Ordering::Relaxed);
    }

    pub fn busy(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) > 0
    }

    fn idle_since(&self) -> u64 {
        self.last_active.load(Ordering::Relaxed)
    }
}

/// A request of a connection being answered (a guard).
pub struct InFlight(Arc<ConnState>);

impl InFlight {
    pub fn enter(state: Arc<ConnState>) -> InFlight {
        state.in_flight.fetch_add(1, Ordering::SeqCst);
        state.touch();
        InFlight(state)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.touch();
    }
}

/// Who a connection belongs to, for the caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    Uid(u32),
    /// A refused peer, being told so.
    Refused,
}

struct Entry {
    holder: Holder,
    state: Arc<ConnState>,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    conns: HashMap<u64, Entry>,
    per_uid: HashMap<u32, usize>,
    total: usize,
    refused: usize,
}

/// The connections held; a `Slot` gives its place back on drop.
#[derive(Clone)]
pub struct Connections {
    table: Arc<Mutex<Table>>,
    limits: Limits,
    epoch: Instant,
}

pub struct Slot {
    table: Arc<Mutex<Table>>,
    id: u64,
    pub state: Arc<ConnState>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = t.conns.remove(&self.id) else {
            return;
        };
        match entry.holder {
            Holder::Refused => t.refused -= 1,
            Holder::Uid(uid) => {
                t.total -= 1;
                if let Some(n) = t.per_uid.get_mut(&uid) {
                    *n -= 1;
                    if *n == 0 {
                        t.per_uid.remove(&uid);
                    }
                }
            }
        }
    }
}

impl Connections {
    pub fn new(limits: Limits) -> Connections {
        Connections {
            table: Arc::default(),
            limits,
            epoch: Instant::now(),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// A place for a new connection, making room by evicting the longest
    /// idle connection when a cap is reached; None when nothing can go.
    pub fn admit(&self, holder: Holder) -> Option<Slot> {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let l = &self.limits;
        match holder {
            // Refused peers are never worth evicting anyone for.
            Holder::Refused if t.refused >= l.max_refused => return None,
            Holder::Refused => {}
            Holder::Uid(uid) => {
                let mine = t.per_uid.get(&uid).copied().unwrap_or(0);
                if uid != 0 && mine >= l.max_per_uid {
                    // Room only from this uid's own idle connections.
                    evict_longest_idle(&t, |h| h == Holder::Uid(uid))?;
                }
                let cap = if uid == 0 {
                    l.max_connections + l.root_reserve
                } else {
                    l.max_connections
                };
                if t.total >= cap {
                    evict_longest_idle(&t, |h| h != Holder::Refused)?;
                }
            }
        }
        let state = Arc::new(ConnState::new(self.epoch));
        let id = t.next_id;
        t.next_id += 1;
        match holder {
            Holder::Refused => t.refused += 1,
            Holder::Uid(uid) => {
                t.total += 1;
                *t.per_uid.entry(uid).or_default() += 1;
            }
        }
        t.conns.insert(
            id,
            Entry {
                holder,
                state: state.clone(),
            },
        );
        Some(Slot {
            table: self.table.clone(),
            id,
            state,
        })
    }
}

/// Close (cancel) the longest-idle connection among those `eligible` that
/// has no request in flight; None if every one is busy. The evicted
/// connection gives its place back when its task ends, a moment later:
/// until then the table holds one more than its cap.
fn evict_longest_idle(t: &Table, eligible: impl Fn(Holder) -> bool) -> Option<()> {
    let victim = t
        .conns
        .values()
        .filter(|e| eligible(e.holder) && !e.state.busy() && !e.state.evicted.is_cancelled())
        .min_by_key(|e| e.state.idle_since())?;
    tracing::debug!(holder = ?victim.holder, "connection cap reached: closing the longest idle connection");
    victim.state.evicted.cancel();
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Limits {
        Limits {
            max_connections: 2,
            max_per_uid: 1,
            root_reserve: 1,
            max_refused: 1,
            ..Limits::default()
        }
    }

    #[test]
    fn caps_evict_the_longest_idle_and_refuse_when_all_are_busy() {
        let conns = Connections::new(small());
        let a = conns.admit(Holder::Uid(1000)).unwrap();
        // Per uid: a second connection of 1000 evicts its first.
        let a2 = conns.admit(Holder::Uid(1000)).unwrap();
        assert!(a.state.evicted.is_cancelled());
        drop(a);
        // Busy connections are never evicted.
        let _busy = InFlight::enter(a2.state.clone());
        assert!(conns.admit(Holder::Uid(1000)).is_none());
        let b = conns.admit(Holder::Uid(1001)).unwrap();
        // Total: 1002 makes room by closing idle b (a2 is busy).
        let c = conns.admit(Holder::Uid(1002)).unwrap();
        assert!(b.state.evicted.is_cancelled());
        drop(b);
        // Root has a reserve above the cap.
        let root = conns.admit(Holder::Uid(0)).unwrap();
        assert!(!c.state.evicted.is_cancelled());
        // Refused peers have their own small pen, and evict nobody.
        let refused = conns.admit(Holder::Refused).unwrap();
        assert!(conns.admit(Holder::Refused).is_none());
        drop((a2, c, root, refused));
        let t = conns.table.lock().unwrap();
        assert_eq!((t.total, t.refused, t.per_uid.len()), (0, 0, 0));
    }

    #[test]
    fn caps_fit_the_fd_limit() {
        let l = Limits::default();
        assert_eq!(l.fit_fd_limit(1 << 20), l);
        let tight = l.fit_fd_limit(1024);
        let held = tight.max_connections + tight.root_reserve + tight.max_refused;
        assert!(held * 3 + 128 <= 1024, "{tight:?}");
        assert!(tight.max_per_uid <= tight.max_connections);
        assert!(tight.root_reserve >= 1 && tight.max_refused >= 1);
    }
}
