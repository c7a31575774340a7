//! Can this process subscribe to rtnetlink multicast groups (what `ip
//! monitor`, Docker's netlink library and systemd-networkd need)? gVisor
//! refuses it.
//!
//! TODO(lead): this is the only place in the agent that touches a netlink
//! socket directly; it belongs in the netns crate as
//! `netns::probe_subscription() -> Result<()>` (bind with nl_groups and
//! NETLINK_ADD_MEMBERSHIP). Replace this helper once that exists.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// RTMGRP_LINK: the link group as a bind() bitmask.
const RTMGRP_LINK: u32 = 1;
/// RTNLGRP_LINK: the link group as a membership number.
const RTNLGRP_LINK: libc::c_int = 1;

fn socket() -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// bind() with nl_groups = RTMGRP_LINK.
pub fn bind_with_groups() -> std::io::Result<()> {
    let fd = socket()?;
    // SAFETY: sockaddr_nl is plain data; zeroed is a valid value.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr.nl_groups = RTMGRP_LINK;
    // SAFETY: addr is a valid sockaddr_nl of the given length.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// setsockopt(NETLINK_ADD_MEMBERSHIP, RTNLGRP_LINK) on a bound socket.
pub fn add_membership() -> std::io::Result<()> {
    let fd = socket()?;
    // SAFETY: as above.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: addr is a valid sockaddr_nl of the given length.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let group: libc::c_int = RTNLGRP_LINK;
    // SAFETY: group is a c_int living across the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_NETLINK,
            libc::NETLINK_ADD_MEMBERSHIP,
            (&group as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
