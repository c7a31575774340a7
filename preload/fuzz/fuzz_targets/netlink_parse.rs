#![no_main]
//! Fuzz the pure netlink parsing / rewriting / diffing code of the preload
//! (`conductor_preload::fuzz_one` checks the invariants and panics on a
//! violation).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    conductor_preload::fuzz_one(data);
});
