//! Parsing what `worker spawn` takes on the command line: volume specs,
//! environment entries, memory sizes and CPU counts, checked before
//! anything is asked of Docker.

use super::error::{Result, WorkerError};

/// `-v SRC:DST[:ro|rw]`, as Docker's `Binds` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

impl Volume {
    pub fn parse(spec: &str) -> Result<Volume> {
        let bad = |reason: &str| WorkerError::invalid("volume", spec, reason);
        let parts: Vec<&str> = spec.split(':').collect();
        let (source, target, read_only) = match parts.as_slice() {
            [s, t] => (*s, *t, false),
            [s, t, "ro"] => (*s, *t, true),
            [s, t, "rw"] => (*s, *t, false),
            [_, _, m] => return Err(bad(&format!("mode {m:?} is neither ro nor rw"))),
            _ => return Err(bad("expected SRC:DST or SRC:DST:ro")),
        };
        if source.is_empty() {
            return Err(bad("the source is empty"));
        }
        if !target.starts_with('/') {
            return Err(bad("the destination must be an absolute path"));
        }
        Ok(Volume {
            source: source.to_string(),
            target: target.to_string(),
            read_only,
        })
    }

    pub fn bind(&self) -> String {
        let mode = if self.read_only { ":ro" } else { "" };
        format!("{}:{}{mode}", self.source, self.target)
    }
}

/// `-e K=V` (or `-e K`, taking K from this process's environment, as
/// `docker run` does).
pub fn parse_env(spec: &str) -> Result<String> {
    let (key, value) = match spec.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (spec, None),
    };
    if key.is_empty() {
        return Err(WorkerError::invalid(
            "environment entry",
            spec,
            "the name is empty",
        ));
    }
    if key.contains(char::is_whitespace) {
        return Err(WorkerError::invalid(
            "environment entry",
            spec,
            "the name contains whitespace",
        ));
    }
    match value {
        Some(v) => Ok(format!("{key}={v}")),
        None => std::env::var(key)
            .map(|v| format!("{key}={v}"))
            .map_err(|_| {
                WorkerError::invalid(
                    "environment entry",
                    spec,
                    "no value given and none in this environment",
                )
            }),
    }
}

/// `--memory 512m`: bytes. Suffixes b, k, m, g (binary, as Docker's).
pub fn parse_memory(spec: &str) -> Result<i64> {
    let bad = |reason: &str| WorkerError::invalid("memory size", spec, reason);
    let s = spec.trim().to_ascii_lowercase();
    let s = s.strip_suffix('b').filter(|r| !r.is_empty()).unwrap_or(&s);
    let (digits, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c),
        _ => (s, 'b'),
    };
    let shift = match unit {
        'b' => 0,
        'k' => 10,
        'm' => 20,
        'g' => 30,
        other => return Err(bad(&format!("unknown unit {other:?} (use b, k, m or g)"))),
    };
    let n: i64 = digits
        .parse()
        .map_err(|_| bad("expected a number and a unit, e.g. 512m"))?;
    let bytes = n
        .checked_mul(1i64 << shift)
        .ok_or_else(|| bad("too large"))?;
    // Docker refuses less than 6 MiB; say so before asking it.
    if bytes < 6 << 20 {
        return Err(bad("Docker needs at least 6m"));
    }
    Ok(bytes)
}

/// `--cpus 1.5`: Docker's NanoCpus.
pub fn parse_cpus(spec: &str) -> Result<i64> {
    let bad = |reason: &str| WorkerError::invalid("cpus", spec, reason);
    let v: f64 = spec
        .trim()
        .parse()
        .map_err(|_| bad("expected a number, e.g. 1.5"))?;
    if !v.is_finite() || v <= 0.0 {
        return Err(bad("must be above 0"));
    }
    if v > 4096.0 {
        return Err(bad("too many"));
    }
    Ok((v * 1e9).round() as i64)
}

/// A container name as Docker accepts it: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn validate_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !first_ok || !rest_ok || name.len() < 2 || name.len() > 128 {
        return Err(WorkerError::invalid(
            "container name",
            name,
            "use 2-128 of [a-zA-Z0-9_.-], starting with a letter or digit",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes() {
        let v = Volume::parse("/data:/mnt:ro").unwrap();
        assert_eq!(v.bind(), "/data:/mnt:ro");
        assert!(v.read_only);
        assert_eq!(Volume::parse("vol:/x").unwrap().bind(), "vol:/x");
        assert_eq!(Volume::parse("/a:/b:rw").unwrap().bind(), "/a:/b");
        for bad in ["/a", "/a:rel", ":/b", "/a:/b:xx", "/a:/b:ro:z", ""] {
            let e = Volume::parse(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn env() {
        assert_eq!(parse_env("A=1").unwrap(), "A=1");
        assert_eq!(parse_env("A=").unwrap(), "A=");
        assert_eq!(parse_env("A=b=c").unwrap(), "A=b=c");
        assert!(parse_env("=1").is_err());
        assert!(parse_env("A B=1").is_err());
        assert!(parse_env("CONDUCTOR_SURELY_UNSET_VARIABLE").is_err());
    }

    #[test]
    fn memory() {
        assert_eq!(parse_memory("512m").unwrap(), 512 << 20);
        assert_eq!(parse_memory("1g").unwrap(), 1 << 30);
        assert_eq!(parse_memory("1GB").unwrap(), 1 << 30);
        assert_eq!(parse_memory("8192k").unwrap(), 8 << 20);
        assert_eq!(parse_memory("10485760").unwrap(), 10 << 20);
        for bad in ["", "m", "12x", "-5m", "1k", "99999999999999g"] {
            let e = parse_memory(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn cpus() {
        assert_eq!(parse_cpus("1.5").unwrap(), 1_500_000_000);
        assert_eq!(parse_cpus("0.25").unwrap(), 250_000_000);
        for bad in ["0", "-1", "x", "nan", "inf", ""] {
            assert!(parse_cpus(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names() {
        assert!(validate_name("w1").is_ok());
        assert!(validate_name("my_worker.2-a").is_ok());
        for bad in ["", "a", "-x", "a b", "a/b"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
