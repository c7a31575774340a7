//! Helpers for the unprivileged integration tests in tests/.

use std::path::PathBuf;

pub mod daemon;

/// The conductor-netd binary under test: $CONDUCTOR_NETD_BIN, or the one
/// cargo built next to this test executable (target/<profile>/).
pub fn netd_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CONDUCTOR_NETD_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/conductor-netd
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps layout");
    profile_dir.join("conductor-netd")
}
