//! Start-up probe: does this kernel/sandbox refuse anything the preload
//! fixes? If not (a normal Linux kernel), the seccomp filter is not installed
//! at all, so the program pays nothing for unrelated system calls.

use crate::netlink::{self, messages, SockaddrNl};
use crate::sys;

/// What the probe found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Subscriptions or neighbour dumps are refused: the trap path is useful.
    Refuses(&'static str),
    /// Everything the probe tried works.
    Complete,
    /// No NETLINK_ROUTE socket at all: nothing to help with.
    NoNetlink,
}

/// Try a subscription bind and an RTM_GETNEIGH dump on a scratch socket.
pub fn probe() -> Verdict {
    let Ok(fd) = sys::socket(
        libc::AF_NETLINK,
        libc::SOCK_RAW | libc::SOCK_CLOEXEC,
        libc::NETLINK_ROUTE,
    ) else {
        return Verdict::NoNetlink;
    };
    let v = run(fd);
    sys::close(fd);
    v
}

fn run(fd: i32) -> Verdict {
    let groups = (netlink::GRP_LINK | netlink::GRP_IPV4_IFADDR | netlink::GRP_IPV6_IFADDR) as u32;
    let a = SockaddrNl { pid: 0, groups }.to_bytes();
    if sys::bind_raw(fd, a.as_ptr(), a.len() as u32) < 0 {
        return Verdict::Refuses("subscriptions are not permitted here");
    }
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
    let seq = 0xC0DB_0001;
    let mut req = vec![0u8; 28];
    let h = netlink::NlHdr {
        len: 28,
        ty: netlink::RTM_GETNEIGH,
        flags: netlink::NLM_F_REQUEST | netlink::NLM_F_DUMP,
        seq,
        pid: 0,
    };
    req[..16].copy_from_slice(&h.to_bytes());
    if sys::send(fd, &req, 0).is_err() {
        return Verdict::Refuses("requests cannot be sent");
    }
    let mut buf = vec![0u8; 32 * 1024];
    for _ in 0..64 {
        let Ok(n) = sys::recv(fd, &mut buf, 0) else {
            return Verdict::Refuses("no answer to a neighbour dump");
        };
        for m in messages(&buf[..n]) {
            if m.hdr.seq != seq {
                continue; // an event from the groups we joined
            }
            match m.hdr.ty {
                netlink::NLMSG_DONE => return Verdict::Complete,
                netlink::NLMSG_ERROR => {
                    return Verdict::Refuses("neighbour dumps are not supported here")
                }
                _ => {}
            }
        }
    }
    Verdict::Refuses("neighbour dump did not end")
}
