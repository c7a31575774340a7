//! Raw system calls that do not touch `errno` and never go through libc
//! wrappers, so they are safe to use from the SIGSYS handler and from the
//! interposed libc symbols (which would otherwise call themselves).
//!
//! Every function returns the kernel's convention: a non-negative result or
//! `-errno`.

/// Issue a raw system call with up to six arguments.
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn syscall6(nr: i64, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: a raw `syscall` instruction; the kernel reads only the argument
    // registers we set and clobbers rcx/r11 (declared). Callers are
    // responsible for passing pointers that are valid for the given call,
    // exactly as they would for the libc wrapper.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") a[0],
            in("rsi") a[1],
            in("rdx") a[2],
            in("r10") a[3],
            in("r8") a[4],
            in("r9") a[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack)
        );
    }
    ret
}

/// Issue a raw system call with up to six arguments.
#[cfg(target_arch = "aarch64")]
#[inline]
pub fn syscall6(nr: i64, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: a raw `svc 0`; the kernel reads x8 and x0..x5 only. Pointer
    // validity is the caller's responsibility as for the libc wrapper.
    unsafe {
        core::arch::asm!(
            "svc 0",
            in("x8") nr,
            inlateout("x0") a[0] => ret,
            in("x1") a[1],
            in("x2") a[2],
            in("x3") a[3],
            in("x4") a[4],
            in("x5") a[5],
            options(nostack)
        );
    }
    ret
}

/// Issue a raw system call with up to six arguments (generic fallback).
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub fn syscall6(nr: i64, a: [usize; 6]) -> isize {
    // SAFETY: libc's generic syscall(); errno is saved and restored around it.
    unsafe {
        let saved = *libc::__errno_location();
        let r = libc::syscall(nr as libc::c_long, a[0], a[1], a[2], a[3], a[4], a[5]);
        let out = if r < 0 {
            -(*libc::__errno_location() as isize)
        } else {
            r as isize
        };
        *libc::__errno_location() = saved;
        out
    }
}

/// Convert a raw result to `Result`.
pub fn res(r: isize) -> Result<usize, i32> {
    if r < 0 {
        Err((-r) as i32)
    } else {
        Ok(r as usize)
    }
}

pub fn socket(domain: i32, ty: i32, proto: i32) -> Result<i32, i32> {
    res(syscall6(
        libc::SYS_socket,
        [domain as usize, ty as usize, proto as usize, 0, 0, 0],
    ))
    .map(|v| v as i32)
}

pub fn close(fd: i32) -> isize {
    syscall6(libc::SYS_close, [fd as usize, 0, 0, 0, 0, 0])
}

pub fn bind_raw(fd: i32, addr: *const u8, len: u32) -> isize {
    syscall6(
        libc::SYS_bind,
        [fd as usize, addr as usize, len as usize, 0, 0, 0],
    )
}

pub fn sendto_raw(
    fd: i32,
    buf: *const u8,
    len: usize,
    flags: i32,
    addr: *const u8,
    alen: u32,
) -> isize {
    syscall6(
        libc::SYS_sendto,
        [
            fd as usize,
            buf as usize,
            len,
            flags as usize,
            addr as usize,
            alen as usize,
        ],
    )
}

pub fn recvfrom_raw(
    fd: i32,
    buf: *mut u8,
    len: usize,
    flags: i32,
    addr: *mut u8,
    alen: *mut u32,
) -> isize {
    syscall6(
        libc::SYS_recvfrom,
        [
            fd as usize,
            buf as usize,
            len,
            flags as usize,
            addr as usize,
            alen as usize,
        ],
    )
}

/// `send` a byte slice to the kernel (no destination address).
pub fn send(fd: i32, buf: &[u8], flags: i32) -> Result<usize, i32> {
    res(sendto_raw(
        fd,
        buf.as_ptr(),
        buf.len(),
        flags,
        core::ptr::null(),
        0,
    ))
}

/// `recv` into a byte slice.
pub fn recv(fd: i32, buf: &mut [u8], flags: i32) -> Result<usize, i32> {
    res(recvfrom_raw(
        fd,
        buf.as_mut_ptr(),
        buf.len(),
        flags,
        core::ptr::null_mut(),
        core::ptr::null_mut(),
    ))
}

pub fn getsockopt_int(fd: i32, level: i32, opt: i32) -> Result<i32, i32> {
    let mut v: i32 = 0;
    let mut l: u32 = 4;
    res(syscall6(
        libc::SYS_getsockopt,
        [
            fd as usize,
            level as usize,
            opt as usize,
            &mut v as *mut i32 as usize,
            &mut l as *mut u32 as usize,
            0,
        ],
    ))
    .map(|_| v)
}

pub fn setsockopt_bytes(fd: i32, level: i32, opt: i32, val: &[u8]) -> Result<usize, i32> {
    res(syscall6(
        libc::SYS_setsockopt,
        [
            fd as usize,
            level as usize,
            opt as usize,
            val.as_ptr() as usize,
            val.len(),
            0,
        ],
    ))
}

/// The netlink port id a socket is bound to (0 if unknown).
pub fn netlink_portid(fd: i32) -> u32 {
    let mut a = [0u8; 16];
    let mut l: u32 = a.len() as u32;
    let r = syscall6(
        libc::SYS_getsockname,
        [
            fd as usize,
            a.as_mut_ptr() as usize,
            &mut l as *mut u32 as usize,
            0,
            0,
            0,
        ],
    );
    if r < 0 || l < 12 {
        return 0;
    }
    u32::from_ne_bytes([a[4], a[5], a[6], a[7]])
}

/// Whether two descriptors name the same open socket or file (same device
/// and inode); false if either is not open.
pub fn same_file(a: i32, b: i32) -> bool {
    let id = |fd: i32| {
        // SAFETY: an all-zero stat is valid plain data for fstat to fill.
        let mut st: libc::stat = unsafe { core::mem::zeroed() };
        let r = syscall6(
            libc::SYS_fstat,
            [fd as usize, &mut st as *mut libc::stat as usize, 0, 0, 0, 0],
        );
        (r == 0).then_some((st.st_dev, st.st_ino))
    };
    matches!((id(a), id(b)), (Some(x), Some(y)) if x == y)
}

pub fn dup_cloexec(fd: i32) -> Result<i32, i32> {
    res(syscall6(
        libc::SYS_fcntl,
        [fd as usize, libc::F_DUPFD_CLOEXEC as usize, 64, 0, 0, 0],
    ))
    .map(|v| v as i32)
}

pub fn open_ro(path: &std::ffi::CStr) -> Result<i32, i32> {
    res(syscall6(
        libc::SYS_openat,
        [
            libc::AT_FDCWD as usize,
            path.as_ptr() as usize,
            (libc::O_RDONLY | libc::O_CLOEXEC) as usize,
            0,
            0,
            0,
        ],
    ))
    .map(|v| v as i32)
}

pub fn write_all(fd: i32, buf: &[u8]) {
    let _ = syscall6(
        libc::SYS_write,
        [fd as usize, buf.as_ptr() as usize, buf.len(), 0, 0, 0],
    );
}

/// Monotonic clock in nanoseconds.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let _ = syscall6(
        libc::SYS_clock_gettime,
        [
            libc::CLOCK_MONOTONIC as usize,
            &mut ts as *mut _ as usize,
            0,
            0,
            0,
            0,
        ],
    );
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn gettid() -> i32 {
    syscall6(libc::SYS_gettid, [0; 6]) as i32
}
