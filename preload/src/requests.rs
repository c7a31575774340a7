//! Refused requests: after a request went out on a NETLINK_ROUTE socket,
//! look at the kernel's answer and fix a refusal (see `rewrite`).

use crate::emulate::{is_route_netlink, Origin};
use crate::netlink;
use crate::rewrite::{self, Fix};
use crate::subs;
use crate::sys;

/// Cheap pre-check on a sendmsg's first iovec: does it start with a request
/// header of a type the preload may have to fix?
pub fn first_is_candidate(msg: usize) -> bool {
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
pub fn gather(msg: usize) -> Vec<u8> {
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

/// An error answer worth a log line: a refusal, or EINVAL (gVisor's answer
/// to flags it does not model); ENODEV, EEXIST and the like are ordinary.
fn unhandled_refusal(err: i32) -> bool {
    rewrite::is_refusal(err) || err == -libc::EINVAL
}

/// With the call log on: log a refusal (or EINVAL, gVisor's answer to flags
/// it does not model) answering any other rtnetlink request, so refusals the
/// preload does not handle show up in the log.
fn audit(fd: i32, req: &[u8]) {
    let Some(m) = netlink::messages(req).next() else {
        return;
    };
    if m.hdr.flags & netlink::NLM_F_REQUEST == 0 || !is_route_netlink(fd) {
        return;
    }
    let mut buf = [0u8; 64];
    let Ok(n) = sys::recv(fd, &mut buf, libc::MSG_PEEK | libc::MSG_DONTWAIT) else {
        return;
    };
    if let Some(err) = rewrite::reply_error(&buf[..n], &m.hdr).filter(|e| unhandled_refusal(*e)) {
        crate::plog!(
            "fd {}: request type {} flags {:#x} answered with error {}: not handled",
            fd,
            m.hdr.ty,
            m.hdr.flags,
            err
        );
    }
}

/// After a request went out: if it is one the sandbox may refuse, look at
/// the kernel's answer (already queued: rtnetlink answers synchronously) and
/// fix a refusal. Never acts when the request succeeded.
pub fn after_send(fd: i32, req: &[u8], origin: Origin) {
    let Some(h) = rewrite::candidate(req) else {
        if crate::log::enabled() {
            audit(fd, req);
        }
        return;
    };
    // Peek first (it neither blocks nor consumes, whatever the socket is):
    // an accepted request, the usual case, then costs one system call, and
    // the socket's protocol is asked only about an error answer.
    let mut buf = vec![0u8; 4096];
    let Ok(n) = sys::recv(fd, &mut buf, libc::MSG_PEEK | libc::MSG_DONTWAIT) else {
        return;
    };
    let Some(err) = rewrite::reply_error(&buf[..n], &h).filter(|e| *e != 0) else {
        return;
    };
    if !is_route_netlink(fd) {
        return;
    }
    let Some(fix) = rewrite::fix(req, err) else {
        if !unhandled_refusal(err) {
            return;
        }
        crate::plog!(
            "fd {}: request type {} flags {:#x} answered with error {}: not handled",
            fd,
            h.ty,
            h.flags,
            err
        );
        return;
    };
    let portid = sys::netlink_portid(fd);
    let trap = origin == Origin::Trap;
    // An answer the preload makes up must reach the program: otherwise
    // leave the refusal where it is rather than consume it.
    if matches!(fix, Fix::Ack | Fix::EmptyDump) && !subs::can_deliver(fd, trap) {
        crate::plog!(
            "fd {}: request type {} refused ({}): no way to deliver an answer, refusal left",
            fd,
            h.ty,
            err
        );
        return;
    }
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
