//! libconductor_preload.so: makes netlink subscriptions and refused netlink
//! requests work inside sandboxes such as gVisor, for any dynamically linked
//! program, including cgo-linked Go programs such as dockerd.
//!
//! Two interception paths share one emulation layer (`emulate`):
//! - a seccomp filter installed by the constructor traps (SECCOMP_RET_TRAP)
//!   netlink-relevant system calls made from the program's own executable
//!   text (Go's raw syscalls); the SIGSYS handler (`sigsys`) emulates them;
//! - interposed libc functions (`hooks`) cover C programs.
//!
//! Everything fails open: if a piece cannot be set up, the program runs as
//! if the library were not loaded.

pub mod announce;
pub mod bpf;
pub mod emulate;
pub mod environ;
pub mod events;
pub mod hooks;
pub mod log;
pub mod netlink;
pub mod packet;
pub mod probe;
pub mod receive;
pub mod requests;
pub mod rewrite;
pub mod seccomp;
pub mod sigaction;
pub mod sigsys;
pub mod stats;
pub mod subs;
pub mod sys;

use std::sync::atomic::Ordering;

fn flag(name: &str, value: &[u8]) -> bool {
    environ::get(name)
        .map(|v| v.to_bytes() == value)
        .unwrap_or(false)
}

fn init(envp: *mut *mut core::ffi::c_char) {
    environ::init(envp);
    if flag("CONDUCTOR_PRELOAD", b"off") {
        hooks::ENABLED.store(false, Ordering::Relaxed);
        return;
    }
    if let Some(p) = environ::get("CONDUCTOR_PRELOAD_LOG") {
        log::init(p);
    }
    if let Some(p) = environ::get("CONDUCTOR_PRELOAD_STATS") {
        stats::init(p);
    }
    plog!("loaded");
    if let Some(ms) =
        environ::get("CONDUCTOR_PRELOAD_POLL_MS").and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
    {
        subs::PERIOD_MS.store(ms.clamp(1, 10_000), Ordering::Relaxed);
    }
    let pie = seccomp::exe_is_pie();
    let trap = install_trap_path(pie);
    // Children do not load the preload, unless asked, or unless this is a
    // non-PIE program with the trap path on: its filter, inherited, could
    // match a non-PIE child mapped at the same fixed address, which then
    // needs the handler.
    let keep = flag("CONDUCTOR_PRELOAD_INHERIT", b"1") || (trap && !pie);
    if !keep {
        let n = environ::scrub_ld_preload();
        plog!(
            "removed from the environment children inherit ({} entries)",
            n
        );
    }
}

/// Install the seccomp trap path where it is useful; whether it is on.
fn install_trap_path(pie: bool) -> bool {
    if !cfg!(target_arch = "x86_64") {
        log::warn(format_args!(
            "seccomp path not supported on this architecture; libc hooks only"
        ));
        return false;
    }
    // Linked statically into a program (tests, fuzz targets): our own raw
    // system calls would lie inside the trapped text. Stay out.
    let me = constructor as *const () as u64;
    if seccomp::exe_text()
        .iter()
        .any(|r| r.start <= me && me < r.end)
    {
        return false;
    }
    if !pie && !flag("CONDUCTOR_PRELOAD_NONPIE", b"1") {
        plog!("non-PIE program: trap path off (CONDUCTOR_PRELOAD_NONPIE=1 enables it)");
        return false;
    }
    // On a kernel that refuses nothing, stay out of the way entirely: a
    // seccomp filter costs every system call ~10 ns even when it allows.
    if !flag("CONDUCTOR_PRELOAD_FORCE", b"1") {
        match probe::probe() {
            probe::Verdict::Refuses(why) => plog!("probe: {}", why),
            v => {
                plog!(
                    "probe: {:?}: nothing to fix here, trap path not installed",
                    v
                );
                return false;
            }
        }
    }
    if let Err(e) = sigaction::install(sigsys::handler as *const () as usize) {
        log::warn(format_args!("{}; raw-syscall interception disabled", e));
        return false;
    }
    match seccomp::install_base() {
        Ok(()) => {
            plog!("seccomp trap path active");
            true
        }
        Err(e) => {
            sigaction::uninstall();
            log::warn(format_args!("{}; raw-syscall interception disabled", e));
            false
        }
    }
}

/// glibc calls `.init_array` functions with `argc, argv, envp`.
extern "C" fn constructor(
    _argc: core::ffi::c_int,
    _argv: *mut *mut core::ffi::c_char,
    envp: *mut *mut core::ffi::c_char,
) {
    let _ = std::panic::catch_unwind(|| init(envp));
}

#[used]
#[link_section = ".init_array"]
static CONSTRUCTOR: extern "C" fn(
    core::ffi::c_int,
    *mut *mut core::ffi::c_char,
    *mut *mut core::ffi::c_char,
) = constructor;

/// Exercise every pure parser/rewriter on arbitrary bytes and check their
/// invariants; panics on a violation. Used by the fuzz target and by the
/// libFuzzer-free fuzz loop in the unit tests.
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    use netlink::{attrs, messages, NlHdr};
    for m in messages(data) {
        assert!(m.raw.len() >= netlink::NLMSG_HDRLEN && m.raw.len() == m.hdr.len as usize);
        if let Some(sec) = netlink::attr_section(&m) {
            for a in attrs(sec) {
                assert!(a.raw.len() >= 4 && a.data.len() == a.raw.len() - 4);
            }
        }
        if let Some(e) = netlink::make_event(m.raw, netlink::RTM_NEWLINK) {
            assert_eq!(e.len(), m.raw.len());
        }
    }
    let _ = netlink::is_doorbell_reply(data);
    let mut copy = data.to_vec();
    if netlink::normalize_echo_header(&mut copy) {
        assert_eq!(&copy[..8], &data[..8]);
        assert_eq!(&copy[16..], &data[16..]);
    }
    let _ = netlink::SockaddrNl::parse(data);
    // packet-socket sends: the address and the datagram from the same input
    let rest = data.get(1..).unwrap_or(&[]);
    let split = data.first().map_or(0, |b| *b as usize).min(rest.len());
    let (addr, pkt) = rest.split_at(split);
    for raw in [false, true] {
        if announce::is_packet_announcement(addr, pkt, raw) {
            let ll = announce::SockaddrLl::parse(addr).expect("announcement address");
            assert!(raw || ll.protocol == announce::ETH_P_ARP);
        }
    }
    if announce::is_gratuitous_arp(data) {
        assert_eq!(&data[14..18], &data[24..28]);
    }
    // environment entries: an edit never grows LD_PRELOAD nor keeps this library
    match environ::edit(data) {
        environ::Edit::Replace(c) => {
            let b = c.as_bytes();
            assert!(b.starts_with(b"LD_PRELOAD=") && b.len() <= data.len());
            assert!(!c.to_string_lossy().contains("libconductor_preload"));
        }
        environ::Edit::Drop => assert!(data.starts_with(b"LD_PRELOAD=")),
        environ::Edit::Keep => {}
    }
    for kind in [events::Kind::Link, events::Kind::Addr] {
        let half = data.len() / 2;
        let a = events::Table::from_messages(kind, [&data[..half]]);
        let b = events::Table::from_messages(kind, [&data[half..]]);
        assert!(a.diff(&a, kind).is_empty());
        let d = a.diff(&b, kind);
        assert_eq!(events::merge(d.clone(), Vec::new()).len(), d.len());
        for e in d {
            let h = NlHdr::parse(&e.msg).expect("event header");
            assert_eq!(h.len as usize, e.msg.len());
            assert_eq!((h.seq, h.pid), (0, 0));
        }
    }
    if let Some(h) = rewrite::candidate(data) {
        assert!(rewrite::candidate_type(data));
        let _ = rewrite::reply_error(data, &h);
        for err in [
            -libc::EOPNOTSUPP,
            -libc::EPERM,
            -libc::EACCES,
            -libc::EINVAL,
            0,
        ] {
            if let Some(rewrite::Fix::Rewrite { mut msg, ns_pid }) = rewrite::fix(data, err) {
                let h2 = NlHdr::parse(&msg).expect("rewritten header");
                assert_eq!(h2.len as usize, msg.len());
                assert_eq!(h2.seq, h.seq);
                assert_eq!(messages(&msg).count(), 1);
                if let Some((_, at)) = ns_pid {
                    assert!(rewrite::patch_ns_fd(&mut msg, at, 5));
                }
            }
        }
    }
}

#[cfg(test)]
mod fuzz_loop {
    //! libFuzzer-free fallback: mutate valid messages with a fixed-seed PRNG.
    #[test]
    fn random_mutations_keep_invariants() {
        let mut seeds: Vec<Vec<u8>> = vec![
            crate::netlink::make_ack(
                &crate::netlink::NlHdr {
                    len: 16,
                    ty: 28,
                    flags: 5,
                    seq: 1,
                    pid: 0,
                },
                1,
                -95,
            ),
            crate::netlink::make_done(3, 4),
            crate::netlink::doorbell_request().to_vec(),
            crate::netlink::dump_request(crate::netlink::RTM_GETLINK, 9),
            b"LD_PRELOAD=/a.so /l/libconductor_preload.so:/b.so".to_vec(),
        ];
        // a sockaddr_ll (length-prefixed, see fuzz_one) and moby's unsolicited ARP
        let mut arp = vec![20u8, 17, 0, 8, 6, 7, 0, 0, 0, 1, 0, 0, 6];
        arp.extend_from_slice(&[0xff; 8]);
        arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1, 2, 0x42, 0xac, 0x11, 0, 2]);
        arp.extend_from_slice(&[172, 17, 0, 2, 0, 0, 0, 0, 0, 0, 172, 17, 0, 2]);
        assert!(crate::announce::is_packet_announcement(
            &arp[1..21],
            &arp[21..],
            false
        ));
        seeds.push(arp);
        let mut link = vec![0u8; 32];
        link.extend_from_slice(&[7, 0, 3, 0, b'l', b'o', 0, 0, 8, 0, 19, 0, 1, 0, 0, 0]);
        let l = link.len() as u32;
        link[0..4].copy_from_slice(&l.to_ne_bytes());
        link[4] = 16;
        link[6] = 5;
        seeds.push(link);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..200_000 {
            let mut d = seeds[(next() % seeds.len() as u64) as usize].clone();
            for _ in 0..(next() % 8) {
                let r = next();
                match r % 4 {
                    0 if !d.is_empty() => {
                        let i = (r >> 8) as usize % d.len();
                        d[i] = (r >> 32) as u8;
                    }
                    1 => d.truncate((r >> 8) as usize % (d.len() + 1)),
                    2 => d.extend_from_slice(&(r >> 16).to_ne_bytes()),
                    _ => {
                        let copy = d.clone();
                        d.extend_from_slice(&copy);
                    }
                }
            }
            crate::fuzz_one(&d);
        }
    }
}
