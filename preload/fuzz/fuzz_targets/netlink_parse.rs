#![no_main]
//! Fuzz the pure netlink parsing / rewriting / diffing code of the preload.
use conductor_preload::{events, netlink, rewrite};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    conductor_preload::fuzz_one(data);
    let _ = (events::Kind::Link, netlink::NLMSG_HDRLEN, rewrite::is_refusal(0));
});
