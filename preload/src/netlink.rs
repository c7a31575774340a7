//! Pure, allocation-light netlink message parsing and building.
//!
//! Nothing here performs a system call or touches raw pointers: every
//! function works on byte slices and returns `None` for anything malformed or
//! truncated, so callers can pass such input through unchanged.

pub const NLMSG_HDRLEN: usize = 16;
pub const NLMSG_NOOP: u16 = 1;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;

pub const RTM_NEWLINK: u16 = 16;
pub const RTM_DELLINK: u16 = 17;
pub const RTM_GETLINK: u16 = 18;
pub const RTM_SETLINK: u16 = 19;
pub const RTM_NEWADDR: u16 = 20;
pub const RTM_DELADDR: u16 = 21;
pub const RTM_GETADDR: u16 = 22;
pub const RTM_NEWNEIGH: u16 = 28;
pub const RTM_GETNEIGH: u16 = 30;

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_MULTI: u16 = 0x2;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;

pub const AF_NETLINK: u16 = 16;
pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;
pub const AF_BRIDGE: u8 = 7;

/// Group masks (bind semantics: bit g-1 for group g).
pub const GRP_LINK: u64 = 1; // group 1
pub const GRP_IPV4_IFADDR: u64 = 1 << (5 - 1);
pub const GRP_IPV6_IFADDR: u64 = 1 << (9 - 1);

/// Sequence number used by the preload's own "doorbell" requests.
pub const DOORBELL_SEQ: u32 = 0xC0DB_E11A;
/// Sequence number of "echo" requests: an RTM_GETLINK for one interface,
/// whose answer (a real RTM_NEWLINK from the kernel) is the event itself.
pub const ECHO_SEQ: u32 = 0xC0DB_E11B;
/// Interface index that never exists: the doorbell request fails with ENODEV.
pub const DOORBELL_IFINDEX: i32 = 0x7fff_fff0;

/// The 16-byte netlink message header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NlHdr {
    pub len: u32,
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    pub pid: u32,
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(o..o + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(o..o + 4)?.try_into().ok()?))
}
fn i32_at(b: &[u8], o: usize) -> Option<i32> {
    u32_at(b, o).map(|v| v as i32)
}

pub const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

impl NlHdr {
    pub fn parse(b: &[u8]) -> Option<NlHdr> {
        Some(NlHdr {
            len: u32_at(b, 0)?,
            ty: u16_at(b, 4)?,
            flags: u16_at(b, 6)?,
            seq: u32_at(b, 8)?,
            pid: u32_at(b, 12)?,
        })
    }
    pub fn to_bytes(self) -> [u8; 16] {
        let mut o = [0u8; 16];
        o[0..4].copy_from_slice(&self.len.to_ne_bytes());
        o[4..6].copy_from_slice(&self.ty.to_ne_bytes());
        o[6..8].copy_from_slice(&self.flags.to_ne_bytes());
        o[8..12].copy_from_slice(&self.seq.to_ne_bytes());
        o[12..16].copy_from_slice(&self.pid.to_ne_bytes());
        o
    }
}

/// One message inside a datagram.
#[derive(Clone, Copy, Debug)]
pub struct Msg<'a> {
    pub hdr: NlHdr,
    /// The whole message including its header (`hdr.len` bytes).
    pub raw: &'a [u8],
    /// The payload after the header.
    pub payload: &'a [u8],
}

/// Iterate over the messages of a datagram; stops at the first malformed one.
pub struct Msgs<'a> {
    buf: &'a [u8],
}

pub fn messages(buf: &[u8]) -> Msgs<'_> {
    Msgs { buf }
}

impl<'a> Iterator for Msgs<'a> {
    type Item = Msg<'a>;
    fn next(&mut self) -> Option<Msg<'a>> {
        let hdr = NlHdr::parse(self.buf)?;
        let len = hdr.len as usize;
        if len < NLMSG_HDRLEN || len > self.buf.len() {
            self.buf = &[];
            return None;
        }
        let raw = &self.buf[..len];
        let next = align4(len).min(self.buf.len());
        self.buf = &self.buf[next..];
        Some(Msg {
            hdr,
            raw,
            payload: &raw[NLMSG_HDRLEN..],
        })
    }
}

/// A route attribute.
#[derive(Clone, Copy, Debug)]
pub struct Attr<'a> {
    pub ty: u16,
    /// The whole attribute including its 4-byte header.
    pub raw: &'a [u8],
    pub data: &'a [u8],
}

pub struct Attrs<'a> {
    buf: &'a [u8],
}

/// Iterate over route attributes; stops at the first malformed one.
pub fn attrs(buf: &[u8]) -> Attrs<'_> {
    Attrs { buf }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Attr<'a>;
    fn next(&mut self) -> Option<Attr<'a>> {
        let len = u16_at(self.buf, 0)? as usize;
        let ty = u16_at(self.buf, 2)?;
        if len < 4 || len > self.buf.len() {
            self.buf = &[];
            return None;
        }
        let raw = &self.buf[..len];
        let next = align4(len).min(self.buf.len());
        self.buf = &self.buf[next..];
        Some(Attr {
            ty: ty & 0x3fff,
            raw,
            data: &raw[4..],
        })
    }
}

/// A parsed `struct sockaddr_nl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockaddrNl {
    pub pid: u32,
    pub groups: u32,
}

pub const SOCKADDR_NL_LEN: usize = 12;

impl SockaddrNl {
    /// Parse; `None` unless it is exactly an AF_NETLINK address of at least 12 bytes.
    pub fn parse(b: &[u8]) -> Option<SockaddrNl> {
        if b.len() < SOCKADDR_NL_LEN || u16_at(b, 0)? != AF_NETLINK {
            return None;
        }
        Some(SockaddrNl {
            pid: u32_at(b, 4)?,
            groups: u32_at(b, 8)?,
        })
    }
    pub fn to_bytes(self) -> [u8; SOCKADDR_NL_LEN] {
        let mut o = [0u8; SOCKADDR_NL_LEN];
        o[0..2].copy_from_slice(&AF_NETLINK.to_ne_bytes());
        o[4..8].copy_from_slice(&self.pid.to_ne_bytes());
        o[8..12].copy_from_slice(&self.groups.to_ne_bytes());
        o
    }
}

/// The request the preload sends on a program's socket to make the kernel
/// queue a reply there (an RTM_GETLINK for an index that never exists).
pub fn doorbell_request() -> [u8; 32] {
    let mut o = [0u8; 32];
    let h = NlHdr {
        len: 32,
        ty: RTM_GETLINK,
        flags: NLM_F_REQUEST | NLM_F_ACK,
        seq: DOORBELL_SEQ,
        pid: 0,
    };
    o[..16].copy_from_slice(&h.to_bytes());
    // struct ifinfomsg: family(1) pad(1) type(2) index(4) flags(4) change(4)
    o[20..24].copy_from_slice(&DOORBELL_IFINDEX.to_ne_bytes());
    o
}

/// An RTM_GETLINK for `index` (no ACK): the kernel answers with the link's
/// current RTM_NEWLINK, which a subscriber takes as a notification.
pub fn echo_request(index: i32) -> [u8; 32] {
    let mut o = [0u8; 32];
    let h = NlHdr {
        len: 32,
        ty: RTM_GETLINK,
        flags: NLM_F_REQUEST,
        seq: ECHO_SEQ,
        pid: 0,
    };
    o[..16].copy_from_slice(&h.to_bytes());
    o[20..24].copy_from_slice(&index.to_ne_bytes());
    o
}

/// Whether a datagram is the kernel's answer to an echo.
pub fn is_echo_reply(b: &[u8]) -> bool {
    matches!(NlHdr::parse(b), Some(h) if h.ty == RTM_NEWLINK && h.seq == ECHO_SEQ)
}

/// Rewrite an echo answer's first header to look like a notification
/// (sequence 0, port id 0). False (and nothing changed) if it is not one.
pub fn normalize_echo_header(b: &mut [u8]) -> bool {
    if !is_echo_reply(b) {
        return false;
    }
    b[8..16].fill(0);
    true
}

/// Whether a datagram is an error answering an echo (the link vanished).
pub fn is_echo_error(b: &[u8]) -> bool {
    matches!(NlHdr::parse(b), Some(h) if h.ty == NLMSG_ERROR && h.seq == ECHO_SEQ)
}

/// Whether a datagram (or its first bytes) is the kernel's reply to a doorbell.
pub fn is_doorbell_reply(b: &[u8]) -> bool {
    let Some(h) = NlHdr::parse(b) else {
        return false;
    };
    if h.ty != NLMSG_ERROR || h.seq != DOORBELL_SEQ {
        return false;
    }
    // The error message embeds the original request header after the errno.
    match NlHdr::parse(b.get(20..).unwrap_or(&[])) {
        Some(orig) => orig.seq == DOORBELL_SEQ && orig.ty == RTM_GETLINK,
        None => b.len() < 36, // truncated peek: header alone is convincing enough
    }
}

/// Turn a dumped RTM_NEWLINK/RTM_NEWADDR message into a multicast-style
/// notification of type `ty`: sequence 0, port id 0, no flags.
pub fn make_event(msg: &[u8], ty: u16) -> Option<Vec<u8>> {
    let h = NlHdr::parse(msg)?;
    if (h.len as usize) != msg.len() {
        return None;
    }
    let mut v = msg.to_vec();
    let nh = NlHdr {
        len: h.len,
        ty,
        flags: 0,
        seq: 0,
        pid: 0,
    };
    v[..16].copy_from_slice(&nh.to_bytes());
    Some(v)
}

/// An NLMSG_ERROR message (error 0 = ACK) answering `orig` (its first 16 bytes).
pub fn make_ack(orig: &NlHdr, portid: u32, error: i32) -> Vec<u8> {
    let mut v = Vec::with_capacity(36);
    let h = NlHdr {
        len: 36,
        ty: NLMSG_ERROR,
        flags: 0x100, /* NLM_F_CAPPED */
        seq: orig.seq,
        pid: portid,
    };
    v.extend_from_slice(&h.to_bytes());
    v.extend_from_slice(&error.to_ne_bytes());
    v.extend_from_slice(&orig.to_bytes());
    v
}

/// An empty dump's NLMSG_DONE for `seq`.
pub fn make_done(seq: u32, portid: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(20);
    let h = NlHdr {
        len: 20,
        ty: NLMSG_DONE,
        flags: NLM_F_MULTI,
        seq,
        pid: portid,
    };
    v.extend_from_slice(&h.to_bytes());
    v.extend_from_slice(&0i32.to_ne_bytes());
    v
}

/// A dump request (`RTM_GETLINK` or `RTM_GETADDR`) with the given sequence.
pub fn dump_request(ty: u16, seq: u32) -> Vec<u8> {
    let body = if ty == RTM_GETLINK { 16 } else { 8 };
    let len = NLMSG_HDRLEN + body;
    let mut v = vec![0u8; len];
    let h = NlHdr {
        len: len as u32,
        ty,
        flags: NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        pid: 0,
    };
    v[..16].copy_from_slice(&h.to_bytes());
    v
}

/// Interface index of an RTM_*LINK payload (struct ifinfomsg).
pub fn ifinfo_index(payload: &[u8]) -> Option<i32> {
    i32_at(payload, 4)
}

/// The error code carried by an NLMSG_ERROR payload.
pub fn error_code(payload: &[u8]) -> Option<i32> {
    i32_at(payload, 0)
}

pub const IFINFOMSG_LEN: usize = 16;
pub const IFADDRMSG_LEN: usize = 8;

/// The attribute section of a link or address message, or `None` if too short.
pub fn attr_section<'a>(msg: &Msg<'a>) -> Option<&'a [u8]> {
    let fixed = match msg.hdr.ty {
        RTM_NEWLINK | RTM_DELLINK | RTM_GETLINK | RTM_SETLINK => IFINFOMSG_LEN,
        RTM_NEWADDR | RTM_DELADDR | RTM_GETADDR => IFADDRMSG_LEN,
        RTM_NEWNEIGH | RTM_GETNEIGH => 12,
        _ => return None,
    };
    msg.payload.get(fixed..)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn link_msg(index: i32, flags: u32, name: &str, extra: &[(u16, &[u8])]) -> Vec<u8> {
        let mut v = vec![0u8; 16 + 16];
        v[16 + 4..16 + 8].copy_from_slice(&index.to_ne_bytes());
        v[16 + 8..16 + 12].copy_from_slice(&flags.to_ne_bytes());
        let mut add = |ty: u16, d: &[u8]| {
            let l = 4 + d.len();
            v.extend_from_slice(&(l as u16).to_ne_bytes());
            v.extend_from_slice(&ty.to_ne_bytes());
            v.extend_from_slice(d);
            while v.len() & 3 != 0 {
                v.push(0);
            }
        };
        let mut n = name.as_bytes().to_vec();
        n.push(0);
        add(3, &n);
        for (t, d) in extra {
            add(*t, d);
        }
        let h = NlHdr {
            len: v.len() as u32,
            ty: RTM_NEWLINK,
            flags: NLM_F_MULTI,
            seq: 9,
            pid: 77,
        };
        v[..16].copy_from_slice(&h.to_bytes());
        v
    }

    #[test]
    fn header_roundtrip() {
        let h = NlHdr {
            len: 20,
            ty: 3,
            flags: 2,
            seq: 5,
            pid: 6,
        };
        assert_eq!(NlHdr::parse(&h.to_bytes()), Some(h));
        assert_eq!(NlHdr::parse(&[0u8; 15]), None);
    }

    #[test]
    fn iterate_messages_and_stop_on_garbage() {
        let mut d = make_done(1, 2);
        d.extend_from_slice(&make_ack(
            &NlHdr {
                len: 16,
                ty: 16,
                flags: 5,
                seq: 3,
                pid: 0,
            },
            9,
            0,
        ));
        let v: Vec<_> = messages(&d).collect();
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].hdr.ty, NLMSG_ERROR);
        // length field larger than the buffer
        let mut bad = make_done(1, 2);
        bad[0] = 200;
        assert_eq!(messages(&bad).count(), 0);
        // length smaller than a header
        bad[0] = 4;
        assert_eq!(messages(&bad).count(), 0);
        assert_eq!(messages(&[]).count(), 0);
    }

    #[test]
    fn attributes() {
        let m = link_msg(3, 1, "br0", &[(4, &1500u32.to_ne_bytes())]);
        let msg = messages(&m).next().unwrap();
        let a: Vec<_> = attrs(attr_section(&msg).unwrap()).collect();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].ty, 3);
        assert_eq!(a[0].data, b"br0\0");
        assert_eq!(a[1].data, 1500u32.to_ne_bytes());
        assert_eq!(ifinfo_index(msg.payload), Some(3));
        // truncated attribute stops iteration
        assert_eq!(attrs(&[8, 0, 3, 0, 1]).count(), 0);
    }

    #[test]
    fn sockaddr() {
        let a = SockaddrNl { pid: 0, groups: 1 };
        assert_eq!(SockaddrNl::parse(&a.to_bytes()), Some(a));
        assert_eq!(SockaddrNl::parse(&a.to_bytes()[..11]), None);
        let mut inet = a.to_bytes();
        inet[0] = 2;
        assert_eq!(SockaddrNl::parse(&inet), None);
    }

    #[test]
    fn doorbell_detection() {
        let req = doorbell_request();
        let h = NlHdr::parse(&req).unwrap();
        let reply = make_ack(&h, 1, -19);
        assert!(is_doorbell_reply(&reply));
        assert!(is_doorbell_reply(&reply[..16]));
        let other = make_ack(
            &NlHdr {
                seq: DOORBELL_SEQ,
                ty: RTM_NEWLINK,
                ..h
            },
            1,
            -19,
        );
        assert!(!is_doorbell_reply(&other));
        assert!(!is_doorbell_reply(&make_done(DOORBELL_SEQ, 1)));
        assert!(!is_doorbell_reply(&[1, 2, 3]));
    }

    #[test]
    fn echo() {
        let r = echo_request(7);
        let h = NlHdr::parse(&r).unwrap();
        assert_eq!(
            (h.ty, h.seq, h.flags),
            (RTM_GETLINK, ECHO_SEQ, NLM_F_REQUEST)
        );
        assert_eq!(ifinfo_index(&r[16..]), Some(7));
        assert!(is_echo_error(&make_ack(&h, 1, -19)));
        assert!(!is_echo_error(&make_ack(&NlHdr { seq: 1, ..h }, 1, -19)));
        assert!(!is_doorbell_reply(&make_ack(&h, 1, -19)));
        let mut reply = make_event(&make_done(1, 1), RTM_NEWLINK).unwrap();
        reply[8..12].copy_from_slice(&ECHO_SEQ.to_ne_bytes());
        reply[12..16].copy_from_slice(&55u32.to_ne_bytes());
        assert!(is_echo_reply(&reply));
        assert!(normalize_echo_header(&mut reply));
        let n = NlHdr::parse(&reply).unwrap();
        assert_eq!((n.seq, n.pid), (0, 0));
        assert!(!normalize_echo_header(&mut reply));
    }

    #[test]
    fn event_from_dump() {
        let m = link_msg(3, 1, "br0", &[]);
        let e = make_event(&m, RTM_DELLINK).unwrap();
        let h = NlHdr::parse(&e).unwrap();
        assert_eq!((h.ty, h.flags, h.seq, h.pid), (RTM_DELLINK, 0, 0, 0));
        assert_eq!(&e[16..], &m[16..]);
        assert!(make_event(&m[..20], RTM_NEWLINK).is_none());
    }
}
