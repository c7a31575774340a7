//! How to run dockerd with `libconductor_preload.so`: where the installed
//! library is, the exact command line, and the systemd drop-in.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};

/// Where `scripts/demo.sh` installs the library.
pub const INSTALLED_PATH: &str = "/usr/local/lib/libconductor_preload.so";
/// Overrides the search (a library built but not installed). Not
/// `CONDUCTOR_PRELOAD`: that one is the library's own switch (`off`).
pub const LIBRARY_ENV: &str = "CONDUCTOR_PRELOAD_PATH";
pub const DROP_IN_PATH: &str = "/etc/systemd/system/docker.service.d/conductor-preload.conf";

/// Places the library is looked for, in order; only `$CONDUCTOR_PRELOAD_PATH`
/// when that is set (a wrong explicit path is an error, not a fallback).
pub fn candidates() -> Vec<PathBuf> {
    if let Some(p) = std::env::var_os(LIBRARY_ENV) {
        return vec![PathBuf::from(p)];
    }
    let mut v = vec![PathBuf::from(INSTALLED_PATH)];
    for dir in [
        "/usr/local/lib/conductor-net",
        "/usr/lib/conductor-net",
        "/usr/lib",
    ] {
        v.push(Path::new(dir).join("libconductor_preload.so"));
    }
    v
}

/// The first candidate that is a file.
pub fn find_library() -> Option<PathBuf> {
    candidates().into_iter().find(|p| p.is_file())
}

/// What `conductor-netd preload` prints.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PreloadSetup {
    pub library: PathBuf,
    /// The command line to start dockerd with the preload.
    pub command: String,
    pub systemd_drop_in_path: String,
    pub systemd_drop_in: String,
}

impl PreloadSetup {
    /// For `library`, with `dockerd` (its path) and its arguments.
    pub fn new(library: &Path, dockerd: &Path, args: &[String]) -> Result<PreloadSetup> {
        let lib = library
            .to_str()
            .ok_or_else(|| Error::invalid("library path", library.display(), "is not UTF-8"))?;
        let mut command = format!(
            "LD_PRELOAD={} {}",
            shell_quote(lib),
            shell_quote(&dockerd.display().to_string())
        );
        for a in args {
            command.push(' ');
            command.push_str(&shell_quote(a));
        }
        // systemd splits Environment= on whitespace unless quoted.
        let assignment = format!("LD_PRELOAD={lib}");
        let value = if lib.chars().any(char::is_whitespace) {
            format!("\"{assignment}\"")
        } else {
            assignment
        };
        Ok(PreloadSetup {
            library: library.to_path_buf(),
            command,
            systemd_drop_in_path: DROP_IN_PATH.to_string(),
            systemd_drop_in: format!("[Service]\nEnvironment={value}\n"),
        })
    }

    /// The human-readable form.
    pub fn text(&self) -> String {
        format!(
            "library: {}\n\
             run dockerd with it:\n  {}\n\
             for a dockerd run by systemd, put this in {}:\n{}\
             then: systemctl daemon-reload && systemctl restart docker\n",
            self.library.display(),
            self.command,
            self.systemd_drop_in_path,
            self.systemd_drop_in
                .lines()
                .map(|l| format!("  {l}\n"))
                .collect::<String>(),
        )
    }
}

/// The library, or an error naming every place looked in.
pub fn locate_library() -> Result<PathBuf> {
    find_library().ok_or_else(|| Error::NotInstalled {
        what: "libconductor_preload.so",
        looked_in: candidates()
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        hint: "install it with scripts/demo.sh, or set CONDUCTOR_PRELOAD_PATH to a built one",
    })
}

/// `dockerd` as found on PATH, or the bare name.
pub fn find_dockerd() -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("dockerd"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("dockerd"))
}

/// Quote for a POSIX shell only when needed.
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-=:,+@%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_is_exact() {
        let s = PreloadSetup::new(
            Path::new(INSTALLED_PATH),
            Path::new("/usr/sbin/dockerd"),
            &["-H".into(), "unix:///run/d.sock".into()],
        )
        .unwrap();
        assert_eq!(
            s.command,
            "LD_PRELOAD=/usr/local/lib/libconductor_preload.so /usr/sbin/dockerd -H unix:///run/d.sock"
        );
        assert_eq!(
            s.systemd_drop_in,
            "[Service]\nEnvironment=LD_PRELOAD=/usr/local/lib/libconductor_preload.so\n"
        );
    }

    #[test]
    fn odd_paths_are_quoted() {
        let s = PreloadSetup::new(
            Path::new("/opt/my libs/libconductor_preload.so"),
            Path::new("dockerd"),
            &["--label=a b".into(), "it's".into()],
        )
        .unwrap();
        assert_eq!(
            s.command,
            "LD_PRELOAD='/opt/my libs/libconductor_preload.so' dockerd '--label=a b' 'it'\\''s'"
        );
        assert!(s
            .systemd_drop_in
            .contains("Environment=\"LD_PRELOAD=/opt/my libs/libconductor_preload.so\""));
    }
}
