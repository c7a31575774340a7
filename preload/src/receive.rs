//! The read path of sockets the preload has state for: swap a doorbell
//! reply for the queued datagram, make echoed link messages look like the
//! kernel's multicast, and block with signals masked where gVisor would
//! end a netlink read with EINTR.

use crate::emulate::Origin;
use crate::netlink::{self, SockaddrNl};
use crate::subs::{self, Queued};
use crate::sys::{self, syscall6};

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

pub fn recv(nr: i64, fd: i32, a: [usize; 6], origin: Origin) -> isize {
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
    // The preload's own peeks and reads go through its duplicate of the
    // socket: once the program closes `fd` (another thread may be blocked
    // here) that number can name a new socket at any moment, whose data
    // must not be taken.
    let own = sub.dup();
    loop {
        // Look at the next datagram without consuming it; this blocks
        // exactly as the program's call would (the duplicate shares the
        // file status flags, O_NONBLOCK included).
        let mut head = [0u8; 64];
        let pf = libc::MSG_PEEK | (flags & libc::MSG_DONTWAIT);
        let n = match sys::recv(own, &mut head, pf) {
            Ok(n) => n,
            // In the SIGSYS handler only glibc's internal signals can
            // interrupt us; restart as SA_RESTART would (gVisor does not
            // restart netlink reads by itself).
            Err(libc::EINTR) if origin == Origin::Trap => continue,
            Err(e) => return -(e as isize),
        };
        if sub.closed() {
            // woken after the program closed the fd (see Sub::wake)
            return -(libc::EBADF as isize);
        }
        if netlink::is_echo_error(&head[..n]) {
            // an echoed link vanished before the kernel answered: drop it
            let _ = sys::recv(own, &mut head, libc::MSG_DONTWAIT);
            continue;
        }
        if !netlink::is_doorbell_reply(&head[..n]) {
            let r = syscall6(nr, a);
            if r == -(libc::EBADF as isize) || r == -(libc::ENOTSOCK as isize) {
                subs::remove(fd);
            } else if r > 0 && netlink::is_echo_reply(&head[..n]) {
                normalize_echo(&dest, r as usize);
            }
            return r;
        }
        let q = sub.take(peek);
        if !peek || q.is_none() {
            // consume the doorbell reply
            let _ = sys::recv(own, &mut head, libc::MSG_DONTWAIT);
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
