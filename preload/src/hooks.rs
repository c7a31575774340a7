//! Interposed libc functions, for programs (C, iproute2, ...) whose socket
//! calls go through libc rather than raw system calls. Each one is the real
//! system call unless the preload has something to do; results follow the
//! libc convention (-1 and errno).

use crate::emulate::{self, Origin};
use crate::{sigaction, subs, sys::syscall6};
use core::sync::atomic::{AtomicBool, Ordering};
use libc::{c_int, c_void, size_t, sockaddr, socklen_t, ssize_t};

/// Cleared by CONDUCTOR_PRELOAD=off.
pub static ENABLED: AtomicBool = AtomicBool::new(true);

fn on() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

fn ret(r: isize) -> isize {
    if r < 0 {
        // SAFETY: errno is thread-local and always valid.
        unsafe { *libc::__errno_location() = (-r) as c_int };
        -1
    } else {
        r
    }
}

fn call(nr: i64, a: [usize; 6]) -> isize {
    if on() {
        ret(emulate::dispatch_guarded(nr, a, Origin::Hook))
    } else {
        ret(syscall6(nr, a))
    }
}

/// # Safety
/// Same contract as libc's `bind`.
#[no_mangle]
pub unsafe extern "C" fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    call(
        libc::SYS_bind,
        [fd as usize, addr as usize, len as usize, 0, 0, 0],
    ) as c_int
}

/// # Safety
/// Same contract as libc's `connect`.
#[no_mangle]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    call(
        libc::SYS_connect,
        [fd as usize, addr as usize, len as usize, 0, 0, 0],
    ) as c_int
}

/// # Safety
/// Same contract as libc's `sendto`.
#[no_mangle]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    len: size_t,
    flags: c_int,
    addr: *const sockaddr,
    alen: socklen_t,
) -> ssize_t {
    call(
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

/// # Safety
/// Same contract as libc's `send`.
#[no_mangle]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t {
    call(
        libc::SYS_sendto,
        [fd as usize, buf as usize, len, flags as usize, 0, 0],
    )
}

/// # Safety
/// Same contract as libc's `sendmsg`.
#[no_mangle]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const libc::msghdr, flags: c_int) -> ssize_t {
    call(
        libc::SYS_sendmsg,
        [fd as usize, msg as usize, flags as usize, 0, 0, 0],
    )
}

/// # Safety
/// Same contract as libc's `setsockopt`.
#[no_mangle]
pub unsafe extern "C" fn setsockopt(
    fd: c_int,
    level: c_int,
    opt: c_int,
    val: *const c_void,
    len: socklen_t,
) -> c_int {
    call(
        libc::SYS_setsockopt,
        [
            fd as usize,
            level as usize,
            opt as usize,
            val as usize,
            len as usize,
            0,
        ],
    ) as c_int
}

/// # Safety
/// Same contract as libc's `recvmsg`.
#[no_mangle]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut libc::msghdr, flags: c_int) -> ssize_t {
    let a = [fd as usize, msg as usize, flags as usize, 0, 0, 0];
    if subs::marked(fd) {
        call(libc::SYS_recvmsg, a)
    } else {
        ret(syscall6(libc::SYS_recvmsg, a))
    }
}

/// # Safety
/// Same contract as libc's `recvfrom`.
#[no_mangle]
pub unsafe extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    alen: *mut socklen_t,
) -> ssize_t {
    let a = [
        fd as usize,
        buf as usize,
        len,
        flags as usize,
        addr as usize,
        alen as usize,
    ];
    if subs::marked(fd) {
        call(libc::SYS_recvfrom, a)
    } else {
        ret(syscall6(libc::SYS_recvfrom, a))
    }
}

/// # Safety
/// Same contract as libc's `recv`.
#[no_mangle]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> ssize_t {
    // SAFETY: forwarded with the same contract.
    unsafe {
        recvfrom(
            fd,
            buf,
            len,
            flags,
            core::ptr::null_mut(),
            core::ptr::null_mut(),
        )
    }
}

/// # Safety
/// Same contract as libc's `read`.
#[no_mangle]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, len: size_t) -> ssize_t {
    let a = [fd as usize, buf as usize, len, 0, 0, 0];
    if subs::marked(fd) {
        call(libc::SYS_read, a)
    } else {
        ret(syscall6(libc::SYS_read, a))
    }
}

/// # Safety
/// Same contract as libc's `close`.
#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    let gone = subs::unregister(fd);
    let r = ret(syscall6(libc::SYS_close, [fd as usize, 0, 0, 0, 0, 0])) as c_int;
    for s in gone {
        s.wake();
    }
    r
}

/// # Safety
/// Same contract as libc's `sigaction`.
#[no_mangle]
pub unsafe extern "C" fn sigaction(
    sig: c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> c_int {
    // SAFETY: the caller upholds sigaction's contract.
    unsafe { sigaction::interposed(sig, act, old) }
}

/// # Safety
/// Same contract as libc's `signal`.
#[no_mangle]
pub unsafe extern "C" fn signal(sig: c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
    sigaction::interposed_signal(sig, handler)
}
