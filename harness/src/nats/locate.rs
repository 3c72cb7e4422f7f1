//! Where the `nats-server` binary is, and the tail of its log for error messages.

use super::{DEBIAN_BINARY, INSTALL_HINT, LOG_TAIL_BYTES, NATS_SERVER_BIN_ENV};
use anyhow::{anyhow, bail};
use std::env;
use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};

/// Resolves the binary: `$NATS_SERVER_BIN`, then `nats-server` on PATH, then Debian's path.
pub(super) fn find_binary() -> anyhow::Result<PathBuf> {
    if let Some(explicit) = env::var_os(NATS_SERVER_BIN_ENV) {
        let path = PathBuf::from(explicit);
        if path.is_file() {
            return Ok(path);
        }
        bail!(
            "{NATS_SERVER_BIN_ENV}={} does not exist; point it at a nats-server binary or unset \
             it after installing one with `{INSTALL_HINT}`",
            path.display()
        );
    }
    let on_path: Vec<PathBuf> = env::var_os("PATH")
        .map(|paths| {
            env::split_paths(&paths)
                .map(|dir| dir.join("nats-server"))
                .collect()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from(DEBIAN_BINARY)])
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            anyhow!(
                "nats-server not found (checked ${NATS_SERVER_BIN_ENV}, PATH and {DEBIAN_BINARY}); \
                 install it with `{INSTALL_HINT}`"
            )
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
