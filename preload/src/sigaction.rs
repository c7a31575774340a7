//! Interposition of `sigaction` and `signal` so the program (the Go runtime
//! in particular) cannot displace the preload's SIGSYS handler. The program's
//! own SIGSYS disposition is remembered and reported back as if installed;
//! the SIGSYS handler chains to it for signals the filter did not raise.

use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};

type SigactionFn =
    unsafe extern "C" fn(libc::c_int, *const libc::sigaction, *mut libc::sigaction) -> libc::c_int;

static REAL: AtomicUsize = AtomicUsize::new(0);
/// Set once our handler owns SIGSYS.
static OWNED: AtomicBool = AtomicBool::new(false);
static PROG_HANDLER: AtomicUsize = AtomicUsize::new(libc::SIG_DFL);
static PROG_FLAGS: AtomicI32 = AtomicI32::new(0);
static PROG_MASK: AtomicU64 = AtomicU64::new(0);

fn real() -> Option<SigactionFn> {
    let mut p = REAL.load(Ordering::Acquire);
    if p == 0 {
        // SAFETY: dlsym with a NUL-terminated name; RTLD_NEXT finds libc's.
        p = unsafe { libc::dlsym(libc::RTLD_NEXT, c"sigaction".as_ptr()) } as usize;
        if p == 0 {
            return None;
        }
        REAL.store(p, Ordering::Release);
    }
    // SAFETY: p is libc's `sigaction`, whose type is SigactionFn.
    Some(unsafe { core::mem::transmute::<usize, SigactionFn>(p) })
}

/// Call libc's real sigaction.
///
/// # Safety
/// Same contract as libc's `sigaction`.
pub unsafe fn real_sigaction(
    sig: libc::c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> libc::c_int {
    match real() {
        // SAFETY: forwarding the caller's pointers unchanged.
        Some(f) => unsafe { f(sig, act, old) },
        None => {
            // SAFETY: errno is thread-local and always valid.
            unsafe { *libc::__errno_location() = libc::ENOSYS };
            -1
        }
    }
}

pub fn owned() -> bool {
    OWNED.load(Ordering::Acquire)
}

fn mask_to_u64(m: &libc::sigset_t) -> u64 {
    // SAFETY: sigset_t is at least 8 bytes of plain data on Linux.
    unsafe { core::ptr::read_unaligned(m as *const libc::sigset_t as *const u64) }
}

fn u64_to_mask(v: u64) -> libc::sigset_t {
    // SAFETY: an all-zero sigset_t is a valid empty set; then set the first word.
    unsafe {
        let mut m: libc::sigset_t = core::mem::zeroed();
        core::ptr::write_unaligned(&mut m as *mut libc::sigset_t as *mut u64, v);
        m
    }
}

/// Install `handler` for SIGSYS; remember the previous action as the program's.
pub fn install(handler: usize) -> Result<(), &'static str> {
    // SAFETY: zeroed sigaction structures are valid; sigfillset on a valid set.
    let mut act: libc::sigaction = unsafe { core::mem::zeroed() };
    let mut old: libc::sigaction = unsafe { core::mem::zeroed() };
    act.sa_sigaction = handler;
    act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
    // SAFETY: act.sa_mask is a valid sigset_t.
    unsafe {
        libc::sigfillset(&mut act.sa_mask);
        // glibc's internal SIGCANCEL / SIGSETXID (32, 33) must get through:
        // setuid() and friends wait until every thread has handled
        // SIGSETXID, and a thread may sit in this handler in a blocking read.
        libc::sigdelset(&mut act.sa_mask, 32);
        libc::sigdelset(&mut act.sa_mask, 33);
    }
    // SAFETY: valid sigaction structures.
    if unsafe { real_sigaction(libc::SIGSYS, &act, &mut old) } != 0 {
        return Err("cannot install the SIGSYS handler");
    }
    PROG_HANDLER.store(old.sa_sigaction, Ordering::Release);
    PROG_FLAGS.store(old.sa_flags, Ordering::Release);
    PROG_MASK.store(mask_to_u64(&old.sa_mask), Ordering::Release);
    OWNED.store(true, Ordering::Release);
    Ok(())
}

/// Give SIGSYS back to the program (used when filter installation fails).
pub fn uninstall() {
    if OWNED.swap(false, Ordering::AcqRel) {
        let act = program_action();
        // SAFETY: a valid sigaction structure.
        let _ = unsafe { real_sigaction(libc::SIGSYS, &act, core::ptr::null_mut()) };
    }
}

/// The program's SIGSYS action as it believes it installed it.
pub fn program_action() -> libc::sigaction {
    // SAFETY: zeroed sigaction is valid.
    let mut a: libc::sigaction = unsafe { core::mem::zeroed() };
    a.sa_sigaction = PROG_HANDLER.load(Ordering::Acquire);
    a.sa_flags = PROG_FLAGS.load(Ordering::Acquire);
    a.sa_mask = u64_to_mask(PROG_MASK.load(Ordering::Acquire));
    a
}

/// The interposed `sigaction`.
///
/// # Safety
/// Same contract as libc's `sigaction`.
pub unsafe fn interposed(
    sig: libc::c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> libc::c_int {
    if sig != libc::SIGSYS || !owned() {
        // SAFETY: forwarding the caller's pointers under the same contract.
        return unsafe { real_sigaction(sig, act, old) };
    }
    let prev = program_action();
    if !act.is_null() {
        // SAFETY: the caller passes a valid sigaction when non-null.
        let a = unsafe { &*act };
        PROG_HANDLER.store(a.sa_sigaction, Ordering::Release);
        PROG_FLAGS.store(a.sa_flags, Ordering::Release);
        PROG_MASK.store(mask_to_u64(&a.sa_mask), Ordering::Release);
        crate::plog!(
            "sigaction(SIGSYS) by the program: kept ours, chaining to {:#x}",
            a.sa_sigaction
        );
    }
    if !old.is_null() {
        // SAFETY: the caller passes a writable sigaction when non-null.
        unsafe { *old = prev };
    }
    0
}

/// The interposed `signal`: BSD semantics like glibc's.
pub fn interposed_signal(sig: libc::c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
    // SAFETY: zeroed sigaction structures are valid.
    let mut act: libc::sigaction = unsafe { core::mem::zeroed() };
    let mut old: libc::sigaction = unsafe { core::mem::zeroed() };
    act.sa_sigaction = handler;
    act.sa_flags = libc::SA_RESTART;
    // SAFETY: valid sigset pointer.
    unsafe {
        libc::sigemptyset(&mut act.sa_mask);
        libc::sigaddset(&mut act.sa_mask, sig);
    }
    // SAFETY: valid sigaction structures.
    if unsafe { interposed(sig, &act, &mut old) } != 0 {
        return libc::SIG_ERR;
    }
    old.sa_sigaction
}
