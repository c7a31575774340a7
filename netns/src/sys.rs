//! Thin FFI edges that nix does not cover.

/// The head of the kernel log (syslog(2) SYSLOG_ACTION_READ_ALL, which reads
/// without consuming). gVisor's starts with "Starting gVisor...", which is
/// how the agent tells the sandbox from a real kernel. None when unreadable.
pub fn kernel_log_head() -> Option<String> {
    const SYSLOG_ACTION_READ_ALL: libc::c_int = 3;
    let mut buf = vec![0u8; 4096];
    // SAFETY: buf is valid for writes of buf.len() bytes for the whole call,
    // and klogctl writes at most that many.
    let n = unsafe {
        libc::klogctl(
            SYSLOG_ACTION_READ_ALL,
            buf.as_mut_ptr().cast(),
            buf.len() as libc::c_int,
        )
    };
    if n <= 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// The kind of namespace an open namespace file refers to (NS_GET_NSTYPE:
/// a CLONE_NEW* value). Linux >= 4.11 answers it for every namespace file
/// and ENOTTY for anything else; gVisor 20240729 answers ENOTTY always.
pub(crate) fn namespace_type(
    fd: std::os::fd::BorrowedFd<'_>,
) -> Result<libc::c_int, nix::errno::Errno> {
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703; // _IO(0xb7, 0x3)
    use std::os::fd::AsRawFd;
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd, which
    // the borrow keeps open for the duration of the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE as _) };
    if rc < 0 {
        return Err(nix::errno::Errno::last());
    }
    Ok(rc)
}
