//! Managed child processes for the real service binaries.
//!
//! Chaos runs kill and restart the orchestrator and workers as separate processes, because only
//! a real process crash proves that state survives in NATS and PostgreSQL rather than in memory.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;

use crate::signal::{kill_and_reap, send_sigterm, wait_with_timeout};

/// A named child process whose output goes to `LOG_DIR/NAME.log`.
///
/// The log is opened in append mode, so the output of every restart accumulates in one file,
/// separated by a marker line per start. Dropping the service kills the process.
#[derive(Debug)]
pub struct Service {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    log_path: PathBuf,
    child: Option<Child>,
}

impl Service {
    /// Starts `program` with `args` and the extra environment variables `envs` (added to the
    /// inherited environment), appending stdout and stderr to `log_dir/NAME.log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        envs: &[(String, String)],
        log_dir: &Path,
    ) -> anyhow::Result<Service> {
        fs::create_dir_all(log_dir)
            .with_context(|| format!("creating log directory {}", log_dir.display()))?;
        let mut service = Service {
            name: name.to_owned(),
            program: program.to_owned(),
            args: args.to_vec(),
            envs: envs.to_vec(),
            log_path: log_dir.join(format!("{name}.log")),
            child: None,
        };
        service.start()?;
        Ok(service)
    }

    /// The name given at spawn time.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The log file receiving stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The pid of the running process, or `None` after it was killed, terminated or reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is alive. Reaps it if it has exited, so no zombie lingers.
    pub fn is_running(&mut self) -> bool {
        let Some(child) = self.child.as_mut() else {
            return false;
        };
        match child.try_wait() {
            Ok(None) => true,
            Ok(Some(_)) | Err(_) => {
                self.child = None;
                false
            }
        }
    }

    /// Kills the process with SIGKILL (a crash: no cleanup runs) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
    }

    /// Asks the process to stop with SIGTERM, waits up to `grace`, then falls back to SIGKILL.
    ///
    /// Returns the exit code, or `None` if the process ended by a signal (including the SIGKILL
    /// fallback) or was not running.
    pub fn terminate(&mut self, grace: Duration) -> anyhow::Result<Option<i32>> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        if let Err(err) = send_sigterm(&child) {
            // Never leave the process behind just because the polite way failed.
            kill_and_reap(&mut child);
            return Err(err.context(format!("terminating service {}", self.name)));
        }
        let status = match wait_with_timeout(&mut child, grace) {
            Some(status) => Some(status),
            None => kill_and_reap(&mut child),
        };
        Ok(status.and_then(|status| status.code()))
    }

    /// Kills the process if it is still running and starts it again with the same program,
    /// arguments and environment; its output is appended to the same log.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.start()
    }

    fn start(&mut self) -> anyhow::Result<()> {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("opening log file {}", self.log_path.display()))?;
        // The marker separates restarts in the shared log; failing to write it is harmless.
        let _ = writeln!(
            log,
            "=== harness: starting {} at unix {} ===",
            self.name,
            unix_secs()
        );
        let log_err = log.try_clone().context("duplicating the log file handle")?;
        let child = self.command(log, log_err).spawn().with_context(|| {
            format!(
                "starting service {} from {} (is the path right, and has the binary been \
                 built with `cargo build`?)",
                self.name,
                self.program.display()
            )
        })?;
        self.child = Some(child);
        Ok(())
    }

    fn command(&self, stdout: File, stderr: File) -> Command {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .envs(self.envs.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        command
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Stops services with SIGTERM, the last started first, each given `grace` before SIGKILL;
/// returns each one's name and exit code.
pub async fn terminate_all(services: Vec<Service>, grace: Duration) -> Vec<(String, Option<i32>)> {
    let mut codes = Vec::new();
    for mut service in services.into_iter().rev() {
        let name = service.name().to_owned();
        let code = tokio::task::spawn_blocking(move || service.terminate(grace))
            .await
            .ok()
            .and_then(Result::ok)
            .flatten();
        codes.push((name, code));
    }
    codes
}
