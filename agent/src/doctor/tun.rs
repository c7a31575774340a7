//! /dev/net/tun (what userspace network stacks such as pasta need).

use super::{CheckId, Checks};

pub(super) fn probe(c: &mut Checks) {
    let r = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun");
    c.result(CheckId::Tun, r.map(|_| "opened read-write".to_string()));
}
