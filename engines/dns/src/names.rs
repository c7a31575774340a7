//! Names as the record table keys them: lowercase labels joined by dots,
//! no trailing dot. Daemon input is validated here; query names are turned
//! into keys without allocating.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::Name;

use crate::error::{Error, Result};

/// Longest name in presentation form without the trailing dot (RFC 1035).
pub(crate) const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// Key buffer for one query name.
pub(crate) type KeyBuf = [u8; MAX_NAME_LEN];

fn label_byte_ok(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Validates a name the daemon hands over (container name, alias, network
/// name) and returns its key form.
pub(crate) fn normalize(name: &str) -> Result<Box<str>> {
    let invalid = |reason| Error::InvalidName {
        name: name.to_string(),
        reason,
    };
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        return Err(invalid("empty"));
    }
    if trimmed.len() > MAX_NAME_LEN {
        return Err(invalid("longer than 253 characters"));
    }
    for label in trimmed.split('.') {
        if label.is_empty() {
            return Err(invalid("empty label"));
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(invalid("label longer than 63 characters"));
        }
        if !label.bytes().all(label_byte_ok) {
            return Err(invalid(
                "only letters, digits, '-', '_' and '.' between labels",
            ));
        }
    }
    Ok(trimmed.to_ascii_lowercase().into_boxed_str())
}

/// The key of a query name, written into `buf`; `None` for the root and for
/// names with bytes no local name can have (those are never local).
pub(crate) fn query_key<'b>(name: &Name, buf: &'b mut KeyBuf) -> Option<&'b str> {
    let mut len = 0;
    for label in name.iter() {
        let extra = usize::from(len != 0);
        if label.is_empty() || len + extra + label.len() > buf.len() {
            return None;
        }
        if extra == 1 {
            buf[len] = b'.';
            len += 1;
        }
        for &b in label {
            if !label_byte_ok(b) {
                return None;
            }
            buf[len] = b.to_ascii_lowercase();
            len += 1;
        }
    }
    if len == 0 {
        return None;
    }
    std::str::from_utf8(&buf[..len]).ok()
}

/// The address a reverse name (`4.3.2.1.in-addr.arpa.`, 32 nibbles +
/// `ip6.arpa.`) stands for; `None` when it is not exactly such a name.
pub(crate) fn reverse_addr(name: &Name) -> Option<IpAddr> {
    let labels: Vec<&[u8]> = name.iter().collect();
    let n = labels.len();
    if n < 2 || !labels[n - 1].eq_ignore_ascii_case(b"arpa") {
        return None;
    }
    let zone = labels[n - 2];
    let parts = &labels[..n - 2];
    if zone.eq_ignore_ascii_case(b"in-addr") && parts.len() == 4 {
        let mut octets = [0u8; 4];
        for (i, part) in parts.iter().rev().enumerate() {
            let text = std::str::from_utf8(part).ok()?;
            if text.is_empty() || text.len() > 3 || !text.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            octets[i] = text.parse().ok()?;
        }
        return Some(IpAddr::V4(Ipv4Addr::from(octets)));
    }
    if zone.eq_ignore_ascii_case(b"ip6") && parts.len() == 32 {
        let mut value: u128 = 0;
        for part in parts.iter().rev() {
            let [nibble] = part else { return None };
            let digit = (*nibble as char).to_digit(16)?;
            value = (value << 4) | u128::from(digit);
        }
        return Some(IpAddr::V6(Ipv6Addr::from(value)));
    }
    None
}

/// A fully qualified [`Name`] from a key (which `normalize` validated).
pub(crate) fn fqdn(key: &str) -> Option<Name> {
    let mut name = Name::from_ascii(key).ok()?;
    name.set_fqdn(true);
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn normalize_lowercases_and_drops_the_trailing_dot() {
        assert_eq!(&*normalize("Web.").unwrap(), "web");
        assert_eq!(&*normalize("my_app-1.svc").unwrap(), "my_app-1.svc");
    }

    #[test]
    fn normalize_refuses_bad_names_naming_them() {
        for bad in [
            "",
            ".",
            "a..b",
            "with space",
            "a/b",
            &"x".repeat(64),
            &"a.".repeat(130),
        ] {
            let err = normalize(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn query_key_is_case_insensitive_and_rejects_odd_bytes() {
        let mut buf = [0; MAX_NAME_LEN];
        let name = Name::from_str("WeB.NetWork.").unwrap();
        assert_eq!(query_key(&name, &mut buf), Some("web.network"));
        assert_eq!(query_key(&Name::root(), &mut buf), None);
        let odd = Name::from_labels(vec![b"a b".as_slice()]).unwrap();
        assert_eq!(query_key(&odd, &mut buf), None);
    }

    #[test]
    fn reverse_names_give_addresses() {
        let v4 = Name::from_str("4.3.2.10.IN-ADDR.ARPA.").unwrap();
        assert_eq!(reverse_addr(&v4), Some("10.2.3.4".parse().unwrap()));
        let ip: Ipv6Addr = "fd00::1:2".parse().unwrap();
        let v6 = Name::from(IpAddr::V6(ip));
        assert_eq!(reverse_addr(&v6), Some(IpAddr::V6(ip)));
        for bad in [
            "3.2.1.in-addr.arpa.",
            "256.1.1.1.in-addr.arpa.",
            "x.1.1.1.in-addr.arpa.",
            "in-addr.arpa.",
            "1.2.3.4.example.",
        ] {
            assert_eq!(reverse_addr(&Name::from_str(bad).unwrap()), None, "{bad}");
        }
    }
}
