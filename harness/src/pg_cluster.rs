//! A private PostgreSQL cluster, owned by the caller, that can be crashed and restarted.
//!
//! The chaos runner must SIGKILL the database under load without touching the machine's shared
//! server (other runs and engineers use it), so it runs its own: `initdb` in a temporary
//! directory, a free port on 127.0.0.1, trust authentication, and the unix socket inside the
//! temporary directory. [`PgCluster::kill`] kills the postmaster and every backend at once (a
//! machine-like crash, so a restart replays the WAL); dropping the cluster kills it and deletes
//! its files.
//!
//! [`PgCluster::start_tls`] runs it with `ssl=on` and a given certificate and key (copied into
//! the cluster's directory, the key at mode 0600 and owned by the server's user, as PostgreSQL
//! requires), and refuses every TCP connection that is not TLS, so a client that got in spoke
//! TLS.

use std::fs::{self, OpenOptions};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Pid, User, geteuid};
use sqlx::{Connection as _, PgConnection};
use tempfile::TempDir;

use crate::free_port;

/// Environment variable naming the directory of PostgreSQL's server binaries.
pub const PG_BINDIR_ENV: &str = "PG_BINDIR";

/// The command that installs the server binaries on the Debian machines this project runs on.
const INSTALL_HINT: &str = "apt-get update && apt-get install -y postgresql";

/// How long a start (with crash recovery after a kill) may take before it is an error.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Pause between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// A running (or killed) private PostgreSQL cluster.
#[derive(Debug)]
pub struct PgCluster {
    bindir: PathBuf,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_path: PathBuf,
    port: u16,
    /// PostgreSQL refuses to run as root; when we are root, it runs as this (uid, gid).
    run_as: Option<(u32, u32)>,
    child: Option<Child>,
    /// The settings that turn TLS on, when it is on.
    ssl: Vec<String>,
    /// Deleted on drop, after `Drop::drop` killed the server (fields drop afterwards).
    _dir: TempDir,
}

/// A server certificate (PEM, with any intermediates) and its private key, for
/// [`PgCluster::start_tls`].
#[derive(Debug, Clone)]
pub struct PgTls {
    /// The certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// The certificate's unencrypted private key.
    pub key_file: PathBuf,
}

/// Client authentication with TLS on: trust over the unix socket and over TLS, and a plain TCP
/// connection refused (PostgreSQL reads the first line that matches).
const TLS_ONLY_HBA: &str = "local all all trust\n\
                            hostssl all all 127.0.0.1/32 trust\n\
                            hostnossl all all 127.0.0.1/32 reject\n";

impl PgCluster {
    /// Creates a cluster with `initdb` and starts it; waits until it accepts connections.
    pub async fn start() -> anyhow::Result<PgCluster> {
        Self::start_with(None).await
    }

    /// [`PgCluster::start`] with `ssl=on` and `tls`'s certificate and key; TCP connections
    /// that are not TLS are refused.
    pub async fn start_tls(tls: &PgTls) -> anyhow::Result<PgCluster> {
        Self::start_with(Some(tls)).await
    }

    async fn start_with(tls: Option<&PgTls>) -> anyhow::Result<PgCluster> {
        let bindir = find_bindir()?;
        let dir = tempfile::Builder::new()
            .prefix("checkout-pg-")
            .tempdir()
            .context("creating a temporary directory for PostgreSQL")?;
        let run_as = run_as()?;
        let data_dir = dir.path().join("data");
        let socket_dir = dir.path().join("socket");
        fs::create_dir_all(&socket_dir)?;
        if let Some((uid, gid)) = run_as {
            for path in [dir.path(), socket_dir.as_path()] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .with_context(|| format!("giving {} to the postgres user", path.display()))?;
            }
        }
        let mut cluster = PgCluster {
            bindir,
            data_dir,
            socket_dir,
            log_path: dir.path().join("postgres.log"),
            port: free_port(),
            run_as,
            child: None,
            ssl: vec![],
            _dir: dir,
        };
        cluster.initdb()?;
        if let Some(tls) = tls {
            cluster.ssl = cluster.install_tls(tls)?;
        }
        cluster.launch().await?;
        Ok(cluster)
    }

    /// The URL of database `name` as the superuser `postgres` over TCP.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// The TCP port on 127.0.0.1; it stays the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server log, across every restart.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// SIGKILLs the postmaster and every backend (its process group) and reaps it: nothing is
    /// flushed, the next start recovers from the WAL. Does nothing when it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                // The group may already be gone; then there is nothing left to kill.
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = child.wait();
        }
    }

    /// Kills the server if it runs, starts it again on the same port and data, and waits until
    /// it accepts connections (crash recovery included).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.launch().await
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bindir.join(program));
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        command
    }

    fn initdb(&self) -> anyhow::Result<()> {
        let output = self
            .command("initdb")
            .args(["-D"])
            .arg(&self.data_dir)
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running initdb from {}", self.bindir.display()))?;
        if !output.status.success() {
            bail!(
                "initdb failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    /// Copies the certificate and key next to the data (readable by the server's user, the
    /// key by it alone), makes TCP TLS-only, and returns the settings that turn TLS on.
    fn install_tls(&self, tls: &PgTls) -> anyhow::Result<Vec<String>> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = self.data_dir.parent().unwrap_or(&self.data_dir);
        let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
        for (from, to, mode) in [(&tls.cert_file, &cert, 0o644), (&tls.key_file, &key, 0o600)] {
            fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
            fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
            if let Some((uid, gid)) = self.run_as {
                std::os::unix::fs::chown(to, Some(uid), Some(gid))?;
            }
        }
        fs::write(self.data_dir.join("pg_hba.conf"), TLS_ONLY_HBA)
            .context("writing pg_hba.conf")?;
        Ok(vec![
            "ssl=on".to_owned(),
            format!("ssl_cert_file={}", cert.display()),
            format!("ssl_key_file={}", key.display()),
        ])
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let log_err = log.try_clone()?;
        let port = self.port.to_string();
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-p", &port, "-c", "listen_addresses=127.0.0.1", "-k"])
            .arg(&self.socket_dir)
            // Six workers, the orchestrator and the runner's pools; the default 100 is tight.
            .args(["-c", "max_connections=300"])
            // A SIGKILL of the server keeps the kernel's page cache, so durability across the
            // crashes this cluster exists for does not need fsync; a shared 2-core machine
            // does not need the extra I/O.
            .args(["-c", "fsync=off"])
            .args(self.ssl.iter().flat_map(|setting| ["-c", setting.as_str()]))
            // Its own process group, so a kill takes every backend with the postmaster.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .with_context(|| format!("running postgres from {}", self.bindir.display()))?;
        self.child = Some(child);
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let url = self.url("postgres");
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                bail!(
                    "postgres exited with {status} while starting; see {}",
                    self.log_path.display()
                );
            }
            let probe =
                tokio::time::timeout(Duration::from_secs(2), PgConnection::connect(&url)).await;
            let last_error = match probe {
                Ok(Ok(conn)) => {
                    let _ = conn.close().await;
                    return Ok(());
                }
                Ok(Err(err)) => err.to_string(),
                Err(_) => "no answer within 2 s".to_owned(),
            };
            if Instant::now() >= deadline {
                self.kill();
                return Err(anyhow!(
                    "postgres did not accept connections within {READY_TIMEOUT:?} (the last \
                     attempt: {last_error}); see {}",
                    self.log_path.display()
                ));
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The directory of `initdb` and `postgres`: `$PG_BINDIR`, else `pg_config --bindir`, else the
/// newest `/usr/lib/postgresql/*/bin`.
fn find_bindir() -> anyhow::Result<PathBuf> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Ok(dir) = std::env::var(PG_BINDIR_ENV) {
        let dir = PathBuf::from(dir);
        if has_server(&dir) {
            return Ok(dir);
        }
        bail!(
            "{PG_BINDIR_ENV}={} has no initdb and postgres",
            dir.display()
        );
    }
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output()
        && output.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if has_server(&dir) {
            return Ok(dir);
        }
    }
    let mut versions: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| dirs.flatten().map(|d| d.path().join("bin")).collect())
        .unwrap_or_default();
    // Version directories are numbers; the longest then greatest name is the newest.
    versions.sort_by_key(|p| (p.as_os_str().len(), p.clone()));
    versions
        .into_iter()
        .rev()
        .find(|dir| has_server(dir))
        .ok_or_else(|| {
            anyhow!(
                "no PostgreSQL server binaries (initdb, postgres) found via {PG_BINDIR_ENV}, \
                 `pg_config --bindir` or /usr/lib/postgresql/*/bin; install them with \
                 `{INSTALL_HINT}`"
            )
        })
}

/// PostgreSQL refuses to run as root: as root, run it as the `postgres` user.
fn run_as() -> anyhow::Result<Option<(u32, u32)>> {
    if !geteuid().is_root() {
        return Ok(None);
    }
    let user = User::from_name("postgres")
        .context("looking up the postgres user")?
        .ok_or_else(|| {
            anyhow!(
                "running as root, and PostgreSQL refuses root: no `postgres` user to run it as \
                 (`{INSTALL_HINT}` creates one)"
            )
        })?;
    Ok(Some((user.uid.as_raw(), user.gid.as_raw())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_killed_cluster_restarts_with_its_committed_data() {
        let mut cluster = PgCluster::start().await.unwrap();
        let url = cluster.url("postgres");
        let mut conn = PgConnection::connect(&url).await.unwrap();
        sqlx::raw_sql("CREATE TABLE t (n int); INSERT INTO t VALUES (42)")
            .execute(&mut conn)
            .await
            .unwrap();
        cluster.kill();
        // The backends get their SIGKILL with the postmaster's, but die when next scheduled:
        // on a busy machine one may still answer for a moment.
        let mut answered = 0;
        while sqlx::raw_sql("SELECT 1").execute(&mut conn).await.is_ok() {
            answered += 1;
            assert!(answered < 50, "a killed cluster still answers after 5 s");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        cluster.restart().await.unwrap();
        let mut conn = PgConnection::connect(&url).await.unwrap();
        let n: i32 = sqlx::query_scalar("SELECT n FROM t")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(n, 42);
        let dir = cluster.data_dir.clone();
        drop(cluster);
        assert!(!dir.exists(), "dropping the cluster leaves its files");
    }
}
