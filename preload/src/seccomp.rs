//! Installing the filters: find the host program's executable text, load the
//! base filter in the constructor, and add per-fd read filters (TSYNC) when a
//! subscription is degraded.

use crate::bpf::{self, Range};
use crate::sys;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

const SECCOMP_SET_MODE_FILTER: usize = 1;
const SECCOMP_FILTER_FLAG_TSYNC: usize = 1;
const MAX_FD_FILTERS: usize = 32;

static ACTIVE: AtomicBool = AtomicBool::new(false);
static RANGES: Mutex<Vec<Range>> = Mutex::new(Vec::new());
static COVERED: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Whether the base filter is installed (the trap path is live).
pub fn active() -> bool {
    ACTIVE.load(Ordering::Acquire)
}

unsafe extern "C" fn phdr_cb(
    info: *mut libc::dl_phdr_info,
    _size: usize,
    data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: dl_iterate_phdr passes a valid info for the duration of the
    // callback; `data` is the &mut Vec<Range> passed below.
    unsafe {
        let out = &mut *(data as *mut Vec<Range>);
        let info = &*info;
        for i in 0..info.dlpi_phnum as usize {
            let ph = &*info.dlpi_phdr.add(i);
            if ph.p_type == libc::PT_LOAD && ph.p_flags & libc::PF_X != 0 {
                let start = info.dlpi_addr.wrapping_add(ph.p_vaddr);
                out.push(Range {
                    start,
                    end: start.wrapping_add(ph.p_memsz),
                });
            }
        }
    }
    // The first object is the main program: stop after it.
    1
}

unsafe extern "C" fn bias_cb(
    info: *mut libc::dl_phdr_info,
    _size: usize,
    data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: as above; `data` is the &mut u64 passed below.
    unsafe {
        *(data as *mut u64) = (*info).dlpi_addr;
    }
    1
}

/// Whether the main program is position independent (loaded with a bias).
/// A non-PIE program's text sits at the same fixed address as every other
/// non-PIE program's, so the instruction-pointer gate cannot tell a child
/// from its parent.
pub fn exe_is_pie() -> bool {
    let mut bias: u64 = 0;
    // SAFETY: the callback only writes `bias`.
    unsafe {
        libc::dl_iterate_phdr(Some(bias_cb), &mut bias as *mut u64 as *mut libc::c_void);
    }
    bias != 0
}

/// Executable segments of the main program.
pub fn exe_text() -> Vec<Range> {
    let mut v: Vec<Range> = Vec::new();
    // SAFETY: the callback only reads the headers and writes to `v`.
    unsafe {
        libc::dl_iterate_phdr(
            Some(phdr_cb),
            &mut v as *mut Vec<Range> as *mut libc::c_void,
        );
    }
    v
}

fn load(prog: &[libc::sock_filter], flags: usize) -> Result<(), i32> {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    let r = sys::syscall6(
        libc::SYS_seccomp,
        [
            SECCOMP_SET_MODE_FILTER,
            flags,
            &fprog as *const _ as usize,
            0,
            0,
            0,
        ],
    );
    match r {
        0 => Ok(()),
        r if r < 0 => Err((-r) as i32),
        // TSYNC: a positive value is the id of a thread that could not sync
        _ => Err(libc::ESRCH),
    }
}

fn load_with_fallback(prog: &[libc::sock_filter], flags: usize) -> Result<(), i32> {
    match load(prog, flags) {
        Err(libc::EACCES) => {
            // Without CAP_SYS_ADMIN a filter needs no_new_privs.
            let r = sys::syscall6(
                libc::SYS_prctl,
                [libc::PR_SET_NO_NEW_PRIVS as usize, 1, 0, 0, 0, 0],
            );
            if r < 0 {
                return Err((-r) as i32);
            }
            load(prog, flags)
        }
        other => other,
    }
}

/// Install the base filter. Returns a reason on failure.
pub fn install_base() -> Result<(), &'static str> {
    let ranges = exe_text();
    if ranges.is_empty() || ranges.len() > 8 {
        return Err("cannot locate the program's executable text");
    }
    let prog =
        bpf::base_filter(&bpf::NRS, &ranges).ok_or("cannot build filter for this text layout")?;
    // Threads started by earlier constructors must get the filter too.
    if load_with_fallback(&prog, SECCOMP_FILTER_FLAG_TSYNC).is_err() {
        load_with_fallback(&prog, 0).map_err(|_| "seccomp filter refused")?;
    }
    if let Ok(mut g) = RANGES.lock() {
        *g = ranges;
    }
    ACTIVE.store(true, Ordering::Release);
    Ok(())
}

/// Make reads and close on `fd` from the program's own code trap, in every
/// thread. Idempotent per fd number.
pub fn cover_fd(fd: i32) -> bool {
    if !active() {
        return false;
    }
    let Ok(mut cov) = COVERED.lock() else {
        return false;
    };
    if cov.contains(&fd) {
        return true;
    }
    if cov.len() >= MAX_FD_FILTERS {
        crate::plog!("fd {}: too many read filters, events not delivered", fd);
        return false;
    }
    let ranges = match RANGES.lock() {
        Ok(r) => r.clone(),
        Err(_) => return false,
    };
    let Some(prog) = bpf::fd_filter(&bpf::NRS, &ranges, fd) else {
        return false;
    };
    match load(&prog, SECCOMP_FILTER_FLAG_TSYNC) {
        Ok(()) => {
            cov.push(fd);
            true
        }
        Err(e) => {
            crate::plog!("fd {}: read filter refused (errno {})", fd, e);
            false
        }
    }
}
