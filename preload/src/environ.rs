//! The process environment, read and edited without libc's `getenv` /
//! `setenv` / `unsetenv`: a host program may define its own (bash does, and
//! keeps its own variable table), so calling them from the constructor can
//! miss the array the program later reads its environment from.
//!
//! The constructor receives the initial environment array (glibc passes
//! `argc, argv, envp` to `.init_array` functions); it and libc's `environ`
//! (if different) are edited in place, before the program's own start-up
//! code copies them (bash's variable table, Python's `os.environ`, the Go
//! runtime's `envs`, which read the same array).

use core::ffi::{c_char, CStr};
use core::sync::atomic::{AtomicPtr, Ordering};
use std::ffi::CString;

/// The name of this library as it appears in LD_PRELOAD entries.
const SELF_NAME: &str = "libconductor_preload";

static ENVP: AtomicPtr<*mut c_char> = AtomicPtr::new(core::ptr::null_mut());

extern "C" {
    static mut environ: *mut *mut c_char;
}

/// Remember the environment array the constructor was given (null: use
/// libc's `environ`).
pub fn init(envp: *mut *mut c_char) {
    ENVP.store(envp, Ordering::Release);
}

fn libc_environ() -> *mut *mut c_char {
    // SAFETY: reading the pointer value of libc's `environ`; no reference to
    // the mutable static is created.
    unsafe { core::ptr::addr_of!(environ).read() }
}

fn array() -> *mut *mut c_char {
    let p = ENVP.load(Ordering::Acquire);
    if p.is_null() {
        libc_environ()
    } else {
        p
    }
}

/// Iterate a NULL-terminated array of C strings.
///
/// # Safety
/// `arr` is null or a NULL-terminated array of valid C strings that is not
/// modified while the iterator is used.
unsafe fn entries<'a>(arr: *mut *mut c_char) -> impl Iterator<Item = &'a CStr> {
    let mut i = 0usize;
    core::iter::from_fn(move || {
        if arr.is_null() {
            return None;
        }
        // SAFETY: within the array up to and including its NULL terminator.
        let p = unsafe { *arr.add(i) };
        if p.is_null() {
            return None;
        }
        i += 1;
        // SAFETY: every entry is a valid C string (caller's contract).
        Some(unsafe { CStr::from_ptr(p) })
    })
}

/// The value of `name` in the initial environment.
pub fn get(name: &str) -> Option<&'static CStr> {
    // SAFETY: the process's environment array, read in the single-threaded
    // constructor; its strings live as long as the process unless a later
    // setenv replaces them (we read flags only at start-up).
    let found = unsafe { entries(array()) }.find(|e| value_of(e.to_bytes(), name).is_some())?;
    let at = name.len() + 1;
    // SAFETY: `found` has at least `at` bytes before its NUL ("NAME=").
    Some(unsafe { CStr::from_ptr(found.as_ptr().add(at)) })
}

/// `Some(value)` if `entry` is `name=value`.
fn value_of<'a>(entry: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let rest = entry.strip_prefix(name.as_bytes())?;
    rest.strip_prefix(b"=")
}

/// LD_PRELOAD without entries naming this library (ld.so separates entries
/// with spaces or colons).
pub fn remove_self(v: &str) -> String {
    v.split([' ', ':'])
        .filter(|e| !e.is_empty() && !e.contains(SELF_NAME))
        .collect::<Vec<_>>()
        .join(":")
}

/// What to do with one environment entry.
#[derive(Debug, PartialEq, Eq)]
pub enum Edit {
    Keep,
    /// Remove the entry (an LD_PRELOAD that named only this library).
    Drop,
    /// Replace it with this `LD_PRELOAD=...` entry.
    Replace(CString),
}

/// The edit that removes this library from `entry`, if it is an LD_PRELOAD.
pub fn edit(entry: &[u8]) -> Edit {
    let Some(v) = value_of(entry, "LD_PRELOAD") else {
        return Edit::Keep;
    };
    let Ok(s) = core::str::from_utf8(v) else {
        return Edit::Keep;
    };
    let kept = remove_self(s);
    if kept == s {
        Edit::Keep
    } else if kept.is_empty() {
        Edit::Drop
    } else {
        match CString::new(format!("LD_PRELOAD={kept}")) {
            Ok(c) => Edit::Replace(c),
            Err(_) => Edit::Keep,
        }
    }
}

/// Remove this library from the LD_PRELOAD entries of a NULL-terminated
/// environment array, in place: dropped entries close up, replaced ones
/// point at a new string (leaked: it lives as long as the process). Returns
/// the number of entries changed.
///
/// # Safety
/// `arr` is null or a writable NULL-terminated array of valid C strings, and
/// nothing else reads or writes it meanwhile (single-threaded constructor).
pub unsafe fn scrub_array(arr: *mut *mut c_char) -> usize {
    if arr.is_null() {
        return 0;
    }
    let (mut read, mut write, mut changed) = (0usize, 0usize, 0usize);
    loop {
        // SAFETY: `read` stays within the array up to its terminator.
        let p = unsafe { *arr.add(read) };
        if p.is_null() {
            break;
        }
        read += 1;
        // SAFETY: a valid C string (caller's contract).
        let out = match edit(unsafe { CStr::from_ptr(p) }.to_bytes()) {
            Edit::Keep => p,
            Edit::Drop => {
                changed += 1;
                continue;
            }
            Edit::Replace(c) => {
                changed += 1;
                c.into_raw()
            }
        };
        // SAFETY: write <= read, inside the array.
        unsafe { *arr.add(write) = out };
        write += 1;
    }
    // SAFETY: write <= the terminator's index.
    unsafe { *arr.add(write) = core::ptr::null_mut() };
    changed
}

/// Remove this library from LD_PRELOAD in the initial environment array and
/// in libc's `environ` (when the host or another library replaced it), so
/// that no child of this process loads it.
pub fn scrub_ld_preload() -> usize {
    let initial = ENVP.load(Ordering::Acquire);
    // SAFETY: single-threaded constructor; both are the process's writable
    // environment arrays (the stack one, or one glibc allocated).
    unsafe {
        let mut n = scrub_array(initial);
        let libc_env = libc_environ();
        if libc_env != initial {
            n += scrub_array(libc_env);
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_self_from_ld_preload() {
        assert_eq!(remove_self("/usr/local/lib/libconductor_preload.so"), "");
        assert_eq!(
            remove_self("/a.so:/x/libconductor_preload.so /b.so"),
            "/a.so:/b.so"
        );
        assert_eq!(remove_self("/a.so /b.so"), "/a.so:/b.so");
    }

    #[test]
    fn edits() {
        assert_eq!(edit(b"PATH=/bin"), Edit::Keep);
        assert_eq!(edit(b"LD_PRELOADX=/l/libconductor_preload.so"), Edit::Keep);
        assert_eq!(edit(b"LD_PRELOAD=/other.so"), Edit::Keep);
        assert_eq!(edit(b"LD_PRELOAD=/l/libconductor_preload.so"), Edit::Drop);
        assert_eq!(edit(b"LD_PRELOAD="), Edit::Keep);
        assert_eq!(
            edit(b"LD_PRELOAD=/a.so /l/libconductor_preload.so"),
            Edit::Replace(CString::new("LD_PRELOAD=/a.so").unwrap())
        );
    }

    fn run(env: &[&str]) -> (Vec<String>, usize) {
        let owned: Vec<CString> = env.iter().map(|e| CString::new(*e).unwrap()).collect();
        let mut arr: Vec<*mut c_char> = owned.iter().map(|c| c.as_ptr() as *mut c_char).collect();
        arr.push(core::ptr::null_mut());
        // SAFETY: a NULL-terminated array of valid C strings owned here.
        let n = unsafe { scrub_array(arr.as_mut_ptr()) };
        // SAFETY: as above, after the edit.
        let out = unsafe { entries(arr.as_mut_ptr()) }
            .map(|e| e.to_string_lossy().into_owned())
            .collect();
        (out, n)
    }

    #[test]
    fn scrub_in_place() {
        let (out, n) = run(&["A=1", "LD_PRELOAD=/l/libconductor_preload.so", "B=2"]);
        assert_eq!((out, n), (vec!["A=1".to_string(), "B=2".to_string()], 1));
        let (out, n) = run(&[
            "LD_PRELOAD=/x.so:/l/libconductor_preload.so",
            "LD_PRELOAD=/l/libconductor_preload.so",
        ]);
        assert_eq!((out, n), (vec!["LD_PRELOAD=/x.so".to_string()], 2));
        let (out, n) = run(&["A=1"]);
        assert_eq!((out, n), (vec!["A=1".to_string()], 0));
        let (out, n) = run(&[]);
        assert_eq!((out, n), (Vec::<String>::new(), 0));
        // SAFETY: null is allowed.
        assert_eq!(unsafe { scrub_array(core::ptr::null_mut()) }, 0);
    }

    #[test]
    fn lookup() {
        assert_eq!(
            value_of(b"CONDUCTOR_PRELOAD=off", "CONDUCTOR_PRELOAD"),
            Some(&b"off"[..])
        );
        assert_eq!(
            value_of(b"CONDUCTOR_PRELOAD_LOG=/x", "CONDUCTOR_PRELOAD"),
            None
        );
        assert_eq!(value_of(b"CONDUCTOR_PRELOAD", "CONDUCTOR_PRELOAD"), None);
    }
}
