//! What happens to an intercepted call. Shared by the SIGSYS path (Go and
//! other raw-syscall code) and the libc symbol hooks (C programs).
//!
//! The rule everywhere: issue the real call first; only when the sandbox
//! refuses it (EACCES, EPERM, EOPNOTSUPP, ENOPROTOOPT) and the socket is
//! NETLINK_ROUTE do we degrade and report success.

use crate::netlink::{self, SockaddrNl};
use crate::requests::{after_send, first_is_candidate, gather};
use crate::stats::{self, Counter};
use crate::sys::{self, syscall6};
use crate::{packet, receive, subs};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// From the SIGSYS handler (the program's own code).
    Trap,
    /// From an interposed libc function.
    Hook,
}

const SOL_NETLINK: i32 = 270;
const NETLINK_ADD_MEMBERSHIP: i32 = 1;
const NETLINK_DROP_MEMBERSHIP: i32 = 2;

pub(crate) fn refused(r: isize) -> bool {
    matches!(
        (-r) as i32,
        libc::EACCES | libc::EPERM | libc::EOPNOTSUPP | libc::ENOPROTOOPT
    )
}

pub(crate) fn is_route_netlink(fd: i32) -> bool {
    sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN) == Ok(libc::AF_NETLINK)
        && sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL) == Ok(libc::NETLINK_ROUTE)
}

/// Read a sockaddr the program passed (bounded copy).
fn read_addr(addr: usize, len: usize) -> Option<[u8; netlink::SOCKADDR_NL_LEN]> {
    if addr == 0 || len < netlink::SOCKADDR_NL_LEN {
        return None;
    }
    let mut a = [0u8; netlink::SOCKADDR_NL_LEN];
    // SAFETY: the program passed `addr` with at least `len` >= 12 readable
    // bytes for this call; we copy only the first 12.
    unsafe { core::ptr::copy_nonoverlapping(addr as *const u8, a.as_mut_ptr(), a.len()) };
    Some(a)
}

/// A netlink address carrying groups, if that is what `addr` is.
fn nl_with_groups(addr: usize, len: usize) -> Option<SockaddrNl> {
    let a = SockaddrNl::parse(&read_addr(addr, len)?)?;
    (a.groups != 0).then_some(a)
}

fn name(nr: i64) -> &'static str {
    match nr {
        libc::SYS_bind => "bind",
        libc::SYS_connect => "connect",
        libc::SYS_sendto => "sendto",
        libc::SYS_sendmsg => "sendmsg",
        libc::SYS_setsockopt => "setsockopt",
        libc::SYS_recvfrom => "recvfrom",
        libc::SYS_recvmsg => "recvmsg",
        libc::SYS_read => "read",
        libc::SYS_close => "close",
        _ => "?",
    }
}

/// Emulate one call; never unwinds (a panic falls back to the real call).
pub fn dispatch_guarded(nr: i64, a: [usize; 6], origin: Origin) -> isize {
    let t0 = if stats::on() { stats::now() } else { 0 };
    let r = match std::panic::catch_unwind(|| dispatch(nr, a, origin)) {
        Ok(r) => r,
        Err(_) => syscall6(nr, a),
    };
    if t0 != 0 {
        let ns = stats::now().saturating_sub(t0);
        if matches!(nr, libc::SYS_read | libc::SYS_recvfrom | libc::SYS_recvmsg) {
            stats::add(Counter::Reads, 1);
            stats::add(Counter::ReadNs, ns);
        } else {
            stats::add(Counter::Calls, 1);
            stats::add(Counter::CallNs, ns);
            if origin == Origin::Trap {
                stats::add(Counter::Trapped, 1);
            }
        }
    }
    r
}

/// The program's own system call, issued for real; timed when stats are on
/// (so that the preload's share of a call can be told from the call's).
fn real(nr: i64, a: [usize; 6]) -> isize {
    if !stats::on() {
        return syscall6(nr, a);
    }
    let t0 = stats::now();
    let r = syscall6(nr, a);
    stats::add(Counter::RealNs, stats::now().saturating_sub(t0));
    r
}

/// Emulate one call with raw arguments; returns the raw result (`-errno`).
pub fn dispatch(nr: i64, a: [usize; 6], origin: Origin) -> isize {
    let fd = a[0] as i32;
    let r = match nr {
        libc::SYS_bind => bind(fd, a, origin),
        libc::SYS_connect => addr_call(nr, fd, a, 1, 2),
        libc::SYS_sendto => {
            let r = addr_call(nr, fd, a, 4, 5);
            if r >= 0 && a[1] != 0 {
                // SAFETY: the kernel just read `a[2]` bytes from `a[1]`.
                let req = unsafe { core::slice::from_raw_parts(a[1] as *const u8, a[2]) };
                after_send(fd, req, origin);
            }
            if refused(r) {
                packet::sendto_refused(fd, a, r)
            } else {
                r
            }
        }
        libc::SYS_sendmsg => {
            let r = sendmsg(fd, a);
            if r >= 0 && a[1] != 0 && (first_is_candidate(a[1]) || crate::log::enabled()) {
                let req = gather(a[1]);
                after_send(fd, &req, origin);
            }
            r
        }
        libc::SYS_setsockopt => setsockopt(fd, a, origin),
        libc::SYS_recvfrom | libc::SYS_recvmsg | libc::SYS_read => receive::recv(nr, fd, a, origin),
        libc::SYS_close => {
            let gone = subs::unregister(fd);
            let r = real(nr, a);
            for s in gone {
                s.wake();
            }
            r
        }
        _ => real(nr, a),
    };
    if origin == Origin::Trap && crate::log::enabled() {
        crate::plog!("trap {}(fd {}) = {}", name(nr), fd, r);
    }
    r
}

/// A refused subscription bind for `groups`: retry with the link group
/// alone if it was asked with others (gVisor from 2025-11 accepts
/// RTNLGRP_LINK and nothing else), else with no groups. `bind(g)` binds for
/// real with groups `g` and says whether it worked. Returns the groups bound
/// for real and the groups left to synthesize, or `None` if nothing could
/// be bound.
pub fn retry_bind(groups: u32, mut bind: impl FnMut(u32) -> bool) -> Option<(u32, u32)> {
    let link = groups & netlink::GRP_LINK as u32;
    if link != 0 && groups != link && bind(link) {
        return Some((link, groups & !link));
    }
    bind(0).then_some((0, groups))
}

fn bind(fd: i32, a: [usize; 6], origin: Origin) -> isize {
    let r = real(libc::SYS_bind, a);
    if !refused(r) {
        return r;
    }
    let Some(addr) = nl_with_groups(a[1], a[2]) else {
        return r;
    };
    if !is_route_netlink(fd) {
        return r;
    }
    let plan = retry_bind(addr.groups, |groups| {
        let b = SockaddrNl { groups, ..addr }.to_bytes();
        sys::bind_raw(fd, b.as_ptr(), b.len() as u32) == 0
    });
    let Some((bound, rest)) = plan else {
        crate::plog!(
            "bind(fd {}, groups {:#x}) refused ({}); retry without groups failed",
            fd,
            addr.groups,
            r
        );
        return r;
    };
    let ok = subs::degrade(fd, rest as u64, origin == Origin::Trap);
    crate::plog!(
        "bind(fd {}, groups {:#x}) refused ({}): bound with groups {:#x}, events for {:#x} {}",
        fd,
        addr.groups,
        r,
        bound,
        rest,
        if ok { "synthesized" } else { "unavailable" }
    );
    0
}

/// connect/sendto: strip groups from the destination on refusal.
fn addr_call(nr: i64, fd: i32, a: [usize; 6], ai: usize, li: usize) -> isize {
    let r = real(nr, a);
    if !refused(r) {
        return r;
    }
    let Some(addr) = nl_with_groups(a[ai], a[li]) else {
        return r;
    };
    if !is_route_netlink(fd) {
        return r;
    }
    let stripped = SockaddrNl { groups: 0, ..addr }.to_bytes();
    let mut b = a;
    b[ai] = stripped.as_ptr() as usize;
    b[li] = stripped.len();
    let r2 = syscall6(nr, b);
    crate::plog!(
        "fd {}: destination groups {:#x} refused ({}); sent to the kernel instead: {}",
        fd,
        addr.groups,
        r,
        r2
    );
    if r2 < 0 {
        r
    } else {
        r2
    }
}

fn sendmsg(fd: i32, a: [usize; 6]) -> isize {
    let r = real(libc::SYS_sendmsg, a);
    if !refused(r) || a[1] == 0 {
        return r;
    }
    // SAFETY: the program passed a valid msghdr for sendmsg.
    let mut m: libc::msghdr = unsafe { core::ptr::read_unaligned(a[1] as *const libc::msghdr) };
    let Some(addr) = nl_with_groups(m.msg_name as usize, m.msg_namelen as usize) else {
        return r;
    };
    if !is_route_netlink(fd) {
        return r;
    }
    let stripped = SockaddrNl { groups: 0, ..addr }.to_bytes();
    m.msg_name = stripped.as_ptr() as *mut libc::c_void;
    m.msg_namelen = stripped.len() as u32;
    let mut b = a;
    b[1] = &m as *const libc::msghdr as usize;
    let r2 = syscall6(libc::SYS_sendmsg, b);
    crate::plog!(
        "fd {}: sendmsg to groups {:#x} refused ({}); sent to the kernel instead: {}",
        fd,
        addr.groups,
        r,
        r2
    );
    if r2 < 0 {
        r
    } else {
        r2
    }
}

fn setsockopt(fd: i32, a: [usize; 6], origin: Origin) -> isize {
    let r = real(libc::SYS_setsockopt, a);
    let (level, opt) = (a[1] as i32, a[2] as i32);
    if !refused(r) || level != SOL_NETLINK || a[3] == 0 || a[4] < 4 {
        return r;
    }
    if opt != NETLINK_ADD_MEMBERSHIP && opt != NETLINK_DROP_MEMBERSHIP {
        return r;
    }
    // SAFETY: the program passed at least 4 readable bytes (checked a[4]).
    let group = unsafe { core::ptr::read_unaligned(a[3] as *const u32) };
    if group == 0 || group > 64 || !is_route_netlink(fd) {
        return r;
    }
    let mask = 1u64 << (group - 1);
    if opt == NETLINK_DROP_MEMBERSHIP {
        subs::undegrade(fd, mask);
        crate::plog!(
            "fd {}: drop membership {} refused ({}): reported success",
            fd,
            group,
            r
        );
        return 0;
    }
    let ok = subs::degrade(fd, mask, origin == Origin::Trap);
    crate::plog!(
        "fd {}: add membership {} refused ({}): reported success, events {}",
        fd,
        group,
        r,
        if ok { "synthesized" } else { "unavailable" }
    );
    0
}

#[cfg(test)]
mod tests {
    use super::retry_bind;
    use crate::netlink::{GRP_IPV4_IFADDR, GRP_IPV6_IFADDR, GRP_LINK};

    const LINK: u32 = GRP_LINK as u32;
    const ADDRS: u32 = (GRP_IPV4_IFADDR | GRP_IPV6_IFADDR) as u32;

    /// A sandbox that accepts binds with exactly these group masks; records
    /// what was tried.
    fn sandbox(accepts: &'static [u32]) -> impl FnMut(u32) -> bool {
        move |g| accepts.contains(&g)
    }

    #[test]
    fn gvisor_20240729_refuses_every_group() {
        // moby's waitForIfUpped (link only) and `ip monitor` (link + addresses)
        assert_eq!(retry_bind(LINK, sandbox(&[0])), Some((0, LINK)));
        assert_eq!(
            retry_bind(LINK | ADDRS, sandbox(&[0])),
            Some((0, LINK | ADDRS))
        );
    }

    #[test]
    fn newer_gvisor_accepts_the_link_group_alone() {
        // the link group is bound for real, only address events are synthesized
        assert_eq!(
            retry_bind(LINK | ADDRS, sandbox(&[0, LINK])),
            Some((LINK, ADDRS))
        );
        assert_eq!(retry_bind(ADDRS, sandbox(&[0, LINK])), Some((0, ADDRS)));
        let mut tried = Vec::new();
        let r = retry_bind(LINK | ADDRS, |g| {
            tried.push(g);
            g == LINK
        });
        assert_eq!((r, tried), (Some((LINK, ADDRS)), vec![LINK]));
    }

    #[test]
    fn nothing_bindable() {
        assert_eq!(retry_bind(LINK | ADDRS, sandbox(&[])), None);
    }
}
