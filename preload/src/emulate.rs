//! What happens to an intercepted call. Shared by the SIGSYS path (Go and
//! other raw-syscall code) and the libc symbol hooks (C programs).
//!
//! The rule everywhere: issue the real call first; only when the sandbox
//! refuses it (EACCES, EPERM, EOPNOTSUPP, ENOPROTOOPT) and the socket is
//! NETLINK_ROUTE do we degrade and report success.

use crate::netlink::{self, SockaddrNl};
use crate::rewrite::{self, Fix};
use crate::subs::{self, Queued};
use crate::sys::{self, syscall6};

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

fn refused(r: isize) -> bool {
    matches!(
        (-r) as i32,
        libc::EACCES | libc::EPERM | libc::EOPNOTSUPP | libc::ENOPROTOOPT
    )
}

fn is_route_netlink(fd: i32) -> bool {
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
    match std::panic::catch_unwind(|| dispatch(nr, a, origin)) {
        Ok(r) => r,
        Err(_) => syscall6(nr, a),
    }
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
            r
        }
        libc::SYS_sendmsg => {
            let r = sendmsg(fd, a);
            if r >= 0 && a[1] != 0 && first_is_candidate(a[1]) {
                let req = gather(a[1]);
                after_send(fd, &req, origin);
            }
            r
        }
        libc::SYS_setsockopt => setsockopt(fd, a, origin),
        libc::SYS_recvfrom | libc::SYS_recvmsg | libc::SYS_read => recv(nr, fd, a, origin),
        libc::SYS_close => {
            subs::remove(fd);
            syscall6(nr, a)
        }
        _ => syscall6(nr, a),
    };
    if origin == Origin::Trap && crate::log::enabled() {
        crate::plog!("trap {}(fd {}) = {}", name(nr), fd, r);
    }
    r
}

fn bind(fd: i32, a: [usize; 6], origin: Origin) -> isize {
    let r = syscall6(libc::SYS_bind, a);
    if !refused(r) {
        return r;
    }
    let Some(addr) = nl_with_groups(a[1], a[2]) else {
        return r;
    };
    if !is_route_netlink(fd) {
        return r;
    }
    // Newer gVisor accepts RTNLGRP_LINK alone: keep what the sandbox takes
    // and synthesize only the rest.
    let link = addr.groups & netlink::GRP_LINK as u32;
    if link != 0 && addr.groups != link {
        let only_link = SockaddrNl {
            groups: link,
            ..addr
        }
        .to_bytes();
        if sys::bind_raw(fd, only_link.as_ptr(), only_link.len() as u32) == 0 {
            let rest = (addr.groups & !link) as u64;
            let ok = subs::degrade(fd, rest, origin == Origin::Trap);
            crate::plog!(
                "bind(fd {}, groups {:#x}) refused ({}): bound with the link group only, other events {}",
                fd,
                addr.groups,
                r,
                if ok { "synthesized" } else { "unavailable" }
            );
            return 0;
        }
    }
    let stripped = SockaddrNl { groups: 0, ..addr }.to_bytes();
    let r2 = sys::bind_raw(fd, stripped.as_ptr(), stripped.len() as u32);
    if r2 != 0 {
        crate::plog!(
            "bind(fd {}, groups {:#x}) refused ({}); retry without groups failed ({})",
            fd,
            addr.groups,
            r,
            r2
        );
        return r;
    }
    let ok = subs::degrade(fd, addr.groups as u64, origin == Origin::Trap);
    crate::plog!(
        "bind(fd {}, groups {:#x}) refused ({}): bound without groups, events {}",
        fd,
        addr.groups,
        r,
        if ok { "synthesized" } else { "unavailable" }
    );
    0
}

/// connect/sendto: strip groups from the destination on refusal.
fn addr_call(nr: i64, fd: i32, a: [usize; 6], ai: usize, li: usize) -> isize {
    let r = syscall6(nr, a);
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
    let r = syscall6(libc::SYS_sendmsg, a);
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
    let r = syscall6(libc::SYS_setsockopt, a);
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

/// Where the program wants the data of a receive call.
enum Dest {
    Plain {
        buf: usize,
        len: usize,
        addr: usize,
        alen: usize,
    },
    Msg {
        msg: usize,
    },
}

fn recv(nr: i64, fd: i32, a: [usize; 6], origin: Origin) -> isize {
    let Some(sub) = subs::get(fd) else {
        return syscall6(nr, a);
    };
    let (dest, flags) = match nr {
        libc::SYS_read => (
            Dest::Plain {
                buf: a[1],
                len: a[2],
                addr: 0,
                alen: 0,
            },
            0,
        ),
        libc::SYS_recvfrom => (
            Dest::Plain {
                buf: a[1],
                len: a[2],
                addr: a[4],
                alen: a[5],
            },
            a[3] as i32,
        ),
        _ => (Dest::Msg { msg: a[1] }, a[2] as i32),
    };
    if nr == libc::SYS_recvmsg && a[1] == 0 {
        return syscall6(nr, a);
    }
    let peek = flags & libc::MSG_PEEK != 0;
    loop {
        // Look at the next datagram without consuming it; this blocks
        // exactly as the program's call would.
        let mut head = [0u8; 64];
        let pf = libc::MSG_PEEK | (flags & libc::MSG_DONTWAIT);
        let n = match sys::recv(fd, &mut head, pf) {
            Ok(n) => n,
            Err(libc::ENOTSOCK) | Err(libc::EBADF) => {
                subs::remove(fd);
                return syscall6(nr, a);
            }
            // In the SIGSYS handler only glibc's internal signals can
            // interrupt us; restart as SA_RESTART would (gVisor does not
            // restart netlink reads by itself).
            Err(libc::EINTR) if origin == Origin::Trap => continue,
            Err(e) => return -(e as isize),
        };
        if netlink::is_echo_error(&head[..n]) {
            // an echoed link vanished before the kernel answered: drop it
            let _ = sys::recv(fd, &mut head, libc::MSG_DONTWAIT);
            continue;
        }
        if !netlink::is_doorbell_reply(&head[..n]) {
            let r = syscall6(nr, a);
            if r > 0 && netlink::is_echo_reply(&head[..n]) {
                normalize_echo(&dest, r as usize);
            }
            return r;
        }
        let q = sub.take(peek);
        if !peek || q.is_none() {
            // consume the doorbell reply
            let _ = sys::recv(fd, &mut head, libc::MSG_DONTWAIT);
        }
        let Some(q) = q else { continue };
        return deliver(&q, &dest, flags);
    }
}

/// Make an echoed RTM_NEWLINK look exactly like the kernel's multicast:
/// sequence 0, port id 0, sender address groups = RTNLGRP_LINK.
fn normalize_echo(dest: &Dest, got: usize) {
    let (buf, len, addr) = match *dest {
        Dest::Plain {
            buf,
            len,
            addr,
            alen,
        } => (buf, len.min(got), if alen != 0 { addr } else { 0 }),
        Dest::Msg { msg } => {
            // SAFETY: the kernel just filled this msghdr and its first iovec.
            unsafe {
                let m = &*(msg as *const libc::msghdr);
                if m.msg_iovlen == 0 || m.msg_iov.is_null() {
                    return;
                }
                let iov = &*m.msg_iov;
                let name = if m.msg_namelen as usize >= netlink::SOCKADDR_NL_LEN {
                    m.msg_name as usize
                } else {
                    0
                };
                (iov.iov_base as usize, iov.iov_len.min(got), name)
            }
        }
    };
    if buf == 0 || len < netlink::NLMSG_HDRLEN {
        return;
    }
    // SAFETY: `len` bytes at `buf` were just written by the kernel into the
    // program's own buffer; we rewrite 8 bytes of the first header.
    let data = unsafe { core::slice::from_raw_parts_mut(buf as *mut u8, len) };
    if netlink::normalize_echo_header(data) && addr != 0 {
        let g = (netlink::GRP_LINK as u32).to_ne_bytes();
        // SAFETY: the kernel just wrote a sockaddr_nl (>= 12 bytes) there.
        unsafe { core::ptr::copy_nonoverlapping(g.as_ptr(), (addr + 8) as *mut u8, 4) };
    }
}

/// Copy a queued datagram into the program's buffers, as recvfrom/recvmsg would.
fn deliver(q: &Queued, dest: &Dest, flags: i32) -> isize {
    let from = SockaddrNl {
        pid: 0,
        groups: q.src_groups,
    }
    .to_bytes();
    let full = q.data.len();
    match *dest {
        Dest::Plain {
            buf,
            len,
            addr,
            alen,
        } => {
            let n = full.min(len);
            if n > 0 && buf != 0 {
                // SAFETY: the program passed `buf` with `len` writable bytes.
                unsafe { core::ptr::copy_nonoverlapping(q.data.as_ptr(), buf as *mut u8, n) };
            }
            if addr != 0 && alen != 0 {
                // SAFETY: the program passed a writable socklen_t and an
                // address buffer of that size.
                unsafe {
                    let l = alen as *mut u32;
                    let room = (*l as usize).min(from.len());
                    core::ptr::copy_nonoverlapping(from.as_ptr(), addr as *mut u8, room);
                    *l = from.len() as u32;
                }
            }
            if flags & libc::MSG_TRUNC != 0 {
                full as isize
            } else {
                n as isize
            }
        }
        Dest::Msg { msg } => {
            // SAFETY: the program passed a valid msghdr with valid iovecs.
            unsafe {
                let m = &mut *(msg as *mut libc::msghdr);
                let mut off = 0usize;
                for i in 0..m.msg_iovlen {
                    if off >= full {
                        break;
                    }
                    let iov = &*m.msg_iov.add(i);
                    let n = (full - off).min(iov.iov_len);
                    if n > 0 && !iov.iov_base.is_null() {
                        core::ptr::copy_nonoverlapping(
                            q.data.as_ptr().add(off),
                            iov.iov_base as *mut u8,
                            n,
                        );
                    }
                    off += n;
                }
                if !m.msg_name.is_null() {
                    let room = (m.msg_namelen as usize).min(from.len());
                    core::ptr::copy_nonoverlapping(from.as_ptr(), m.msg_name as *mut u8, room);
                    m.msg_namelen = from.len() as u32;
                }
                m.msg_controllen = 0;
                m.msg_flags = if off < full { libc::MSG_TRUNC } else { 0 };
                if flags & libc::MSG_TRUNC != 0 {
                    full as isize
                } else {
                    off as isize
                }
            }
        }
    }
}

/// Cheap pre-check on a sendmsg's first iovec: does it start with a request
/// header of a type the preload may have to fix?
fn first_is_candidate(msg: usize) -> bool {
    // SAFETY: the kernel just accepted this msghdr and its iovecs; we read
    // at most the first 16 bytes of the first one.
    let head = unsafe {
        let m = &*(msg as *const libc::msghdr);
        if m.msg_iovlen == 0 || m.msg_iov.is_null() {
            return false;
        }
        let iov = &*m.msg_iov;
        if iov.iov_base.is_null() || iov.iov_len < netlink::NLMSG_HDRLEN {
            return false;
        }
        core::slice::from_raw_parts(iov.iov_base as *const u8, netlink::NLMSG_HDRLEN)
    };
    rewrite::candidate_type(head)
}

/// Concatenate the iovecs of a sendmsg (first 64 KiB).
fn gather(msg: usize) -> Vec<u8> {
    let mut out = Vec::new();
    // SAFETY: the kernel just accepted this msghdr and its iovecs.
    unsafe {
        let m = &*(msg as *const libc::msghdr);
        for i in 0..m.msg_iovlen {
            let iov = &*m.msg_iov.add(i);
            if iov.iov_base.is_null() {
                continue;
            }
            let n = iov.iov_len.min(65536 - out.len());
            out.extend_from_slice(core::slice::from_raw_parts(iov.iov_base as *const u8, n));
            if out.len() >= 65536 {
                break;
            }
        }
    }
    out
}

/// After a request went out: if it is one the sandbox may refuse, look at
/// the kernel's answer (already queued: rtnetlink answers synchronously) and
/// fix a refusal. Never acts when the request succeeded.
fn after_send(fd: i32, req: &[u8], origin: Origin) {
    let Some(h) = rewrite::candidate(req) else {
        return;
    };
    if !is_route_netlink(fd) {
        return;
    }
    let mut buf = vec![0u8; 4096];
    let Ok(n) = sys::recv(fd, &mut buf, libc::MSG_PEEK | libc::MSG_DONTWAIT) else {
        return;
    };
    let Some(err) = rewrite::reply_error(&buf[..n], &h) else {
        return;
    };
    let Some(fix) = rewrite::fix(req, err) else {
        return;
    };
    let portid = sys::netlink_portid(fd);
    let trap = origin == Origin::Trap;
    let consume = || {
        let mut b = [0u8; 256];
        let _ = sys::recv(fd, &mut b, libc::MSG_DONTWAIT);
    };
    match fix {
        Fix::Ack => {
            consume();
            if h.flags & netlink::NLM_F_ACK != 0
                && !subs::inject(fd, netlink::make_ack(&h, portid, 0), 0, trap)
            {
                crate::plog!("fd {}: cannot inject the ACK", fd);
            }
            crate::plog!(
                "fd {}: request type {} refused ({}): answered with success",
                fd,
                h.ty,
                err
            );
        }
        Fix::EmptyDump => {
            consume();
            let _ = subs::inject(fd, netlink::make_done(h.seq, portid), 0, trap);
            crate::plog!(
                "fd {}: dump type {} refused ({}): answered empty",
                fd,
                h.ty,
                err
            );
        }
        Fix::Rewrite { mut msg, ns_pid } => {
            let mut nsfd = -1;
            if let Some((pid, at)) = ns_pid {
                let path = format!("/proc/{}/ns/net\0", pid);
                let Ok(c) = std::ffi::CStr::from_bytes_with_nul(path.as_bytes()) else {
                    return;
                };
                match sys::open_ro(c) {
                    Ok(f) => nsfd = f,
                    Err(_) => return,
                }
                rewrite::patch_ns_fd(&mut msg, at, nsfd);
            }
            consume();
            let r = sys::send(fd, &msg, 0);
            if nsfd >= 0 {
                sys::close(nsfd);
            }
            if r.is_err() {
                let _ = subs::inject(fd, netlink::make_ack(&h, portid, err), 0, trap);
            } else if h.ty == netlink::RTM_NEWADDR {
                // gVisor applies the address before refusing the attribute:
                // the retry then reports EEXIST for what the first try made.
                if let Ok(n) = sys::recv(fd, &mut buf, libc::MSG_PEEK | libc::MSG_DONTWAIT) {
                    if rewrite::reply_error(&buf[..n], &h) == Some(-libc::EEXIST) {
                        consume();
                        let _ = subs::inject(fd, netlink::make_ack(&h, portid, 0), 0, trap);
                    }
                }
            }
            crate::plog!(
                "fd {}: request type {} refused ({}): retried without unsupported attributes: {:?}",
                fd,
                h.ty,
                err,
                r
            );
        }
    }
}
