//! Interface names as the kernel accepts them (IFNAMSIZ - 1 bytes, no '/',
//! no whitespace, not "." or ".."), checked before anything is sent.

use crate::error::{Error, Result};

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// Validate an interface name, naming the value in the error.
pub fn validate_ifname(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("must not be empty".to_string())
    } else if name.len() > MAX_IFNAME_LEN {
        Some(format!(
            "{} bytes, longer than {MAX_IFNAME_LEN}",
            name.len()
        ))
    } else if matches!(name, "." | ".." | "all" | "default") {
        // "all" and "default" are the kernel's own per-interface sysctl
        // directories (net.ipv4.conf.all): a link cannot have those names.
        Some("reserved name".to_string())
    } else if name.contains('/') {
        Some("contains '/'".to_string())
    } else if name
        .chars()
        .any(|c| c.is_whitespace() || c == ':' || c.is_control())
    {
        Some("contains whitespace, ':' or a control character".to_string())
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::invalid("interface name", name, reason)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in ["eth0", "br-1234567890ab", "veth_a.b-c", "x"] {
            validate_ifname(ok).unwrap();
        }
    }

    #[test]
    fn rejects_bad_names_naming_the_value() {
        for bad in [
            "",
            "sixteen-bytes-xx",
            "a/b",
            "a b",
            "tab\t",
            ".",
            "..",
            "a:1",
            "all",
            "default",
        ] {
            let err = validate_ifname(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
            assert_eq!(err.kind(), crate::ErrorKind::InvalidInput);
        }
    }
}
