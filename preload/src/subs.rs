//! Degraded subscriptions: per-fd state, the queue of synthesized datagrams,
//! the "doorbell" that makes the program's socket readable, and the poller
//! thread that dumps links/addresses and diffs them.
//!
//! Delivery: for every queued datagram the preload sends, on a private
//! duplicate of the program's socket, a request that the kernel answers with
//! an error (RTM_GETLINK for an index that never exists, sequence
//! DOORBELL_SEQ). The reply wakes blocked readers, poll/epoll and Go's
//! netpoller like any kernel data; the read path swaps it for the queued
//! datagram.

use crate::events::{Kind, Table};
use crate::netlink::{self, messages, NlHdr};
use crate::stats::{self, Counter};
use crate::{seccomp, sys};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

const MAX_FD: usize = 4096;
static MARKS: [AtomicU64; MAX_FD / 64] = [const { AtomicU64::new(0) }; MAX_FD / 64];
static REG: Mutex<Vec<Arc<Sub>>> = Mutex::new(Vec::new());
static POLLER: AtomicBool = AtomicBool::new(false);
static SEQ: AtomicU32 = AtomicU32::new(1);
/// Poll period in milliseconds (CONDUCTOR_PRELOAD_POLL_MS).
pub static PERIOD_MS: AtomicU64 = AtomicU64::new(20);

/// A datagram waiting to be read by the program.
pub struct Queued {
    pub data: Vec<u8>,
    /// nl_groups of the sender address (0 for unicast replies).
    pub src_groups: u32,
}

struct Inner {
    queue: VecDeque<Queued>,
    links: Option<Table>,
    addrs: Option<Table>,
    closed: bool,
}

/// State kept for one program socket.
pub struct Sub {
    pub fd: i32,
    dup: i32,
    mon: i32,
    /// One dump at a time on `mon`: two would read each other's answers
    /// (the event thread polls while a bind takes its baseline).
    mon_lock: Mutex<()>,
    /// Whether the program's reads of this fd reach the preload (always
    /// for the libc path; for the SIGSYS path once a read filter is in).
    covered: AtomicBool,
    /// No read filter could be added (the cap is reached): not retried.
    cover_failed: AtomicBool,
    groups: AtomicU64,
    inner: Mutex<Inner>,
}

impl Drop for Sub {
    fn drop(&mut self) {
        sys::close(self.dup);
        if self.mon >= 0 {
            sys::close(self.mon);
        }
    }
}

/// Whether `fd` has preload state (lock-free fast path for the hooks).
#[inline]
pub fn marked(fd: i32) -> bool {
    if fd < 0 || fd as usize >= MAX_FD {
        return false;
    }
    MARKS[fd as usize / 64].load(Ordering::Relaxed) & (1 << (fd % 64)) != 0
}

fn set_mark(fd: i32, on: bool) {
    if fd < 0 || fd as usize >= MAX_FD {
        return;
    }
    let bit = 1u64 << (fd % 64);
    if on {
        MARKS[fd as usize / 64].fetch_or(bit, Ordering::Relaxed);
    } else {
        MARKS[fd as usize / 64].fetch_and(!bit, Ordering::Relaxed);
    }
}

pub fn get(fd: i32) -> Option<Arc<Sub>> {
    if !marked(fd) {
        return None;
    }
    REG.lock().ok()?.iter().find(|s| s.fd == fd).cloned()
}

/// Forget one registration (its fd was closed or now names another file),
/// leaving any newer one for the same fd number alone.
fn remove_exact(sub: &Arc<Sub>) {
    let still_marked = match REG.lock() {
        Ok(mut r) => {
            r.retain(|s| !Arc::ptr_eq(s, sub));
            r.iter().any(|s| s.fd == sub.fd)
        }
        Err(_) => return,
    };
    if !still_marked {
        set_mark(sub.fd, false);
    }
    if let Ok(mut i) = sub.inner.lock() {
        i.closed = true;
        i.queue.clear();
    }
    crate::plog!("fd {}: closed by the program, forgotten", sub.fd);
    sub.wake();
}

impl Sub {
    /// Whether the program's fd still names the socket this state is for.
    fn alive(&self) -> bool {
        sys::same_file(self.fd, self.dup)
    }

    /// After the program closed its fd: a thread still blocked reading the
    /// socket (the kernel keeps it while the read lasts) would wait forever,
    /// since no event reaches a forgotten socket. Ring it once: the reader
    /// wakes, finds nothing queued and reads the closed fd (EBADF), as on
    /// Linux the next multicast event would have woken it.
    pub fn wake(&self) {
        let _ = sys::send(self.dup, &netlink::doorbell_request(), libc::MSG_DONTWAIT);
    }
}

/// Forget `fd` (closed or replaced by the program).
pub fn remove(fd: i32) {
    for s in unregister(fd) {
        s.wake();
    }
}

/// The program closes `fd`: forget it and, once the close is done, call
/// `wake` on what is returned.
pub fn unregister(fd: i32) -> Vec<Arc<Sub>> {
    if !marked(fd) {
        return Vec::new();
    }
    set_mark(fd, false);
    let gone = match REG.lock() {
        Ok(mut r) => {
            let (gone, keep): (Vec<_>, Vec<_>) = r.drain(..).partition(|s| s.fd == fd);
            *r = keep;
            gone
        }
        Err(_) => Vec::new(),
    };
    for s in &gone {
        if let Ok(mut i) = s.inner.lock() {
            i.closed = true;
            i.queue.clear();
        }
        crate::plog!("fd {}: forgotten", fd);
    }
    gone
}

/// Run a dump on a private socket and return its messages (raw, one per entry).
pub fn dump(mon: i32, ty: u16) -> Result<Vec<Vec<u8>>, i32> {
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    sys::send(mon, &netlink::dump_request(ty, seq), 0)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::new();
    loop {
        // gVisor ends a blocking netlink read with EINTR when a signal
        // arrives, even one blocked here: retry, as SA_RESTART would
        let n = match sys::recv(mon, &mut buf, 0) {
            Err(libc::EINTR) => continue,
            r => r?,
        };
        for m in messages(&buf[..n]) {
            if m.hdr.seq != seq {
                continue;
            }
            match m.hdr.ty {
                netlink::NLMSG_DONE => return Ok(out),
                netlink::NLMSG_ERROR => {
                    return Err(netlink::error_code(m.payload)
                        .map(|e| -e)
                        .unwrap_or(libc::EIO));
                }
                _ => out.push(m.raw.to_vec()),
            }
        }
    }
}

fn table(mon: i32, kind: Kind) -> Option<Table> {
    let ty = match kind {
        Kind::Link => netlink::RTM_GETLINK,
        Kind::Addr => netlink::RTM_GETADDR,
    };
    let msgs = match dump(mon, ty) {
        Ok(m) => m,
        Err(e) => {
            crate::plog!("dump type {} failed (errno {})", ty, e);
            return None;
        }
    };
    Some(Table::from_messages(
        kind,
        msgs.iter().map(|m| m.as_slice()),
    ))
}

fn private_socket() -> Result<i32, i32> {
    let fd = sys::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0)?;
    // Keep it away from low fd numbers the program may rely on.
    let moved = sys::dup_cloexec(fd);
    sys::close(fd);
    let fd = moved?;
    let tv = libc::timeval {
        tv_sec: 1,
        tv_usec: 0,
    };
    // SAFETY: timeval is plain data; viewing it as bytes is sound.
    let b = unsafe {
        core::slice::from_raw_parts(
            &tv as *const libc::timeval as *const u8,
            core::mem::size_of::<libc::timeval>(),
        )
    };
    let _ = sys::setsockopt_bytes(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, b);
    Ok(fd)
}

fn needs_addrs(groups: u64) -> bool {
    groups & (netlink::GRP_IPV4_IFADDR | netlink::GRP_IPV6_IFADDR) != 0
}

/// Get or create state for `fd`. `watch`: keep a dump socket for events.
fn ensure(fd: i32, watch: bool, trap: bool) -> Option<Arc<Sub>> {
    if let Some(s) = get(fd) {
        // a close the preload did not see (no read filter, dup2) left it
        if s.alive() {
            return Some(s);
        }
        remove_exact(&s);
    }
    let dup = sys::dup_cloexec(fd).ok()?;
    let mon = if watch {
        match private_socket() {
            Ok(m) => m,
            Err(_) => {
                sys::close(dup);
                return None;
            }
        }
    } else {
        -1
    };
    let sub = Arc::new(Sub {
        fd,
        dup,
        mon,
        mon_lock: Mutex::new(()),
        covered: AtomicBool::new(!trap),
        cover_failed: AtomicBool::new(false),
        groups: AtomicU64::new(0),
        inner: Mutex::new(Inner {
            queue: VecDeque::new(),
            links: None,
            addrs: None,
            closed: false,
        }),
    });
    REG.lock().ok()?.push(sub.clone());
    set_mark(fd, true);
    Some(sub)
}

/// Record a refused subscription on `fd` for `groups` (bind-mask bits) and
/// take the baseline so later changes become events. False on failure.
pub fn degrade(fd: i32, groups: u64, trap: bool) -> bool {
    let Some(sub) = ensure(fd, true, trap) else {
        return false;
    };
    if sub.mon < 0 {
        return false;
    }
    // Without a read filter (the cap is reached) link events still arrive,
    // echoed by the kernel; queued ones (removals, addresses) cannot.
    if !sub.cover() {
        crate::plog!("fd {}: no read filter left: link events by echo only", fd);
    }
    let all = sub.groups.fetch_or(groups, Ordering::AcqRel) | groups;
    let want_links = all & netlink::GRP_LINK != 0;
    let want_addrs = needs_addrs(all);
    let (have_links, have_addrs) = match sub.inner.lock() {
        Ok(i) => (i.links.is_some(), i.addrs.is_some()),
        Err(_) => return false,
    };
    let links = if want_links && !have_links {
        sub.table(Kind::Link)
    } else {
        None
    };
    let addrs = if want_addrs && !have_addrs {
        sub.table(Kind::Addr)
    } else {
        None
    };
    if let Ok(mut i) = sub.inner.lock() {
        if links.is_some() {
            i.links = links;
        }
        if addrs.is_some() {
            i.addrs = addrs;
        }
    }
    start_poller();
    true
}

/// Drop groups from a degraded subscription.
pub fn undegrade(fd: i32, groups: u64) {
    if let Some(s) = get(fd) {
        s.groups.fetch_and(!groups, Ordering::AcqRel);
    }
}

/// Whether a datagram queued for `fd` would reach the program (its reads
/// go through the preload).
pub fn can_deliver(fd: i32, trap: bool) -> bool {
    ensure(fd, false, trap).is_some_and(|s| s.cover())
}

/// Queue a datagram for the program's next read of `fd` and ring.
pub fn inject(fd: i32, data: Vec<u8>, src_groups: u32, trap: bool) -> bool {
    let Some(sub) = ensure(fd, false, trap) else {
        return false;
    };
    if !sub.cover() {
        return false;
    }
    sub.push(Queued { data, src_groups });
    true
}

impl Sub {
    /// Make sure the program's reads of this fd reach the preload. Needed for
    /// queued datagrams, and in gVisor also for echoed events: its netlink
    /// sockets end a blocking recvfrom with EINTR when any signal arrives
    /// (even for handlers with SA_RESTART), which vishvananda/netlink treats
    /// as fatal; the trapped read blocks with every signal masked instead.
    fn cover(&self) -> bool {
        if self.covered.load(Ordering::Acquire) {
            return true;
        }
        if self.cover_failed.load(Ordering::Acquire) {
            return false;
        }
        let ok = seccomp::cover_fd(self.fd);
        self.covered.store(ok, Ordering::Release);
        self.cover_failed.store(!ok, Ordering::Release);
        ok
    }

    /// Ask the kernel to answer on the program's socket with the current
    /// RTM_NEWLINK of `index`: a real kernel message, readable by any path.
    fn echo(&self, index: i32) {
        let Ok(i) = self.inner.lock() else { return };
        if i.closed {
            return;
        }
        if let Err(e) = sys::send(self.dup, &netlink::echo_request(index), libc::MSG_DONTWAIT) {
            crate::plog!("fd {}: echo failed (errno {})", self.fd, e);
        }
    }

    fn push(&self, q: Queued) {
        let Ok(mut i) = self.inner.lock() else { return };
        if i.closed {
            return;
        }
        i.queue.push_back(q);
        // Ring while holding the lock so that a concurrent close cannot
        // reorder with it; the dup keeps the socket alive regardless.
        if let Err(e) = sys::send(self.dup, &netlink::doorbell_request(), libc::MSG_DONTWAIT) {
            crate::plog!("fd {}: doorbell failed (errno {})", self.fd, e);
            i.queue.pop_back();
        }
    }

    /// A dump of `kind` on this state's private socket.
    fn table(&self, kind: Kind) -> Option<Table> {
        let _one = self.mon_lock.lock().ok()?;
        table(self.mon, kind)
    }

    /// The preload's own duplicate of the program's socket.
    pub fn dup(&self) -> i32 {
        self.dup
    }

    /// Whether the program closed the socket (the state is forgotten).
    pub fn closed(&self) -> bool {
        self.inner.lock().map(|i| i.closed).unwrap_or(true)
    }

    /// Take (or, with `peek`, copy) the next queued datagram.
    pub fn take(&self, peek: bool) -> Option<Queued> {
        let mut i = self.inner.lock().ok()?;
        if peek {
            i.queue.front().map(|q| Queued {
                data: q.data.clone(),
                src_groups: q.src_groups,
            })
        } else {
            i.queue.pop_front()
        }
    }

    fn poll(&self) {
        let groups = self.groups.load(Ordering::Acquire);
        if self.mon < 0 || groups == 0 {
            return;
        }
        let links = if groups & netlink::GRP_LINK != 0 {
            self.table(Kind::Link)
        } else {
            None
        };
        let addrs = if needs_addrs(groups) {
            self.table(Kind::Addr)
        } else {
            None
        };
        let mut link_events = Vec::new();
        let mut addr_events = Vec::new();
        {
            let Ok(mut i) = self.inner.lock() else { return };
            if i.closed {
                return;
            }
            if let Some(new) = links {
                if let Some(old) = &i.links {
                    link_events = old.diff(&new, Kind::Link);
                }
                i.links = Some(new);
            }
            if let Some(new) = addrs {
                if let Some(old) = &i.addrs {
                    addr_events = old.diff(&new, Kind::Addr);
                }
                i.addrs = Some(new);
            }
        }
        for e in crate::events::merge(link_events, addr_events) {
            if e.group & groups == 0 {
                continue;
            }
            let Some(h) = NlHdr::parse(&e.msg) else {
                continue;
            };
            crate::plog!("fd {}: synthesized event type {}", self.fd, h.ty);
            if h.ty == netlink::RTM_NEWLINK {
                if let Some(index) = netlink::ifinfo_index(&e.msg[netlink::NLMSG_HDRLEN..]) {
                    self.echo(index);
                    continue;
                }
            }
            if self.cover() {
                self.push(Queued {
                    data: e.msg,
                    src_groups: e.group as u32,
                });
            }
        }
    }
}

fn start_poller() {
    if POLLER.swap(true, Ordering::AcqRel) {
        return;
    }
    let r = std::thread::Builder::new()
        .name("conductor-nl".into())
        .stack_size(256 * 1024)
        .spawn(poller);
    if r.is_err() {
        POLLER.store(false, Ordering::Release);
        crate::log::warn(format_args!(
            "cannot start the event thread; no synthesized events"
        ));
    }
}

fn poller() {
    // This thread never runs program code: keep every signal away from it.
    // SAFETY: a full sigset applied to the current thread only.
    unsafe {
        let mut all: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, core::ptr::null_mut());
    }
    loop {
        let period = PERIOD_MS.load(Ordering::Relaxed).clamp(1, 10_000);
        std::thread::sleep(std::time::Duration::from_millis(period));
        let subs: Vec<Arc<Sub>> = match REG.lock() {
            Ok(r) => r.iter().filter(|s| s.mon >= 0).cloned().collect(),
            Err(_) => continue,
        };
        // A watched socket's close is seen only through a read filter or
        // the libc hook; reap those the program closed (or replaced) anyway.
        let (subs, gone): (Vec<_>, Vec<_>) = subs.into_iter().partition(|s| s.alive());
        for s in &gone {
            remove_exact(s);
        }
        let t0 = if stats::on() && !subs.is_empty() {
            stats::now()
        } else {
            0
        };
        for s in subs {
            s.poll();
        }
        if t0 != 0 {
            stats::add(Counter::Polls, 1);
            stats::add(Counter::PollNs, stats::now().saturating_sub(t0));
        }
    }
}
