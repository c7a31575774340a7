//! The SIGSYS handler: decode the trapped system call from the signal
//! context, emulate it, and write the result back into the return register.
//! SIGSYS not raised by our filter is chained to the program's handler.

use crate::{bpf, emulate, sigaction};

const SYS_SECCOMP: i32 = 1;

/// Offsets of `_sigsys` fields inside `siginfo_t` (Linux, 64-bit).
const SI_SYSCALL_OFF: usize = 24;

fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let act = sigaction::program_action();
    let h = act.sa_sigaction;
    if h == libc::SIG_IGN {
        return;
    }
    if h == libc::SIG_DFL {
        // Default action for SIGSYS is to die with a core: restore it and
        // re-raise; the signal stays pending until this handler returns.
        sigaction::uninstall();
        // SAFETY: raise is async-signal-safe.
        unsafe {
            libc::raise(sig);
        }
        return;
    }
    // SAFETY: the program installed `h` for SIGSYS with these flags; we call
    // it from signal context with the kernel's own arguments.
    unsafe {
        if act.sa_flags & libc::SA_SIGINFO != 0 {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                core::mem::transmute(h);
            f(sig, info, ctx);
        } else {
            let f: extern "C" fn(libc::c_int) = core::mem::transmute(h);
            f(sig);
        }
    }
}

/// The handler installed for SIGSYS.
///
/// # Safety
/// Only to be called by the kernel as an SA_SIGINFO signal handler.
#[cfg(target_arch = "x86_64")]
pub unsafe extern "C" fn handler(
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    ctx: *mut libc::c_void,
) {
    // SAFETY: errno is thread-local; saved and restored around our work.
    let saved_errno = unsafe { *libc::__errno_location() };
    // SAFETY: the kernel passes a valid siginfo and ucontext to an
    // SA_SIGINFO handler; the SIGSYS fields are read at their ABI offsets.
    let (ours, nr) = unsafe {
        let i = &*info;
        let nr = core::ptr::read_unaligned((info as *const u8).add(SI_SYSCALL_OFF) as *const i32);
        (
            i.si_code == SYS_SECCOMP && i.si_errno == bpf::TRAP_DATA as i32,
            nr,
        )
    };
    if !ours || ctx.is_null() {
        chain(sig, info, ctx);
        return;
    }
    // SAFETY: ctx is the ucontext of the interrupted thread; gregs hold the
    // syscall arguments (rdi, rsi, rdx, r10, r8, r9) and rax is the result.
    unsafe {
        let uc = &mut *(ctx as *mut libc::ucontext_t);
        let g = &mut uc.uc_mcontext.gregs;
        let args = [
            g[libc::REG_RDI as usize] as usize,
            g[libc::REG_RSI as usize] as usize,
            g[libc::REG_RDX as usize] as usize,
            g[libc::REG_R10 as usize] as usize,
            g[libc::REG_R8 as usize] as usize,
            g[libc::REG_R9 as usize] as usize,
        ];
        let r = emulate::dispatch_guarded(nr as i64, args, emulate::Origin::Trap);
        g[libc::REG_RAX as usize] = r as i64;
        *libc::__errno_location() = saved_errno;
    }
}

/// The handler installed for SIGSYS (no emulation on this architecture).
///
/// # Safety
/// Only to be called by the kernel as an SA_SIGINFO signal handler.
#[cfg(not(target_arch = "x86_64"))]
pub unsafe extern "C" fn handler(
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    ctx: *mut libc::c_void,
) {
    chain(sig, info, ctx);
}
