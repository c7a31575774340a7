//! Logging without allocation, usable from the SIGSYS handler.
//!
//! `CONDUCTOR_PRELOAD_LOG=/path` appends one line per intercepted call.
//! One-time warnings go to that file, or to stderr when no log is set.

use crate::sys;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicI32, Ordering};

static LOG_FD: AtomicI32 = AtomicI32::new(-1);

/// Open the log file (append). Failure leaves logging off.
pub fn init(path: &std::ffi::CStr) {
    let r = sys::syscall6(
        libc::SYS_openat,
        [
            libc::AT_FDCWD as usize,
            path.as_ptr() as usize,
            (libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_CLOEXEC) as usize,
            0o644,
            0,
            0,
        ],
    );
    if r >= 0 {
        // Move it out of the way of small fd numbers programs may expect.
        let moved = sys::dup_cloexec(r as i32);
        if let Ok(m) = moved {
            sys::close(r as i32);
            LOG_FD.store(m, Ordering::Relaxed);
        } else {
            LOG_FD.store(r as i32, Ordering::Relaxed);
        }
    }
}

pub fn enabled() -> bool {
    LOG_FD.load(Ordering::Relaxed) >= 0
}

/// A fixed-size line buffer that silently truncates.
pub struct Line {
    buf: [u8; 512],
    len: usize,
}

impl Line {
    pub fn new() -> Line {
        Line {
            buf: [0; 512],
            len: 0,
        }
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Default for Line {
    fn default() -> Self {
        Line::new()
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len() - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

fn emit(fd: i32, args: fmt::Arguments<'_>) {
    let mut l = Line::new();
    let pid = sys::syscall6(libc::SYS_getpid, [0; 6]);
    let _ = write!(l, "conductor-preload[{}/{}]: ", pid, sys::gettid());
    let _ = l.write_fmt(args);
    if l.len == l.buf.len() {
        l.len -= 1;
    }
    l.buf[l.len] = b'\n';
    l.len += 1;
    sys::write_all(fd, l.as_bytes());
}

/// Log a line if logging is enabled.
pub fn log(args: fmt::Arguments<'_>) {
    let fd = LOG_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        emit(fd, args);
    }
}

/// A warning: to the log if enabled, else to stderr.
pub fn warn(args: fmt::Arguments<'_>) {
    let fd = LOG_FD.load(Ordering::Relaxed);
    emit(if fd >= 0 { fd } else { 2 }, args);
}

#[macro_export]
macro_rules! plog {
    ($($t:tt)*) => {
        if $crate::log::enabled() {
            $crate::log::log(format_args!($($t)*))
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn line_truncates() {
        let mut l = Line::new();
        for _ in 0..100 {
            let _ = write!(l, "0123456789");
        }
        assert_eq!(l.as_bytes().len(), 512);
    }
}
