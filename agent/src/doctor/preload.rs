//! Is libconductor_preload.so installed (what dockerd needs inside gVisor)?

use super::{CheckId, Checks, Outcome};
use crate::preload_setup;

pub(super) fn probe(c: &mut Checks) {
    let in_ld_preload = std::fs::read_to_string("/etc/ld.so.preload")
        .map(|s| s.contains("libconductor_preload"))
        .unwrap_or(false);
    match preload_setup::find_library() {
        Some(p) => c.add(
            CheckId::Preload,
            Outcome::Ok,
            format!(
                "{}{}",
                p.display(),
                if in_ld_preload {
                    " (listed in /etc/ld.so.preload)"
                } else {
                    ""
                }
            ),
        ),
        None => c.add(
            CheckId::Preload,
            Outcome::Fail,
            format!(
                "libconductor_preload.so not installed (looked in {})",
                preload_setup::candidates()
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    }
}
