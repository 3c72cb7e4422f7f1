//! Counters outside the processes: PostgreSQL's commits, deadlocks and backends, JetStream's
//! stored messages, and the group statements the workers logged as fallen back. Each is read before and after a run; the report divides the difference by the
//! sagas of the run.

use super::procstat::Group;
use anyhow::Context as _;
use bytes::Bytes;
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// The row of the benchmark database's own backends.
pub const POSTGRES: &str = "postgres";
/// The row of PostgreSQL's shared processes (postmaster, WAL writer, checkpointer, background
/// writer): they serve every database of the server, so on a shared server this row also
/// holds other users' work.
pub const POSTGRES_SHARED: &str = "postgres-shared";

/// The processes of PostgreSQL: every backend connected to this database now, and the
/// server's shared processes.
pub async fn pg_groups(pool: &PgPool) -> anyhow::Result<Vec<Group>> {
    let rows: Vec<(i32, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT pid, datname::text, backend_type FROM pg_stat_activity \
         WHERE datname = current_database() OR datname IS NULL",
    )
    .fetch_all(pool)
    .await
    .context("listing PostgreSQL backends (pg_stat_activity)")?;
    let mut own = Vec::new();
    let mut shared = Vec::new();
    for (pid, datname, backend_type) in rows {
        let Ok(pid) = u32::try_from(pid) else {
            continue;
        };
        match (datname, backend_type.as_deref()) {
            (Some(_), _) => own.push(pid),
            // A client backend without a database is a connection still authenticating.
            (None, Some("client backend")) => {}
            (None, _) => shared.push(pid),
        }
    }
    // The postmaster forks every backend; it is the parent of any of them.
    if let Some(postmaster) = own.first().and_then(|&pid| parent_of(pid)) {
        shared.push(postmaster);
    }
    Ok(vec![
        Group {
            name: POSTGRES.into(),
            pids: own,
            shared_memory: true,
        },
        Group {
            name: POSTGRES_SHARED.into(),
            pids: shared,
            shared_memory: true,
        },
    ])
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    super::procstat::parse_ppid(&stat)
}

/// What PostgreSQL counted in this database so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PgCounts {
    /// Transactions committed (`xact_commit`; read-only transactions count too).
    pub commits: i64,
    /// Deadlocks detected (`deadlocks`), each of which cost a transaction PostgreSQL's
    /// `deadlock_timeout` before it was cancelled.
    pub deadlocks: i64,
}

/// PostgreSQL's counts of this database (`pg_stat_database`). A backend reports its counts
/// when it goes idle at most once a second, and at the latest when it exits: read this after
/// the services have stopped.
pub async fn pg_counts(pool: &PgPool) -> anyhow::Result<PgCounts> {
    // This connection's own counts would otherwise lag by up to a second as well.
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(pool)
        .await
        .context("pg_stat_force_next_flush (PostgreSQL 15 or later)")?;
    let (commits, deadlocks): (i64, i64) = sqlx::query_as(
        "SELECT xact_commit, deadlocks FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(pool)
    .await
    .context("reading pg_stat_database")?;
    Ok(PgCounts { commits, deadlocks })
}

/// Group statements that failed and ran again one action at a time, as the workers logged
/// them ([`checkout_workers::calls::FELL_BACK`]) in the log files of `log_dir` so far. The
/// services append to their files across restarts: a run's count is a difference.
pub fn fallbacks_logged(log_dir: &Path) -> anyhow::Result<u64> {
    let mut count = 0;
    for entry in std::fs::read_dir(log_dir).with_context(|| log_dir.display().to_string())? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "log") {
            continue;
        }
        let bytes = std::fs::read(&path).with_context(|| path.display().to_string())?;
        count += String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|line| line.contains(checkout_workers::calls::FELL_BACK))
            .count() as u64;
    }
    Ok(count)
}

/// Backends of this database other than `pool`'s own (one connection).
pub async fn other_backends(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_one(pool)
    .await?)
}

/// Whether some process waits on `durable` (a pull request is pending): it is consuming.
pub async fn waiting_pulls(nats: &async_nats::Client, durable: &str) -> bool {
    // Only the skeleton asks, and its consumers' streams follow from their names.
    let stream = match durable {
        "skeleton-requests" => "SKELETON_REQUESTS",
        "skeleton-events" => "SKELETON_EVENTS",
        _ => "SKELETON_COMMANDS",
    };
    let subject = format!("$JS.API.CONSUMER.INFO.{stream}.{durable}");
    match request(nats, subject).await {
        Ok(info) => info["num_waiting"].as_u64().unwrap_or(0) > 0,
        Err(_) => false,
    }
}

/// The database's size in bytes, for the soak (the saga log grows with every saga until the
/// retention pruner deletes ended ones).
pub async fn database_bytes(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT pg_database_size(current_database())")
            .fetch_one(pool)
            .await?,
    )
}

/// Rows in the saga table (an estimate from the planner's statistics would lag the pruner;
/// a count over a table kept small by the retention is cheap).
pub async fn saga_rows(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM saga.sagas")
        .fetch_one(pool)
        .await?)
}

/// The last sequence number of every stream: messages ever stored, including those a
/// work-queue stream has since removed.
pub async fn stream_sequences(nats: &async_nats::Client) -> anyhow::Result<BTreeMap<String, u64>> {
    // Raw API requests rather than async-nats' typed ones: its account and stream structs
    // expect fields nats-server 2.9 (Debian's) does not send.
    let names = request(nats, "$JS.API.STREAM.NAMES".into()).await?;
    let mut sequences = BTreeMap::new();
    for name in names["streams"].as_array().into_iter().flatten() {
        let Some(name) = name.as_str() else { continue };
        let info = request(nats, format!("$JS.API.STREAM.INFO.{name}")).await?;
        let last = info["state"]["last_seq"].as_u64().unwrap_or(0);
        sequences.insert(name.to_owned(), last);
    }
    Ok(sequences)
}

async fn request(nats: &async_nats::Client, subject: String) -> anyhow::Result<serde_json::Value> {
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        nats.request(subject.clone(), Bytes::new()),
    )
    .await
    .with_context(|| format!("{subject}: no answer within 5 s"))?
    .with_context(|| subject.clone())?;
    let body: serde_json::Value =
        serde_json::from_slice(&reply.payload).with_context(|| format!("{subject}: not JSON"))?;
    if let Some(error) = body.get("error") {
        anyhow::bail!("{subject}: {error}");
    }
    Ok(body)
}

/// Messages stored per stream between two readings (streams created meanwhile count from 0).
pub fn stored_between(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(name, last)| {
            let first = before.get(name).copied().unwrap_or(0);
            (name.clone(), last.saturating_sub(first))
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_messages_are_sequence_differences_and_new_streams_count_from_zero() {
        let before = BTreeMap::from([("A".to_owned(), 10), ("B".to_owned(), 5)]);
        let after = BTreeMap::from([
            ("A".to_owned(), 25),
            ("B".to_owned(), 5),
            ("C".to_owned(), 3),
        ]);
        let stored = stored_between(&before, &after);
        assert_eq!(
            stored,
            BTreeMap::from([("A".to_owned(), 15), ("C".to_owned(), 3)])
        );
    }

    #[test]
    fn fallbacks_are_the_log_lines_that_say_so_in_every_service_log() {
        let dir = std::env::temp_dir().join(format!("probe-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let line = |message: &str| {
            format!("{{\"level\":\"WARN\",\"fields\":{{\"message\":\"{message}\"}}}}\n")
        };
        let fell_back = line(checkout_workers::calls::FELL_BACK);
        std::fs::write(
            dir.join("inventory-1.log"),
            format!("{fell_back}{}{fell_back}", line("consuming")),
        )
        .unwrap();
        std::fs::write(dir.join("inventory-2.log"), &fell_back).unwrap();
        std::fs::write(dir.join("notes.txt"), &fell_back).unwrap();
        let counted = fallbacks_logged(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(counted, 3);
    }
}
