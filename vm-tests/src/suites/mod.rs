//! Every privileged suite, in the order they run.

use crate::harness::Test;

mod netns_basics;

pub fn all() -> Vec<Test> {
    let mut tests = Vec::new();
    tests.extend(netns_basics::tests());
    tests
}
