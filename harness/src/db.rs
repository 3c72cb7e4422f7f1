//! Fresh, uniquely named PostgreSQL databases.
//!
//! Every test (and every chaos run) gets an empty database of its own on the shared server, so
//! migrations run from scratch and concurrent runs cannot see each other's rows.

use std::env;
use std::path::Path;
use std::thread;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use sqlx::{AssertSqlSafe, Connection as _, PgConnection};

/// Environment variable holding the URL of a database the harness may connect to in order to
/// create and drop databases.
pub const DATABASE_ADMIN_URL_ENV: &str = "DATABASE_ADMIN_URL";

/// The admin URL used when [`DATABASE_ADMIN_URL_ENV`] is unset: the local server with trust
/// authentication, as set up on the project's machines, over loopback without TLS (which
/// protects nothing there and, preferred by default, cost the benchmark a third of its
/// throughput: docs/performance.md). Every database the harness makes inherits the setting.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable";

/// Prefix of every database the harness creates, so leftovers are easy to find and remove.
pub const DB_NAME_PREFIX: &str = "checkout_";

/// Bound for connecting and for `CREATE`/`DROP DATABASE`, so a hung server turns into an error
/// instead of a hung test.
const DB_OP_TIMEOUT: Duration = Duration::from_secs(30);

/// A freshly created, empty database.
///
/// Drop it explicitly with [`TestDb::drop_db`] (async, reports errors) or keep it for inspection
/// with [`TestDb::keep`]. If neither happens, `Drop` removes it on a best-effort basis.
#[derive(Debug)]
pub struct TestDb {
    admin_url: String,
    name: String,
    url: String,
    /// Whether `Drop` should still remove the database; cleared by `drop_db` and `keep`.
    armed: bool,
}

impl TestDb {
    /// Creates a database named `checkout_<12 hex chars>` on the admin server.
    ///
    /// The admin URL comes from `DATABASE_ADMIN_URL`, defaulting to [`DEFAULT_ADMIN_URL`]. If the
    /// server cannot be reached, the error names the command that starts PostgreSQL.
    pub async fn create() -> anyhow::Result<TestDb> {
        let admin_url =
            env::var(DATABASE_ADMIN_URL_ENV).unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
        let simple = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("{DB_NAME_PREFIX}{}", &simple[..12]);
        let url = with_database(&admin_url, &name);

        let mut admin = connect_admin(&admin_url).await?;
        // The name is generated from hex digits only, so quoting cannot be subverted.
        let sql = format!("CREATE DATABASE \"{name}\"");
        tokio::time::timeout(
            DB_OP_TIMEOUT,
            sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut admin),
        )
        .await
        .map_err(|_| anyhow!("CREATE DATABASE {name} timed out after {DB_OP_TIMEOUT:?}"))?
        .with_context(|| format!("CREATE DATABASE {name}"))?;
        // Closing politely is a nicety; the database exists either way.
        let _ = admin.close().await;

        Ok(TestDb {
            admin_url,
            name,
            url,
            armed: true,
        })
    }

    /// The connection URL of the new database (the admin URL with the database name replaced).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The database name, `checkout_<12 hex chars>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops the database, disconnecting any remaining sessions (`WITH (FORCE)`).
    pub async fn drop_db(mut self) -> anyhow::Result<()> {
        self.armed = false;
        drop_database(&self.admin_url, &self.name).await
    }

    /// Leaves the database in place, e.g. so a failing test can be inspected afterwards, and
    /// prints its name and URL to stderr so it can be found.
    pub fn keep(mut self) {
        self.armed = false;
        eprintln!(
            "keeping test database {} ({})",
            self.name,
            redact(&self.url)
        );
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop cannot be async and may run inside a Tokio runtime, where blocking on a nested
        // runtime panics; a plain thread with its own runtime works in every context. Joining it
        // makes sure the database is gone before a test binary exits.
        let worker = thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(drop_database(&admin_url, &name))
        });
        match worker.join() {
            Ok(Ok(())) => {}
            Ok(Err(err)) => eprintln!(
                "warning: could not drop test database {}: {err:#}",
                self.name
            ),
            Err(_) => eprintln!("warning: dropping test database {} panicked", self.name),
        }
    }
}

async fn drop_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let mut admin = connect_admin(admin_url).await?;
    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
    tokio::time::timeout(
        DB_OP_TIMEOUT,
        sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut admin),
    )
    .await
    .map_err(|_| anyhow!("DROP DATABASE {name} timed out after {DB_OP_TIMEOUT:?}"))?
    .with_context(|| format!("DROP DATABASE {name}"))?;
    let _ = admin.close().await;
    Ok(())
}

/// Connects to the admin database, turning failure into an error that says how to start
/// PostgreSQL on this machine.
async fn connect_admin(admin_url: &str) -> anyhow::Result<PgConnection> {
    let connect = PgConnection::connect(admin_url);
    let result = tokio::time::timeout(DB_OP_TIMEOUT, connect)
        .await
        .map_err(|_| anyhow!("connecting timed out after {DB_OP_TIMEOUT:?}"))
        .and_then(|result| result.map_err(anyhow::Error::from));
    result.with_context(|| {
        format!(
            "PostgreSQL is not reachable at {} (set {DATABASE_ADMIN_URL_ENV} to use another \
             server); {}",
            redact(admin_url),
            start_hint()
        )
    })
}

/// The command that gets a local PostgreSQL running, depending on whether it is installed.
fn start_hint() -> String {
    let start = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start";
    if Path::new("/etc/postgresql").is_dir() {
        format!("start it with `{start}`")
    } else {
        format!("install it with `apt-get install -y postgresql`, then start it with `{start}`")
    }
}

/// Replaces the database (path) part of a `postgres://` URL, keeping any query parameters.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |index| index + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut result = format!("{}/{database}", &base[..path_start]);
    if let Some(query) = query {
        result.push('?');
        result.push_str(query);
    }
    result
}

/// Hides the password of a URL so it can appear in logs and errors.
fn redact(url: &str) -> String {
    let authority_start = url.find("://").map_or(0, |index| index + 3);
    let rest = &url[authority_start..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..authority_start],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::{redact, with_database};

    #[test]
    fn replaces_database_and_keeps_query() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "checkout_ab"),
            "postgres://postgres@127.0.0.1:5432/checkout_ab"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:5432", "x"),
            "postgres://h:5432/x"
        );
        assert_eq!(
            with_database("postgres://h?sslmode=disable", "x"),
            "postgres://h/x?sslmode=disable"
        );
    }

    #[test]
    fn redacts_only_the_password() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
    }
}
