//! Refused sends on packet sockets: an unsolicited ARP (see `announce`) is
//! reported as sent; anything else keeps its refusal. Called only after the
//! real `sendto` was refused.

use crate::announce::{self, SOCKADDR_LL_LEN};
use crate::sys;

/// Bytes of a datagram looked at: an Ethernet header plus an ARP packet.
const HEAD: usize = 64;

/// Copy `len` (at most `max`) bytes the program passed.
fn copy_in(ptr: usize, len: usize, max: usize) -> Vec<u8> {
    if ptr == 0 {
        return Vec::new();
    }
    // SAFETY: the program passed `ptr` with `len` readable bytes for this
    // call (the kernel already read them); we copy at most `max`.
    unsafe { core::slice::from_raw_parts(ptr as *const u8, len.min(max)) }.to_vec()
}

/// `sendto(fd, buf, len, flags, addr, alen)` was refused with `r`: the
/// datagram's length if it was an unsolicited ARP on a packet socket, else `r`.
pub fn sendto_refused(fd: i32, a: [usize; 6], r: isize) -> isize {
    let (buf, len, addr, alen) = (a[1], a[2], a[4], a[5]);
    if addr == 0 || alen < SOCKADDR_LL_LEN {
        return r;
    }
    let opt = |o| sys::getsockopt_int(fd, libc::SOL_SOCKET, o).ok();
    if opt(libc::SO_DOMAIN) != Some(libc::AF_PACKET) {
        return r;
    }
    let raw = match opt(libc::SO_TYPE) {
        Some(libc::SOCK_RAW) => true,
        Some(libc::SOCK_DGRAM) => false,
        _ => return r,
    };
    let addr = copy_in(addr, alen, SOCKADDR_LL_LEN);
    if !announce::is_packet_announcement(&addr, &copy_in(buf, len, HEAD), raw) {
        return r;
    }
    crate::plog!(
        "fd {}: sendto of an unsolicited ARP refused ({}): reported as sent",
        fd,
        r
    );
    len as isize
}
