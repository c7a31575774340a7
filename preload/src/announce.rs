//! Address announcements: recognise the unsolicited ARP a program sends so
//! that peers update their caches after an IPv4 address moved to a new MAC
//! (moby >= 28 sends one for every interface it brings up in a container).
//!
//! It is an optimisation: the kernel resolves addresses on its own when
//! they are missing. gVisor refuses writes on packet sockets (EOPNOTSUPP), so
//! a refused announcement is reported as sent. Anything else sent on such a
//! socket keeps its real error. (moby's IPv6 counterpart, an unsolicited
//! neighbour advertisement on a raw ICMPv6 socket, is accepted by gVisor.)
//!
//! Pure: byte slices in, verdicts out; `None`/`false` for anything malformed.

pub const AF_PACKET: u16 = 17;
/// `sizeof(struct sockaddr_ll)`.
pub const SOCKADDR_LL_LEN: usize = 20;
pub const ETH_P_ARP: u16 = 0x0806;
const ETH_HLEN: usize = 14;
const ARP_LEN: usize = 28;
const ARPHRD_ETHER: u16 = 1;
const ARPOP_REQUEST: u16 = 1;
const ARPOP_REPLY: u16 = 2;

fn be16(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(o..o + 2)?.try_into().ok()?))
}

fn ne16(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(o..o + 2)?.try_into().ok()?))
}

/// A parsed `struct sockaddr_ll` (the fields that matter here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockaddrLl {
    /// Ethernet protocol, host order.
    pub protocol: u16,
    pub ifindex: i32,
    pub halen: u8,
}

impl SockaddrLl {
    /// Parse; `None` unless it is an AF_PACKET address of at least 20 bytes.
    pub fn parse(b: &[u8]) -> Option<SockaddrLl> {
        if b.len() < SOCKADDR_LL_LEN || ne16(b, 0)? != AF_PACKET {
            return None;
        }
        Some(SockaddrLl {
            protocol: be16(b, 2)?,
            ifindex: i32::from_ne_bytes(b.get(4..8)?.try_into().ok()?),
            halen: *b.get(11)?,
        })
    }
}

/// Whether `arp` (an ARP packet without link header) is an unsolicited ARP
/// for IPv4 over Ethernet: a request or reply whose sender and target
/// protocol addresses are the same (RFC 5227's announcement). Both 0.0.0.0
/// counts too: moby >= 28 sends that for an address a remote IPAM driver
/// gave it (held in 16-byte form, it copies the first four bytes of
/// ::ffff:a.b.c.d). An RFC 5227 probe (sender 0.0.0.0, target an address)
/// is not an announcement.
pub fn is_gratuitous_arp(arp: &[u8]) -> bool {
    if arp.len() < ARP_LEN {
        return false;
    }
    let fixed_ok = be16(arp, 0) == Some(ARPHRD_ETHER)
        && be16(arp, 2) == Some(0x0800)
        && arp[4] == 6
        && arp[5] == 4
        && matches!(be16(arp, 6), Some(ARPOP_REQUEST | ARPOP_REPLY));
    fixed_ok && arp[14..18] == arp[24..28]
}

/// A datagram sent with `sendto(fd, pkt, .., addr)` on an AF_PACKET socket:
/// is it an unsolicited ARP? `raw`: the socket is SOCK_RAW (the packet then
/// starts with an Ethernet header), else SOCK_DGRAM (the kernel adds it).
pub fn is_packet_announcement(addr: &[u8], pkt: &[u8], raw: bool) -> bool {
    let Some(a) = SockaddrLl::parse(addr) else {
        return false;
    };
    if raw {
        // ethertype inside the frame decides; the address's protocol is unused
        return be16(pkt, 12) == Some(ETH_P_ARP)
            && is_gratuitous_arp(&pkt[ETH_HLEN.min(pkt.len())..]);
    }
    a.protocol == ETH_P_ARP && is_gratuitous_arp(pkt)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What moby's l2disco builds: a broadcast unsolicited ARP request.
    fn arp(ip: [u8; 4], target: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0, 1, 8, 0, 6, 4, 0, 1];
        p.extend_from_slice(&[2, 0x42, 0xac, 0x11, 0, 2]);
        p.extend_from_slice(&ip);
        p.extend_from_slice(&[0; 6]);
        p.extend_from_slice(&target);
        p
    }

    fn ll(protocol: u16, ifindex: i32) -> Vec<u8> {
        let mut a = vec![0u8; 20];
        a[0..2].copy_from_slice(&AF_PACKET.to_ne_bytes());
        a[2..4].copy_from_slice(&protocol.to_be_bytes());
        a[4..8].copy_from_slice(&ifindex.to_ne_bytes());
        a[8..10].copy_from_slice(&1u16.to_ne_bytes());
        a[11] = 6;
        a[12..18].fill(0xff);
        a
    }

    #[test]
    fn sockaddr_ll() {
        let a = SockaddrLl::parse(&ll(ETH_P_ARP, 7)).unwrap();
        assert_eq!((a.protocol, a.ifindex, a.halen), (ETH_P_ARP, 7, 6));
        assert!(SockaddrLl::parse(&ll(ETH_P_ARP, 7)[..19]).is_none());
        let mut inet = ll(ETH_P_ARP, 7);
        inet[0] = 2;
        assert!(SockaddrLl::parse(&inet).is_none());
    }

    #[test]
    fn moby_unsolicited_arp() {
        let ip = [172, 17, 0, 2];
        assert!(is_gratuitous_arp(&arp(ip, ip)));
        assert!(is_packet_announcement(
            &ll(ETH_P_ARP, 7),
            &arp(ip, ip),
            false
        ));
        // a real resolution request (target differs) is not an announcement
        assert!(!is_packet_announcement(
            &ll(ETH_P_ARP, 7),
            &arp(ip, [172, 17, 0, 1]),
            false
        ));
        // ARP probes (sender 0.0.0.0, target the address) are not
        // announcements
        assert!(!is_gratuitous_arp(&arp([0; 4], ip)));
        // moby 28's announcement of an address from a remote IPAM driver
        // (seen: `docker network create -d conductor --ipam-driver conductor`)
        let moby_remote_ipam = [
            0, 1, 8, 0, 6, 4, 0, 1, 10, 88, 10, 89, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert!(is_packet_announcement(
            &ll(ETH_P_ARP, 2),
            &moby_remote_ipam,
            false
        ));
        // an IPv4 frame on the same socket is not either
        assert!(!is_packet_announcement(&ll(0x0800, 7), &arp(ip, ip), false));
        assert!(!is_packet_announcement(
            &ll(ETH_P_ARP, 7),
            &arp(ip, ip)[..27],
            false
        ));
        let mut op3 = arp(ip, ip);
        op3[7] = 3;
        assert!(!is_gratuitous_arp(&op3));
    }

    #[test]
    fn raw_socket_frames() {
        let ip = [10, 0, 0, 5];
        let mut frame = vec![0xff; 6];
        frame.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        frame.extend_from_slice(&ETH_P_ARP.to_be_bytes());
        frame.extend_from_slice(&arp(ip, ip));
        assert!(is_packet_announcement(&ll(0, 3), &frame, true));
        frame[12] = 0x08;
        frame[13] = 0x00;
        assert!(!is_packet_announcement(&ll(0, 3), &frame, true));
        assert!(!is_packet_announcement(&ll(0, 3), &frame[..10], true));
    }
}
