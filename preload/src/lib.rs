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

pub mod bpf;
pub mod emulate;
pub mod events;
pub mod hooks;
pub mod log;
pub mod netlink;
pub mod rewrite;
pub mod seccomp;
pub mod sigaction;
pub mod sigsys;
pub mod subs;
pub mod sys;

use std::ffi::{CStr, CString};
use std::sync::atomic::Ordering;

fn env(name: &CStr) -> Option<&'static CStr> {
    // SAFETY: getenv with a NUL-terminated name; the result stays valid
    // while the environment is not modified (we copy before modifying).
    let p = unsafe { libc::getenv(name.as_ptr()) };
    if p.is_null() {
        None
    } else {
        // SAFETY: getenv returns a NUL-terminated string.
        Some(unsafe { CStr::from_ptr(p) })
    }
}

/// Remove this library from LD_PRELOAD so that children do not load it.
fn scrub_ld_preload() {
    let Some(v) = env(c"LD_PRELOAD") else { return };
    let Ok(s) = v.to_str() else { return };
    let kept = remove_self(s);
    if kept == s {
        return;
    }
    // glibc's setenv/unsetenv edit the initial environment array in place,
    // which is also where a Go runtime reads its environment from.
    // SAFETY: single-threaded constructor; valid C strings.
    unsafe {
        if kept.is_empty() {
            libc::unsetenv(c"LD_PRELOAD".as_ptr());
        } else if let Ok(c) = CString::new(kept) {
            libc::setenv(c"LD_PRELOAD".as_ptr(), c.as_ptr(), 1);
        }
    }
}

/// LD_PRELOAD without entries naming this library.
pub fn remove_self(v: &str) -> String {
    v.split([' ', ':'])
        .filter(|e| !e.is_empty() && !e.contains("libconductor_preload"))
        .collect::<Vec<_>>()
        .join(":")
}

fn init() {
    if env(c"CONDUCTOR_PRELOAD")
        .map(|v| v.to_bytes() == b"off")
        .unwrap_or(false)
    {
        hooks::ENABLED.store(false, Ordering::Relaxed);
        return;
    }
    if let Some(p) = env(c"CONDUCTOR_PRELOAD_LOG") {
        log::init(p);
    }
    plog!("loaded");
    if let Some(ms) =
        env(c"CONDUCTOR_PRELOAD_POLL_MS").and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
    {
        subs::PERIOD_MS.store(ms.clamp(1, 10_000), Ordering::Relaxed);
    }
    if env(c"CONDUCTOR_PRELOAD_INHERIT")
        .map(|v| v.to_bytes() != b"1")
        .unwrap_or(true)
    {
        scrub_ld_preload();
    }
    if !cfg!(target_arch = "x86_64") {
        log::warn(format_args!(
            "seccomp path not supported on this architecture; libc hooks only"
        ));
        return;
    }
    if let Err(e) = sigaction::install(sigsys::handler as *const () as usize) {
        log::warn(format_args!("{}; raw-syscall interception disabled", e));
        return;
    }
    // Linked statically into a program (tests, fuzz targets): our own raw
    // system calls would lie inside the trapped text. Stay out.
    let me = constructor as *const () as u64;
    if seccomp::exe_text()
        .iter()
        .any(|r| r.start <= me && me < r.end)
    {
        sigaction::uninstall();
        return;
    }
    match seccomp::install_base() {
        Ok(()) => plog!("seccomp trap path active"),
        Err(e) => {
            sigaction::uninstall();
            log::warn(format_args!("{}; raw-syscall interception disabled", e));
        }
    }
}

extern "C" fn constructor() {
    let _ = std::panic::catch_unwind(init);
}

#[used]
#[link_section = ".init_array"]
static CONSTRUCTOR: extern "C" fn() = constructor;

#[cfg(test)]
mod tests {
    #[test]
    fn remove_self_from_ld_preload() {
        assert_eq!(
            super::remove_self("/usr/local/lib/libconductor_preload.so"),
            ""
        );
        assert_eq!(
            super::remove_self("/a.so:/x/libconductor_preload.so /b.so"),
            "/a.so:/b.so"
        );
    }
}
