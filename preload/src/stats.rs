//! Time spent inside the preload, for benchmarks: with
//! `CONDUCTOR_PRELOAD_STATS=/path` the counters live in that file (mapped
//! shared), so a benchmark reads them before and after what it measures
//! without asking the program anything. Off (one relaxed load per call)
//! when the variable is unset.
//!
//! File layout: the 8 bytes `CPSTATS1`, then little-endian u64 counters in
//! the order of [`Counter`].

use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

/// The counters, in file order.
#[derive(Clone, Copy, Debug)]
pub enum Counter {
    /// Calls that reached the emulation layer (trapped or through a hook),
    /// reads excluded.
    Calls = 0,
    /// Nanoseconds spent emulating them (the real call included).
    CallNs,
    /// How many of those calls came through the seccomp trap (each also
    /// costs a SIGSYS delivery, outside the handler's own clock).
    Trapped,
    /// Reads of degraded sockets that went through the preload.
    Reads,
    /// Nanoseconds in those reads, waiting for data included.
    ReadNs,
    /// Polls of the event thread (dumps and diffs).
    Polls,
    /// Nanoseconds the event thread spent polling.
    PollNs,
    /// Of `CallNs`, nanoseconds in the program's own system calls, issued
    /// for real (what the call costs without the preload).
    RealNs,
}

const COUNTERS: usize = 8;
const MAGIC: &[u8; 8] = b"CPSTATS1";
const FILE_LEN: usize = 4096;

static MAP: AtomicPtr<AtomicU64> = AtomicPtr::new(core::ptr::null_mut());

/// Map the counters file (created or reused). Failure leaves stats off.
pub fn init(path: &std::ffi::CStr) {
    // SAFETY: plain libc calls from the single-threaded constructor; the
    // mapping is kept for the life of the process.
    unsafe {
        let fd = libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_CLOEXEC,
            0o644,
        );
        if fd < 0 {
            return;
        }
        let mut st: libc::stat = core::mem::zeroed();
        let fresh = libc::fstat(fd, &mut st) != 0 || (st.st_size as usize) < FILE_LEN;
        if fresh && libc::ftruncate(fd, FILE_LEN as libc::off_t) != 0 {
            libc::close(fd);
            return;
        }
        let p = libc::mmap(
            core::ptr::null_mut(),
            FILE_LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        );
        libc::close(fd);
        if p == libc::MAP_FAILED {
            return;
        }
        core::ptr::copy_nonoverlapping(MAGIC.as_ptr(), p as *mut u8, MAGIC.len());
        MAP.store((p as *mut u8).add(8) as *mut AtomicU64, Ordering::Release);
    }
}

/// Whether stats are being kept.
#[inline]
pub fn on() -> bool {
    !MAP.load(Ordering::Relaxed).is_null()
}

/// Add `v` to counter `c`.
pub fn add(c: Counter, v: u64) {
    let p = MAP.load(Ordering::Acquire);
    if p.is_null() {
        return;
    }
    // SAFETY: `p` points at COUNTERS aligned u64 slots inside the mapping
    // (offset 8 of a page-aligned mapping), shared as atomics.
    unsafe { (*p.add(c as usize)).fetch_add(v, Ordering::Relaxed) };
    debug_assert!((c as usize) < COUNTERS);
}

/// Monotonic nanoseconds through libc (the vDSO: no system call, which
/// inside gVisor would cost tens of microseconds). Async-signal-safe.
pub fn now() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec; clock_gettime is async-signal-safe.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Parse a counters file's contents (for tools and tests).
pub fn parse(b: &[u8]) -> Option<[u64; COUNTERS]> {
    if b.get(..8)? != MAGIC {
        return None;
    }
    let mut out = [0u64; COUNTERS];
    for (i, v) in out.iter_mut().enumerate() {
        let o = 8 + 8 * i;
        *v = u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parse_layout() {
        let mut f = b"CPSTATS1".to_vec();
        for i in 0..8u64 {
            f.extend_from_slice(&(i * 10).to_le_bytes());
        }
        assert_eq!(super::parse(&f), Some([0, 10, 20, 30, 40, 50, 60, 70]));
        assert_eq!(super::parse(&f[..20]), None);
        f[0] = b'X';
        assert_eq!(super::parse(&f), None);
    }
}
