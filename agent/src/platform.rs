//! Which kernel are we on: a real Linux kernel or gVisor's Sentry.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// "gvisor" or "kernel".
    pub kind: String,
    /// Kernel release (`uname -r`-like), as reported.
    pub release: String,
    /// How the answer was reached.
    pub evidence: String,
    /// `runsc --version` of a runsc binary visible on PATH, if any (the
    /// sandbox itself does not report its version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runsc: Option<String>,
}

impl Platform {
    pub fn is_gvisor(&self) -> bool {
        self.kind == "gvisor"
    }
}

/// gVisor's fixed /proc/version.
const GVISOR_VERSION: &str = "Linux version 4.4.0 #1 SMP Sun Jan 10 15:06:54 PST 2016";

/// Detect the platform (cheap: two reads, one syscall).
pub fn detect() -> Platform {
    let version = std::fs::read_to_string("/proc/version").unwrap_or_default();
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().to_string())
        .unwrap_or_default();
    let log = netns::sys::kernel_log_head().unwrap_or_default();
    let (kind, evidence) = if log.contains("Starting gVisor") {
        ("gvisor", "kernel log says \"Starting gVisor...\"")
    } else if version.trim() == GVISOR_VERSION {
        ("gvisor", "/proc/version is gVisor's fixed string")
    } else {
        (
            "kernel",
            "no gVisor signature in /proc/version or the kernel log",
        )
    };
    Platform {
        kind: kind.to_string(),
        release,
        evidence: evidence.to_string(),
        runsc: None,
    }
}

/// `runsc --version` of a runsc on PATH (what `doctor` reports).
pub fn runsc_version() -> Option<String> {
    let out = std::process::Command::new("runsc")
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .next()
        .map(|l| l.trim_start_matches("runsc version ").trim().to_string())
}
