//! A private `nats-server` with JetStream, owned by the caller, alone or as one node of a
//! [`NatsCluster`].
//!
//! Each [`NatsServer`] gets its own port and its own JetStream store in a temporary directory,
//! so parallel tests never see each other's streams, and a crash ([`NatsServer::kill`]) followed
//! by [`NatsServer::restart`] exercises real file-store recovery on the same data. It runs the
//! pinned release ([`PINNED_VERSION`], see `locate.rs`) with `sync_interval: always`, so a
//! SIGKILL loses nothing the server acknowledged.

use std::fs::{self, OpenOptions};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use tempfile::TempDir;

use crate::free_port;
use crate::signal::kill_and_reap;

/// Environment variable that overrides where the `nats-server` binary is found.
pub const NATS_SERVER_BIN_ENV: &str = "NATS_SERVER_BIN";

/// Where Debian's `nats-server` package installs the binary; `/usr/sbin` is often not on the
/// PATH of unprivileged users, so it is checked explicitly.
const DEBIAN_BINARY: &str = "/usr/sbin/nats-server";

/// The first release that knows `sync_interval: always`.
const SYNC_ALWAYS_SINCE: Version = (2, 11, 0);

/// How long a start or restart may take until JetStream answers. Recovery of a large store after
/// a crash is the slow case; an empty store is ready in well under a second.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Attempts per start/restart. Only attempts where the process exits early are retried: that is
/// the signature of the port being taken (by a racing process after [`free_port`], or briefly
/// after a kill), which a fresh port or a short wait can fix; a readiness timeout is not retried
/// because it would only multiply the wait.
const START_ATTEMPTS: u32 = 5;

/// Pause before retrying a restart on the same port.
const RESTART_BACKOFF: Duration = Duration::from_millis(200);

/// Pause between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);

/// The JetStream API subject answering with account information; it only answers once
/// JetStream has finished starting (including recovering streams from the store).
const JS_ACCOUNT_INFO_SUBJECT: &str = "$JS.API.INFO";

/// Upper bound for one connect + account query, so a half-started server cannot stall the probe
/// loop past its deadline.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How much of the server log is quoted in errors: enough for the fatal line, not a whole log.
const LOG_TAIL_BYTES: u64 = 2_000;

/// A `nats-server -js` child process with a private port and JetStream store.
///
/// Dropping it kills the process and deletes the store. The server's stdout and stderr go to
/// [`NatsServer::log_path`] inside the temporary directory rather than the caller's terminal, so
/// test output stays readable; errors quote the end of that log.
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    spec: NodeSpec,
    config_path: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    /// Who may log in: the server requires these identities (`auth.rs`).
    passwords: Passwords,
    /// The CA the readiness probe verifies the server with, when it speaks TLS only.
    tls_ca: Option<PathBuf>,
    /// Held only for its own drop, which deletes the store and log after `Drop` killed the
    /// server (fields drop after `Drop::drop` runs).
    _temp_dir: TempDir,
}

/// What to do when the process exits before it is ready, which almost always means its port was
/// taken.
#[derive(Clone, Copy)]
pub(crate) enum OnEarlyExit {
    /// A fresh server has no clients yet, so it can simply move to another free port.
    TryAnotherPort,
    /// A restarted server must keep its port (clients reconnect to it), so wait for it instead.
    WaitForPort,
}

/// Why one start attempt failed, which decides whether another attempt can help.
pub(crate) enum AttemptError {
    /// The process exited before it was ready, typically because the port was taken.
    Exited(anyhow::Error),
    /// Anything else (spawn failure, readiness timeout); retrying would only waste time.
    Fatal(anyhow::Error),
}

impl NatsServer {
    /// Starts a fresh server on a free port and waits until JetStream answers. It requires
    /// the identities of `nats/auth/users.conf`, with fresh passwords ([`NatsServer::passwords`]):
    /// an unauthenticated connection is refused.
    ///
    /// Blocks the calling thread for up to about ten seconds. It is safe to call from inside a
    /// Tokio runtime (the readiness probe runs on a helper thread with its own runtime), but
    /// async code that must not block a worker should prefer [`NatsServer::start_async`].
    pub fn start() -> anyhow::Result<NatsServer> {
        let mut server = Self::prepare("checkout-nats", free_port(), None, Passwords::generate())?;
        block_on_helper(server.run_until_ready(OnEarlyExit::TryAnotherPort))??;
        Ok(server)
    }

    /// Starts a fresh server (with identities, as [`NatsServer::start`]) whose configuration
    /// ends with `extra` (a `tls` block), probing its readiness over TLS with `tls_ca` when it
    /// requires TLS.
    pub async fn start_with(extra: &str, tls_ca: Option<&Path>) -> anyhow::Result<NatsServer> {
        let mut server = Self::prepare("checkout-nats", free_port(), None, Passwords::generate())?;
        server.spec.extra = Some(extra.into());
        server.tls_ca = tls_ca.map(Path::to_path_buf);
        server.run_until_ready(OnEarlyExit::WaitForPort).await?;
        Ok(server)
    }

    /// Async variant of [`NatsServer::start`] that awaits readiness instead of blocking.
    pub async fn start_async() -> anyhow::Result<NatsServer> {
        let mut server = Self::prepare("checkout-nats", free_port(), None, Passwords::generate())?;
        server.run_until_ready(OnEarlyExit::TryAnotherPort).await?;
        Ok(server)
    }

    /// The client URL, `nats://127.0.0.1:PORT`, without credentials: what a service takes as
    /// `NATS_URL`, with its identity beside it ([`NatsServer::service_env`]).
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.spec.port)
    }

    /// The client URL with the administrator's credentials, for `checkout_shared::connect`
    /// (which logs in with them; plain async-nats ignores them: see
    /// [`NatsServer::admin_client`]). A password: never print it.
    pub fn admin_url(&self) -> String {
        self.passwords.admin_url(&self.url())
    }

    /// The identities' passwords this server requires.
    pub fn passwords(&self) -> &Passwords {
        &self.passwords
    }

    /// What a service needs to connect as `identity` without provisioning.
    pub fn service_env(&self, identity: &str) -> anyhow::Result<Vec<(String, String)>> {
        self.passwords.service_env(identity)
    }

    /// A connection as the administrator (for tests: inspecting streams, publishing what no
    /// service identity may).
    pub async fn admin_client(&self) -> anyhow::Result<async_nats::Client> {
        let url = self.url();
        self.passwords
            .admin_options()
            .connect(&url)
            .await
            .with_context(|| format!("connecting to {url} as the administrator"))
    }

    /// The client port on 127.0.0.1; it stays the same across restarts.
    pub fn port(&self) -> u16 {
        self.spec.port
    }

    /// The client listen address, `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.spec.port))
    }

    /// The monitoring endpoint, `http://127.0.0.1:PORT` (`/varz`, `/jsz`, `/routez`).
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.spec.http_port)
    }

    /// The server's name (`server_name`), as JetStream names stream and consumer leaders.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The binary this server runs.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Whether the server writes each message to disk before acknowledging it.
    pub fn syncs_always(&self) -> bool {
        self.spec.sync_always
    }

    /// The pid of the running server, e.g. to read its CPU time from `/proc`; `None` after a
    /// kill.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The JetStream store directory (`-sd`); it survives kills and restarts.
    pub fn store_dir(&self) -> &Path {
        &self.spec.store_dir
    }

    /// The file receiving the server's stdout and stderr across all restarts.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Kills the server with SIGKILL and reaps it, simulating a crash: nothing is flushed or
    /// shut down cleanly. Does nothing if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
    }

    /// Starts the server again on the same port and store and waits until JetStream answers.
    ///
    /// Kills the current process first if it is still running. Blocks like
    /// [`NatsServer::start`]; see [`NatsServer::restart_async`] for async callers.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        block_on_helper(self.run_until_ready(OnEarlyExit::WaitForPort))?
    }

    /// Async variant of [`NatsServer::restart`].
    pub async fn restart_async(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.run_until_ready(OnEarlyExit::WaitForPort).await
    }

    /// Whether the server process is alive. Reaps it if it has exited, so a crashed server never
    /// lingers as a zombie.
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

    /// Finds the binary and lays out the temporary directory; spawns nothing yet.
    pub(crate) fn prepare(
        name: &str,
        port: u16,
        cluster: Option<ClusterSpec>,
        passwords: Passwords,
    ) -> anyhow::Result<NatsServer> {
        let binary = find_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("checkout-nats-")
            .tempdir()
            .context("creating a temporary directory for the NATS JetStream store")?;
        Passwords::write_users_conf(dir.path())?;
        let store_dir = dir.path().join("jetstream");
        fs::create_dir_all(&store_dir)
            .with_context(|| format!("creating JetStream store dir {}", store_dir.display()))?;
        let sync_always = version_of(&binary).is_some_and(|v| v >= SYNC_ALWAYS_SINCE);
        Ok(NatsServer {
            binary,
            spec: NodeSpec {
                name: name.to_owned(),
                port,
                http_port: free_port(),
                store_dir,
                sync_always,
                cluster,
                extra: None,
            },
            config_path: dir.path().join("nats-server.conf"),
            log_path: dir.path().join("nats-server.log"),
            child: None,
            passwords,
            tls_ca: None,
            _temp_dir: dir,
        })
    }

    /// Spawns the server until one attempt gets JetStream ready, retrying early exits.
    pub(crate) async fn run_until_ready(
        &mut self,
        on_early_exit: OnEarlyExit,
    ) -> anyhow::Result<()> {
        let mut last = None;
        for attempt in 0..START_ATTEMPTS {
            if attempt > 0 {
                match on_early_exit {
                    OnEarlyExit::TryAnotherPort => {
                        self.spec.port = free_port();
                        self.spec.http_port = free_port();
                    }
                    OnEarlyExit::WaitForPort => tokio::time::sleep(RESTART_BACKOFF).await,
                }
            }
            match self.attempt().await {
                Ok(()) => return Ok(()),
                Err(AttemptError::Exited(err)) => last = Some(err),
                Err(AttemptError::Fatal(err)) => return Err(err),
            }
        }
        let last = last.unwrap_or_else(|| anyhow!("no attempt was made"));
        Err(last.context(format!(
            "nats-server failed to start after {START_ATTEMPTS} attempts"
        )))
    }

    /// Spawns the process once and waits for JetStream; on failure nothing is left running.
    async fn attempt(&mut self) -> Result<(), AttemptError> {
        self.spawn().map_err(AttemptError::Fatal)?;
        let result = self.wait_ready().await;
        if result.is_err() {
            self.kill();
        }
        result
    }

    pub(crate) fn spawn(&mut self) -> anyhow::Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("opening NATS log {}", self.log_path.display()))?;
        let log_err = log
            .try_clone()
            .context("duplicating the NATS log file handle")?;
        fs::write(&self.config_path, self.spec.render())
            .with_context(|| format!("writing {}", self.config_path.display()))?;
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.config_path)
            // The passwords `users.conf` reads; kept out of the file and the command line.
            .envs(self.passwords.server_env())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .with_context(|| {
                format!(
                    "running {} failed; if it is missing or broken, reinstall it with {}",
                    self.binary.display(),
                    INSTALL_HINT
                )
            })?;
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        // Kill before `_temp_dir` is dropped so the store is not deleted under a live server.
        self.kill();
    }
}

mod auth;
pub mod cluster;
mod config;
mod locate;
mod ready;
pub use auth::{ADMIN, IDENTITIES, Passwords};
pub use cluster::{ClusterOptions, NatsCluster};
use config::{ClusterSpec, NodeSpec};
use locate::{INSTALL_HINT, find_binary, log_tail};
pub use locate::{PINNED_VERSION, Version, version_of};
use ready::block_on_helper;
