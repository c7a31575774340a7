//! Refused requests: which outgoing requests to watch, and what to do when
//! the sandbox refuses them. Pure functions over byte slices.

use crate::netlink::{self, attrs, messages, NlHdr};

/// Attributes gVisor accepts on RTM_NEWLINK / RTM_SETLINK.
const LINK_OK: &[u16] = &[
    1,  // IFLA_ADDRESS
    3,  // IFLA_IFNAME
    4,  // IFLA_MTU
    10, // IFLA_MASTER
    13, // IFLA_TXQLEN
    18, // IFLA_LINKINFO
    28, // IFLA_NET_NS_FD
];
const IFLA_NET_NS_PID: u16 = 19;
const IFLA_NET_NS_FD: u16 = 28;
/// Attributes gVisor accepts on RTM_NEWADDR.
const ADDR_OK: &[u16] = &[
    1, /* IFA_ADDRESS */
    2, /* IFA_LOCAL */
    4, /* IFA_BROADCAST */
];
const IFF_UP: u32 = 1;

/// What the preload does with a refused request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fix {
    /// Answer with a success ACK (when the request asked for one).
    Ack,
    /// Answer with an empty dump (NLMSG_DONE).
    EmptyDump,
    /// Send this rewritten request instead; `ns_pid` is the pid whose
    /// network namespace fd must be patched in at `ns_fd_offset`.
    Rewrite {
        msg: Vec<u8>,
        ns_pid: Option<(u32, usize)>,
    },
}

/// The single request in an outgoing datagram, if it is one the preload may
/// have to fix: returns its header.
pub fn candidate(buf: &[u8]) -> Option<NlHdr> {
    let mut it = messages(buf);
    let m = it.next()?;
    if it.next().is_some() || m.hdr.flags & netlink::NLM_F_REQUEST == 0 {
        return None;
    }
    match m.hdr.ty {
        netlink::RTM_NEWNEIGH | netlink::RTM_GETNEIGH => Some(m.hdr),
        netlink::RTM_NEWLINK | netlink::RTM_SETLINK | netlink::RTM_NEWADDR => Some(m.hdr),
        _ => None,
    }
}

/// Whether a header (first 16 bytes) is a request of a type `candidate`
/// may accept; a cheap filter before gathering the whole message.
pub fn candidate_type(head: &[u8]) -> bool {
    match NlHdr::parse(head) {
        Some(h) => {
            h.flags & netlink::NLM_F_REQUEST != 0
                && matches!(
                    h.ty,
                    netlink::RTM_NEWNEIGH
                        | netlink::RTM_GETNEIGH
                        | netlink::RTM_NEWLINK
                        | netlink::RTM_SETLINK
                        | netlink::RTM_NEWADDR
                )
        }
        None => false,
    }
}

/// Whether `err` (a negative errno from an NLMSG_ERROR) is a sandbox refusal.
pub fn is_refusal(err: i32) -> bool {
    matches!(
        -err,
        libc::EOPNOTSUPP | libc::EPERM | libc::EACCES | libc::ENOPROTOOPT
    )
}

/// Decide the fix for request `req` refused with `err` (negative errno).
pub fn fix(req: &[u8], err: i32) -> Option<Fix> {
    let m = messages(req).next()?;
    if !is_refusal(err) {
        return None;
    }
    match m.hdr.ty {
        netlink::RTM_NEWNEIGH => Some(Fix::Ack),
        netlink::RTM_GETNEIGH if m.hdr.flags & netlink::NLM_F_DUMP == netlink::NLM_F_DUMP => {
            Some(Fix::EmptyDump)
        }
        netlink::RTM_SETLINK | netlink::RTM_NEWLINK
            if m.payload.first() == Some(&netlink::AF_BRIDGE) =>
        {
            Some(Fix::Ack)
        }
        netlink::RTM_NEWLINK | netlink::RTM_SETLINK if -err == libc::EOPNOTSUPP => {
            rewrite(&m, LINK_OK, 16)
        }
        netlink::RTM_NEWADDR if -err == libc::EOPNOTSUPP => rewrite(&m, ADDR_OK, 8),
        _ => None,
    }
}

/// Keep only accepted top-level attributes; IFLA_NET_NS_PID becomes
/// IFLA_NET_NS_FD (value patched in by the caller). `None` if nothing changes.
fn rewrite(m: &netlink::Msg<'_>, ok: &[u16], fixed: usize) -> Option<Fix> {
    let head = m.payload.get(..fixed)?;
    let rest = &m.payload[fixed..];
    let mut out = Vec::with_capacity(m.raw.len());
    out.extend_from_slice(&m.raw[..netlink::NLMSG_HDRLEN]);
    out.extend_from_slice(head);
    let mut changed = false;
    if fixed == 16 {
        // ifi_flags / ifi_change may only carry IFF_UP
        for off in [netlink::NLMSG_HDRLEN + 8, netlink::NLMSG_HDRLEN + 12] {
            let v = u32::from_ne_bytes(out[off..off + 4].try_into().ok()?);
            if v & !IFF_UP != 0 && v != u32::MAX {
                out[off..off + 4].copy_from_slice(&(v & IFF_UP).to_ne_bytes());
                changed = true;
            }
        }
    }
    let mut ns_pid = None;
    let mut consumed = 0usize;
    for a in attrs(rest) {
        consumed += netlink::align4(a.raw.len());
        if a.ty == IFLA_NET_NS_PID && fixed == 16 && a.data.len() == 4 {
            let pid = u32::from_ne_bytes(a.data.try_into().ok()?);
            let at = out.len() + 4;
            out.extend_from_slice(&8u16.to_ne_bytes());
            out.extend_from_slice(&IFLA_NET_NS_FD.to_ne_bytes());
            out.extend_from_slice(&0u32.to_ne_bytes());
            ns_pid = Some((pid, at));
            changed = true;
        } else if ok.contains(&a.ty) {
            out.extend_from_slice(a.raw);
            while out.len() & 3 != 0 {
                out.push(0);
            }
        } else {
            changed = true;
        }
    }
    if consumed < rest.len().saturating_sub(3) {
        return None; // malformed attribute section: leave it alone
    }
    if !changed {
        return None;
    }
    let len = out.len() as u32;
    out[0..4].copy_from_slice(&len.to_ne_bytes());
    Some(Fix::Rewrite { msg: out, ns_pid })
}

/// Patch the namespace fd into a rewritten request.
pub fn patch_ns_fd(msg: &mut [u8], at: usize, fd: i32) -> bool {
    match msg.get_mut(at..at + 4) {
        Some(s) => {
            s.copy_from_slice(&fd.to_ne_bytes());
            true
        }
        None => false,
    }
}

/// The first message of a reply datagram, if it is an NLMSG_ERROR answering
/// `req`: returns its error code.
pub fn reply_error(reply: &[u8], req: &NlHdr) -> Option<i32> {
    let m = messages(reply).next()?;
    if m.hdr.ty != netlink::NLMSG_ERROR || m.hdr.seq != req.seq {
        return None;
    }
    netlink::error_code(m.payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};

    fn msg(ty: u16, flags: u16, fixed: &[u8], at: &[(u16, &[u8])]) -> Vec<u8> {
        let mut v = vec![0u8; 16];
        v.extend_from_slice(fixed);
        for (t, d) in at {
            v.extend_from_slice(&((4 + d.len()) as u16).to_ne_bytes());
            v.extend_from_slice(&t.to_ne_bytes());
            v.extend_from_slice(d);
            while v.len() & 3 != 0 {
                v.push(0);
            }
        }
        let h = NlHdr {
            len: v.len() as u32,
            ty,
            flags,
            seq: 42,
            pid: 0,
        };
        v[..16].copy_from_slice(&h.to_bytes());
        v
    }

    const EOPNOTSUPP: i32 = -libc::EOPNOTSUPP;

    #[test]
    fn neigh() {
        let add = msg(
            netlink::RTM_NEWNEIGH,
            NLM_F_REQUEST | NLM_F_ACK,
            &[0; 12],
            &[],
        );
        assert!(candidate(&add).is_some());
        assert_eq!(fix(&add, EOPNOTSUPP), Some(Fix::Ack));
        assert_eq!(fix(&add, -libc::EINVAL), None);
        let dump = msg(
            netlink::RTM_GETNEIGH,
            NLM_F_REQUEST | NLM_F_DUMP,
            &[0; 12],
            &[],
        );
        assert_eq!(fix(&dump, EOPNOTSUPP), Some(Fix::EmptyDump));
    }

    #[test]
    fn bridge_setlink() {
        let mut fixed = [0u8; 16];
        fixed[0] = netlink::AF_BRIDGE;
        let m = msg(
            netlink::RTM_SETLINK,
            NLM_F_REQUEST | NLM_F_ACK,
            &fixed,
            &[(12, &[0; 8])],
        );
        assert_eq!(fix(&m, EOPNOTSUPP), Some(Fix::Ack));
    }

    #[test]
    fn strip_and_ns_pid() {
        let mut fixed = [0u8; 16];
        fixed[8] = 0x41; // IFF_UP | IFF_RUNNING
        fixed[12] = 0x41;
        let m = msg(
            netlink::RTM_NEWLINK,
            NLM_F_REQUEST | NLM_F_ACK,
            &fixed,
            &[
                (3, b"v0\0"),
                (19, &1234u32.to_ne_bytes()),
                (16, &[1, 0, 0, 0]),
                (4, &1500u32.to_ne_bytes()),
            ],
        );
        let Some(Fix::Rewrite {
            msg: mut out,
            ns_pid,
        }) = fix(&m, EOPNOTSUPP)
        else {
            panic!()
        };
        let (pid, at) = ns_pid.unwrap();
        assert_eq!(pid, 1234);
        assert!(patch_ns_fd(&mut out, at, 9));
        let mm = messages(&out).next().unwrap();
        assert_eq!(mm.hdr.len as usize, out.len());
        assert_eq!(mm.hdr.seq, 42);
        let tys: Vec<u16> = attrs(&mm.payload[16..]).map(|a| a.ty).collect();
        assert_eq!(tys, vec![3, 28, 4]);
        let fdattr = attrs(&mm.payload[16..]).find(|a| a.ty == 28).unwrap();
        assert_eq!(fdattr.data, 9i32.to_ne_bytes());
        assert_eq!(mm.payload[8], 1);
        // nothing to strip: no rewrite
        let clean = msg(
            netlink::RTM_NEWLINK,
            NLM_F_REQUEST | NLM_F_ACK,
            &[0; 16],
            &[(3, b"v0\0")],
        );
        assert_eq!(fix(&clean, EOPNOTSUPP), None);
    }

    #[test]
    fn newaddr_strips_flags_and_cacheinfo() {
        let m = msg(
            netlink::RTM_NEWADDR,
            NLM_F_REQUEST | NLM_F_ACK,
            &[2, 24, 0, 0, 5, 0, 0, 0],
            &[(2, &[10, 0, 0, 1]), (8, &[0; 4]), (1, &[10, 0, 0, 1])],
        );
        let Some(Fix::Rewrite { msg, ns_pid }) = fix(&m, EOPNOTSUPP) else {
            panic!()
        };
        assert!(ns_pid.is_none());
        let mm = messages(&msg).next().unwrap();
        let tys: Vec<u16> = attrs(&mm.payload[8..]).map(|a| a.ty).collect();
        assert_eq!(tys, vec![2, 1]);
    }

    #[test]
    fn candidate_prefilter_agrees() {
        let m = msg(netlink::RTM_NEWNEIGH, NLM_F_REQUEST, &[0; 12], &[]);
        assert!(candidate_type(&m[..16]) && candidate(&m).is_some());
        let g = msg(netlink::RTM_GETLINK, NLM_F_REQUEST, &[0; 16], &[]);
        assert!(!candidate_type(&g[..16]));
        assert!(!candidate_type(&[0; 8]));
    }

    #[test]
    fn not_candidates() {
        let m = msg(
            netlink::RTM_GETLINK,
            NLM_F_REQUEST | NLM_F_DUMP,
            &[0; 16],
            &[],
        );
        assert!(candidate(&m).is_none());
        let mut two = msg(netlink::RTM_NEWNEIGH, NLM_F_REQUEST, &[0; 12], &[]);
        two.extend_from_slice(&two.clone());
        assert!(candidate(&two).is_none());
        assert!(candidate(&[1, 2, 3]).is_none());
        assert_eq!(fix(&[0u8; 10], EOPNOTSUPP), None);
    }

    #[test]
    fn reply_matching() {
        let req = NlHdr {
            len: 16,
            ty: netlink::RTM_NEWNEIGH,
            flags: 5,
            seq: 42,
            pid: 0,
        };
        let r = netlink::make_ack(&req, 1, EOPNOTSUPP);
        assert_eq!(reply_error(&r, &req), Some(EOPNOTSUPP));
        assert_eq!(reply_error(&r, &NlHdr { seq: 1, ..req }), None);
    }
}
