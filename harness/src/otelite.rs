//! A private otelite (the trace, log and metric UI that receives OTLP): found on the machine,
//! started on loopback ports with its storage and home in a directory of its own, then stopped,
//! or left running past the process that started it (the demo leaves it up for its reader).
//!
//! ```text
//!  find_bin() ──▶ OteliteProcess::start(ports, dir) ──▶ terminate()     (stopped, dir removed)
//!                                                   └─▶ leave_running() (the command that stops it)
//! ```

use std::fs::{self, OpenOptions};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;

use crate::signal::{kill_and_reap, send_sigterm, wait_with_timeout};

/// The command that installs the pinned otelite.
pub const INSTALL: &str = "cargo install otelite --locked --version 0.1.156";

/// The otelite binary: `OTELITE_BIN`, else on the `PATH`, else in `~/.cargo/bin`; `None` when
/// it is not installed.
pub fn find_bin() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("otelite"));
    std::env::var_os("OTELITE_BIN")
        .map(PathBuf::from)
        .into_iter()
        .chain(on_path)
        .chain(std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/otelite")))
        .find(|candidate| candidate.is_file())
}

/// The loopback ports an otelite serves on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OtelitePorts {
    /// Its UI and REST API.
    pub ui: u16,
    /// OTLP over gRPC.
    pub grpc: u16,
    /// OTLP over HTTP.
    pub http: u16,
}

/// A running otelite the caller started.
#[derive(Debug)]
pub struct OteliteProcess {
    child: Option<Child>,
    ports: OtelitePorts,
    dir: PathBuf,
}

impl OteliteProcess {
    /// Starts `bin` on 127.0.0.1 at `ports`, with its storage, its home (where it writes its
    /// configuration on a first run) and its log in `dir` (created). It runs in a process group
    /// of its own, so that a Ctrl-C meant for its starter does not stop it once left running.
    pub fn start(bin: &Path, ports: OtelitePorts, dir: PathBuf) -> anyhow::Result<Self> {
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let log_path = dir.join("otelite.log");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let log_err = log.try_clone().context("duplicating the log file handle")?;
        let child = Command::new(bin)
            .args(["serve", "--addr", &format!("127.0.0.1:{}", ports.ui)])
            .arg("--storage-path")
            .arg(dir.join("data"))
            .env("HOME", &dir)
            .env("OTELITE_OTLP_GRPC_PORT", ports.grpc.to_string())
            .env("OTELITE_OTLP_HTTP_PORT", ports.http.to_string())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {} (install it: {INSTALL})", bin.display()))?;
        Ok(OteliteProcess {
            child: Some(child),
            ports,
            dir,
        })
    }

    /// Its UI and API, `http://127.0.0.1:<ui port>`.
    pub fn ui_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.ui)
    }

    /// Its OTLP/gRPC endpoint, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn otlp_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.grpc)
    }

    /// Its process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its directory: storage, home and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What it wrote to its log so far (for an error message).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("otelite.log")).unwrap_or_default()
    }

    /// Whether it still runs (reaped if it has exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(_) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    /// Stops it with SIGTERM (SIGKILL after `grace`) and removes its directory; its exit code.
    pub fn terminate(&mut self, grace: Duration) -> anyhow::Result<Option<i32>> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        let code = match send_sigterm(&child) {
            Ok(()) => wait_with_timeout(&mut child, grace)
                .or_else(|| kill_and_reap(&mut child))
                .and_then(|status| status.code()),
            Err(err) => {
                kill_and_reap(&mut child);
                return Err(err.context("stopping otelite"));
            }
        };
        fs::remove_dir_all(&self.dir)
            .with_context(|| format!("removing {}", self.dir.display()))?;
        Ok(code)
    }

    /// Lets it run on after this process exits; returns the shell command that stops it and
    /// removes its directory.
    pub fn leave_running(mut self) -> String {
        let pid = self.child.take().map_or(0, |child| child.id());
        format!("kill {pid} && rm -rf {}", self.dir.display())
    }
}

impl Drop for OteliteProcess {
    /// Not left running on purpose: it goes with its starter (an error path must not leak it).
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
    }
}
