//! Seccomp BPF programs kept as data: a tiny label-resolving assembler, the
//! two filters the preload installs, and an interpreter used by unit tests.

use libc::sock_filter;

pub const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
pub const SECCOMP_RET_TRAP: u32 = 0x0003_0000;
/// Data carried in SECCOMP_RET_TRAP; the kernel reports it as `si_errno`.
pub const TRAP_DATA: u32 = 0x0C0D;

/// BPF_LD | BPF_W | BPF_ABS
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JEQ_K: u16 = 0x05 | 0x10;
const BPF_JMP_JGE_K: u16 = 0x05 | 0x30;
const BPF_RET_K: u16 = 0x06;

/// Offsets in `struct seccomp_data`.
pub const OFF_NR: u32 = 0;
pub const OFF_ARCH: u32 = 4;
pub const OFF_IP_LO: u32 = 8;
pub const OFF_IP_HI: u32 = 12;
pub const fn off_arg_lo(i: u32) -> u32 {
    16 + 8 * i
}
pub const fn off_arg_hi(i: u32) -> u32 {
    20 + 8 * i
}

#[cfg(target_arch = "x86_64")]
pub const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
pub const AUDIT_ARCH: u32 = 0xC000_00B7;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub const AUDIT_ARCH: u32 = 0;

type Label = usize;

#[derive(Clone, Copy, Debug)]
enum Ins {
    Ld(u32),
    Jeq(u32, Label, Label),
    Jge(u32, Label, Label),
    Ret(u32),
    Here(Label),
}

/// A small assembler: jumps name labels, resolved by `finish`.
#[derive(Default)]
struct Asm {
    ins: Vec<Ins>,
    labels: usize,
}

impl Asm {
    fn label(&mut self) -> Label {
        self.labels += 1;
        self.labels - 1
    }
    fn push(&mut self, i: Ins) {
        self.ins.push(i)
    }
    fn finish(self) -> Option<Vec<sock_filter>> {
        let mut pos = vec![usize::MAX; self.labels];
        let mut n = 0;
        for i in &self.ins {
            match i {
                Ins::Here(l) => pos[*l] = n,
                _ => n += 1,
            }
        }
        let mut out = Vec::with_capacity(n);
        for i in &self.ins {
            let pc = out.len();
            let rel = |l: &Label| -> Option<u8> {
                let t = *pos.get(*l)?;
                if t == usize::MAX || t <= pc {
                    return None;
                }
                u8::try_from(t - pc - 1).ok()
            };
            match i {
                Ins::Here(_) => {}
                Ins::Ld(o) => out.push(sock_filter {
                    code: BPF_LD_W_ABS,
                    jt: 0,
                    jf: 0,
                    k: *o,
                }),
                Ins::Ret(k) => out.push(sock_filter {
                    code: BPF_RET_K,
                    jt: 0,
                    jf: 0,
                    k: *k,
                }),
                Ins::Jeq(k, t, f) => out.push(sock_filter {
                    code: BPF_JMP_JEQ_K,
                    jt: rel(t)?,
                    jf: rel(f)?,
                    k: *k,
                }),
                Ins::Jge(k, t, f) => out.push(sock_filter {
                    code: BPF_JMP_JGE_K,
                    jt: rel(t)?,
                    jf: rel(f)?,
                    k: *k,
                }),
            }
        }
        Some(out)
    }
}

/// An address range `[start, end)` of the host program's executable text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub start: u64,
    pub end: u64,
}

/// Emit: jump to `trap` if the instruction pointer is in one of `ranges`,
/// else to `allow`. Ranges spanning more than one 4 GiB boundary are refused.
fn ip_check(a: &mut Asm, ranges: &[Range], trap: Label, allow: Label) -> Option<()> {
    for r in ranges {
        if r.end <= r.start {
            return None;
        }
        let last = r.end - 1;
        let (sh, sl, eh, el) = (
            (r.start >> 32) as u32,
            r.start as u32,
            (last >> 32) as u32,
            last as u32,
        );
        let next = a.label();
        a.push(Ins::Ld(OFF_IP_HI));
        if sh == eh {
            let lo = a.label();
            let ge = a.label();
            a.push(Ins::Jeq(sh, lo, next));
            a.push(Ins::Here(lo));
            a.push(Ins::Ld(OFF_IP_LO));
            a.push(Ins::Jge(sl, ge, next));
            a.push(Ins::Here(ge));
            // ip <= last  <=>  !(ip >= last + 1); last + 1 may overflow 32 bits
            if el == u32::MAX {
                a.push(Ins::Jeq(0, trap, trap));
            } else {
                a.push(Ins::Jge(el + 1, next, trap));
            }
        } else if eh == sh.checked_add(1)? {
            let low_half = a.label();
            let try_high = a.label();
            let high_half = a.label();
            a.push(Ins::Jeq(sh, low_half, try_high));
            a.push(Ins::Here(low_half));
            a.push(Ins::Ld(OFF_IP_LO));
            a.push(Ins::Jge(sl, trap, next));
            a.push(Ins::Here(try_high));
            a.push(Ins::Jeq(eh, high_half, next));
            a.push(Ins::Here(high_half));
            a.push(Ins::Ld(OFF_IP_LO));
            if el == u32::MAX {
                a.push(Ins::Jeq(0, trap, trap));
            } else {
                a.push(Ins::Jge(el + 1, next, trap));
            }
        } else {
            return None;
        }
        a.push(Ins::Here(next));
    }
    a.push(Ins::Jeq(0, allow, allow));
    Some(())
}

/// System call numbers the filters need (per architecture).
#[derive(Clone, Copy, Debug)]
pub struct Nrs {
    pub bind: u32,
    pub connect: u32,
    pub sendto: u32,
    pub sendmsg: u32,
    pub setsockopt: u32,
    pub read: u32,
    pub recvfrom: u32,
    pub recvmsg: u32,
    pub close: u32,
}

pub const NRS: Nrs = Nrs {
    bind: libc::SYS_bind as u32,
    connect: libc::SYS_connect as u32,
    sendto: libc::SYS_sendto as u32,
    sendmsg: libc::SYS_sendmsg as u32,
    setsockopt: libc::SYS_setsockopt as u32,
    read: libc::SYS_read as u32,
    recvfrom: libc::SYS_recvfrom as u32,
    recvmsg: libc::SYS_recvmsg as u32,
    close: libc::SYS_close as u32,
};

const SOL_NETLINK: u32 = 270;

/// The filter installed at start: traps bind and connect with a 12-byte
/// address, sendto to a 12-byte address, none, or a 20-byte one (a packet
/// socket's), every sendmsg, and
/// setsockopt(SOL_NETLINK, ...), when made from `ranges`.
pub fn base_filter(n: &Nrs, ranges: &[Range]) -> Option<Vec<sock_filter>> {
    let mut a = Asm::default();
    let allow = a.label();
    let trap = a.label();
    let ipchk = a.label();
    let sendto = a.label();
    let setsock = a.label();
    let addrlen = a.label();
    let l: Vec<Label> = (0..7).map(|_| a.label()).collect();
    a.push(Ins::Ld(OFF_ARCH));
    a.push(Ins::Jeq(AUDIT_ARCH, l[0], allow));
    a.push(Ins::Here(l[0]));
    a.push(Ins::Ld(OFF_NR));
    a.push(Ins::Jeq(n.bind, addrlen, l[1]));
    a.push(Ins::Here(l[1]));
    a.push(Ins::Jeq(n.connect, addrlen, l[2]));
    a.push(Ins::Here(l[2]));
    a.push(Ins::Jeq(n.sendmsg, ipchk, l[3]));
    a.push(Ins::Here(l[3]));
    a.push(Ins::Jeq(n.sendto, sendto, l[4]));
    a.push(Ins::Here(l[4]));
    a.push(Ins::Jeq(n.setsockopt, setsock, allow));
    // sendto: netlink (12-byte or no address) and packet sockets
    // (sizeof(struct sockaddr_ll) = 20: unsolicited ARP)
    a.push(Ins::Here(sendto));
    a.push(Ins::Ld(off_arg_lo(5)));
    a.push(Ins::Jeq(12, ipchk, l[5]));
    a.push(Ins::Here(l[5]));
    a.push(Ins::Jeq(0, ipchk, l[6]));
    a.push(Ins::Here(l[6]));
    a.push(Ins::Jeq(20, ipchk, allow));
    // bind/connect: only with a 12-byte address (sizeof(struct sockaddr_nl))
    a.push(Ins::Here(addrlen));
    a.push(Ins::Ld(off_arg_lo(2)));
    a.push(Ins::Jeq(12, ipchk, allow));
    a.push(Ins::Here(setsock));
    a.push(Ins::Ld(off_arg_lo(1)));
    a.push(Ins::Jeq(SOL_NETLINK, ipchk, allow));
    a.push(Ins::Here(ipchk));
    ip_check(&mut a, ranges, trap, allow)?;
    a.push(Ins::Here(allow));
    a.push(Ins::Ret(SECCOMP_RET_ALLOW));
    a.push(Ins::Here(trap));
    a.push(Ins::Ret(SECCOMP_RET_TRAP | TRAP_DATA));
    a.finish()
}

/// A filter added when a subscription is degraded: traps read, recvfrom,
/// recvmsg and close on exactly `fd`, from `ranges`.
pub fn fd_filter(n: &Nrs, ranges: &[Range], fd: i32) -> Option<Vec<sock_filter>> {
    let mut a = Asm::default();
    let allow = a.label();
    let trap = a.label();
    let ipchk = a.label();
    let fdchk = a.label();
    let l: Vec<Label> = (0..5).map(|_| a.label()).collect();
    a.push(Ins::Ld(OFF_ARCH));
    a.push(Ins::Jeq(AUDIT_ARCH, l[0], allow));
    a.push(Ins::Here(l[0]));
    a.push(Ins::Ld(OFF_NR));
    a.push(Ins::Jeq(n.read, fdchk, l[1]));
    a.push(Ins::Here(l[1]));
    a.push(Ins::Jeq(n.recvfrom, fdchk, l[2]));
    a.push(Ins::Here(l[2]));
    a.push(Ins::Jeq(n.recvmsg, fdchk, l[3]));
    a.push(Ins::Here(l[3]));
    a.push(Ins::Jeq(n.close, fdchk, allow));
    a.push(Ins::Here(fdchk));
    a.push(Ins::Ld(off_arg_hi(0)));
    a.push(Ins::Jeq(0, l[4], allow));
    a.push(Ins::Here(l[4]));
    a.push(Ins::Ld(off_arg_lo(0)));
    a.push(Ins::Jeq(fd as u32, ipchk, allow));
    a.push(Ins::Here(ipchk));
    ip_check(&mut a, ranges, trap, allow)?;
    a.push(Ins::Here(allow));
    a.push(Ins::Ret(SECCOMP_RET_ALLOW));
    a.push(Ins::Here(trap));
    a.push(Ins::Ret(SECCOMP_RET_TRAP | TRAP_DATA));
    a.finish()
}

/// The input a filter sees.
#[derive(Clone, Copy, Debug, Default)]
pub struct Data {
    pub nr: u32,
    pub arch: u32,
    pub ip: u64,
    pub args: [u64; 6],
}

impl Data {
    fn word(&self, off: u32) -> Option<u32> {
        Some(match off {
            OFF_NR => self.nr,
            OFF_ARCH => self.arch,
            OFF_IP_LO => self.ip as u32,
            OFF_IP_HI => (self.ip >> 32) as u32,
            o if (16..64).contains(&o) && o % 4 == 0 => {
                let a = self.args[((o - 16) / 8) as usize];
                if (o - 16) % 8 == 0 {
                    a as u32
                } else {
                    (a >> 32) as u32
                }
            }
            _ => return None,
        })
    }
}

/// Run a program produced by this module (subset of classic BPF).
pub fn run(prog: &[sock_filter], d: &Data) -> Option<u32> {
    run_counted(prog, d).map(|(r, _)| r)
}

/// Run a program; also return how many instructions it executed.
pub fn run_counted(prog: &[sock_filter], d: &Data) -> Option<(u32, usize)> {
    let mut pc = 0usize;
    let mut acc = 0u32;
    for steps in 1..=prog.len() + 1 {
        let i = prog.get(pc)?;
        match i.code {
            BPF_LD_W_ABS => acc = d.word(i.k)?,
            BPF_RET_K => return Some((i.k, steps)),
            BPF_JMP_JEQ_K => {
                pc += if acc == i.k {
                    i.jt as usize
                } else {
                    i.jf as usize
                }
            }
            BPF_JMP_JGE_K => {
                pc += if acc >= i.k {
                    i.jt as usize
                } else {
                    i.jf as usize
                }
            }
            _ => return None,
        }
        pc += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    const T: u32 = SECCOMP_RET_TRAP | TRAP_DATA;
    const A: u32 = SECCOMP_RET_ALLOW;

    fn d(nr: u32, ip: u64, args: [u64; 6]) -> Data {
        Data {
            nr,
            arch: AUDIT_ARCH,
            ip,
            args,
        }
    }

    #[test]
    fn base_gates_on_nr_and_ip() {
        let r = [Range {
            start: 0x5555_0000_1000,
            end: 0x5555_0020_0000,
        }];
        let p = base_filter(&NRS, &r).unwrap();
        let inside = 0x5555_0000_2000;
        let outside = 0x7fff_0000_2000;
        assert_eq!(run(&p, &d(NRS.bind, inside, [3, 0, 12, 0, 0, 0])), Some(T));
        assert_eq!(run(&p, &d(NRS.bind, outside, [3, 0, 12, 0, 0, 0])), Some(A));
        assert_eq!(
            run(&p, &d(NRS.bind, 0x5555_0020_0000, [3, 0, 12, 0, 0, 0])),
            Some(A)
        );
        assert_eq!(
            run(&p, &d(NRS.bind, 0x5555_0000_1000, [3, 0, 12, 0, 0, 0])),
            Some(T)
        );
        assert_eq!(
            run(&p, &d(NRS.bind, 0x5555_0000_0fff, [3, 0, 12, 0, 0, 0])),
            Some(A)
        );
        assert_eq!(run(&p, &d(NRS.bind, inside, [3, 0, 16, 0, 0, 0])), Some(A));
        assert_eq!(
            run(&p, &d(NRS.connect, inside, [3, 0, 110, 0, 0, 0])),
            Some(A)
        );
        assert_eq!(
            run(&p, &d(NRS.connect, inside, [3, 0, 12, 0, 0, 0])),
            Some(T)
        );
        assert_eq!(run(&p, &d(NRS.read, inside, [0; 6])), Some(A));
        assert_eq!(run(&p, &d(NRS.sendmsg, inside, [0; 6])), Some(T));
        assert_eq!(
            run(&p, &d(NRS.sendto, inside, [3, 0, 0, 0, 0, 12])),
            Some(T)
        );
        assert_eq!(
            run(&p, &d(NRS.sendto, inside, [3, 0, 0, 0, 0, 16])),
            Some(A)
        );
        assert_eq!(
            run(&p, &d(NRS.sendto, inside, [3, 0, 28, 0, 0, 20])),
            Some(T)
        );
        assert_eq!(
            run(&p, &d(NRS.sendto, outside, [3, 0, 28, 0, 0, 20])),
            Some(A)
        );
        assert_eq!(
            run(&p, &d(NRS.sendto, inside, [3, 0, 28, 0, 0, 28])),
            Some(A)
        );
        assert_eq!(
            run(&p, &d(NRS.setsockopt, inside, [3, 270, 1, 0, 4, 0])),
            Some(T)
        );
        assert_eq!(
            run(&p, &d(NRS.setsockopt, inside, [3, 1, 1, 0, 4, 0])),
            Some(A)
        );
        let mut other_arch = d(NRS.bind, inside, [0; 6]);
        other_arch.arch = 0x4000_0003;
        assert_eq!(run(&p, &other_arch), Some(A));
    }

    #[test]
    fn unrelated_syscalls_take_the_short_path() {
        // arch, nr, five compares, return: every other system call pays
        // these 9 instructions and nothing more (the cost bench.sh measures)
        let r = [Range {
            start: 0x5555_0000_1000,
            end: 0x5555_0020_0000,
        }];
        let p = base_filter(&NRS, &r).unwrap();
        for nr in [
            libc::SYS_getppid,
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_futex,
        ] {
            let (ret, steps) = run_counted(&p, &d(nr as u32, 0x5555_0000_2000, [0; 6])).unwrap();
            assert_eq!((ret, steps), (A, 9), "syscall {nr}");
        }
    }

    #[test]
    fn range_across_4g_boundary() {
        let r = [Range {
            start: 0x1_ffff_f000,
            end: 0x2_0000_2000,
        }];
        let p = base_filter(&NRS, &r).unwrap();
        for (ip, want) in [
            (0x1_ffff_efff, A),
            (0x1_ffff_f000, T),
            (0x1_ffff_ffff, T),
            (0x2_0000_0000, T),
            (0x2_0000_1fff, T),
            (0x2_0000_2000, A),
        ] {
            assert_eq!(
                run(&p, &d(NRS.connect, ip, [0, 0, 12, 0, 0, 0])),
                Some(want),
                "{ip:x}"
            );
        }
        assert!(base_filter(
            &NRS,
            &[Range {
                start: 0,
                end: 0x3_0000_0000
            }]
        )
        .is_none());
    }

    #[test]
    fn several_ranges() {
        let r = [
            Range {
                start: 0x1000,
                end: 0x2000,
            },
            Range {
                start: 0x8000,
                end: 0x9000,
            },
        ];
        let p = base_filter(&NRS, &r).unwrap();
        assert_eq!(run(&p, &d(NRS.bind, 0x1800, [0, 0, 12, 0, 0, 0])), Some(T));
        assert_eq!(run(&p, &d(NRS.bind, 0x8800, [0, 0, 12, 0, 0, 0])), Some(T));
        assert_eq!(run(&p, &d(NRS.bind, 0x3000, [0, 0, 12, 0, 0, 0])), Some(A));
    }

    #[test]
    fn fd_filter_matches_fd_only() {
        let r = [Range {
            start: 0x1000,
            end: 0x2000,
        }];
        let p = fd_filter(&NRS, &r, 7).unwrap();
        assert_eq!(
            run(&p, &d(NRS.recvfrom, 0x1100, [7, 0, 0, 0, 0, 0])),
            Some(T)
        );
        assert_eq!(run(&p, &d(NRS.read, 0x1100, [7, 0, 0, 0, 0, 0])), Some(T));
        assert_eq!(run(&p, &d(NRS.close, 0x1100, [7, 0, 0, 0, 0, 0])), Some(T));
        assert_eq!(
            run(&p, &d(NRS.recvfrom, 0x1100, [8, 0, 0, 0, 0, 0])),
            Some(A)
        );
        assert_eq!(
            run(&p, &d(NRS.recvfrom, 0x1100, [7 | 1 << 32, 0, 0, 0, 0, 0])),
            Some(A)
        );
        assert_eq!(
            run(&p, &d(NRS.recvfrom, 0x9100, [7, 0, 0, 0, 0, 0])),
            Some(A)
        );
        assert_eq!(run(&p, &d(NRS.bind, 0x1100, [7, 0, 0, 0, 0, 0])), Some(A));
    }
}
