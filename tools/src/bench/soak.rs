//! `checkout-tools bench --soak N`: N checkouts on one set of services, with throughput, latency
//! and memory reported for every tenth of them, to show whether anything grows without bound.
//!
//! The services run with a short retention ([`RETENTION`]), so that the pruners work during
//! the soak: the saga table's row count and the database's size per tenth then show whether
//! pruning keeps up (flat) or not (growing with the sagas).

use super::drive::{self, Ended, Outcome};
use super::procstat::Snapshot;
use super::report::Latency;
use super::run::{self, Bench, Checkouts, Plan, System};
use serde::Serialize;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;
use tokio::time::Instant;

/// The retention the soak gives the services: short enough that sagas ended in the first
/// tenths are pruned in the later ones, long enough that no command of a saga in flight can
/// outlive its processed-message record.
pub const RETENTION: Duration = Duration::from_secs(30);
/// The pause between pruning passes during a soak.
pub const RETENTION_INTERVAL: Duration = Duration::from_secs(5);

/// One tenth of a soak.
#[derive(Debug, Clone, Serialize)]
pub struct Slice {
    /// 1 to 10.
    pub slice: usize,
    /// Sagas ended by the end of the slice.
    pub sagas_so_far: u64,
    /// Sagas ended in the slice.
    pub sagas: usize,
    /// Of which failed.
    pub failed: usize,
    /// Sagas per second over the slice.
    pub throughput_per_s: f64,
    /// Latency of the slice's sagas.
    #[serde(flatten)]
    pub latency: Latency,
    /// Resident memory of each process at the end of the slice, MiB (PostgreSQL: the sum
    /// of its backends' private memory).
    pub memory_mib: BTreeMap<String, f64>,
    /// The database's size at the end of the slice, MiB.
    pub database_mib: f64,
    /// Rows in the saga table at the end of the slice (the pruner deletes ended ones past
    /// the retention).
    pub saga_rows: i64,
}

/// Runs the soak and prints a row per tenth (and the JSON on the last line).
pub async fn soak(
    bench: &mut Bench,
    plan: &Plan,
    sagas: &Checkouts,
    count: u64,
    concurrency: usize,
    rate: f64,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let tracing = sagas.tracing;
    let mut plan = plan.clone();
    plan.services.env.extend([
        ("RETENTION_SECS".to_owned(), RETENTION.as_secs().to_string()),
        (
            "RETENTION_INTERVAL_SECS".to_owned(),
            RETENTION_INTERVAL.as_secs().to_string(),
        ),
    ]);
    run::start(bench, System::Checkout { tracing }, &plan).await?;
    let vacuum = super::vacuum::stand_in_if_off(&bench.pg).await?;
    let bar = indicatif::ProgressBar::new(count);
    let slice_size = count.div_ceil(10).max(1);
    let mut slices: Vec<Slice> = Vec::new();
    let mut current: Vec<Ended> = Vec::new();
    let mut ended = 0u64;
    let mut slice_start = Instant::now();
    let mut error = None;
    println!(
        "soak: {count} checkouts at concurrency {concurrency}, tracing {}, rate {}, \
         retention {} s (pruned every {} s)",
        if tracing { "on" } else { "off" },
        if rate > 0.0 {
            format!("{rate}/s")
        } else {
            "unpaced".to_owned()
        },
        RETENTION.as_secs(),
        RETENTION_INTERVAL.as_secs()
    );
    if vacuum.is_some() {
        println!(
            "soak: autovacuum is off on this server; the benchmark vacuums its database every {} s",
            super::vacuum::EVERY.as_secs()
        );
    }
    println!(
        "{:>5} {:>9} {:>8} {:>7} {:>7} {:>6} {:>9}  memory MiB (process: resident)",
        "slice", "sagas", "sagas/s", "p50 ms", "p99 ms", "failed", "saga rows"
    );
    let bench_ref = &*bench;
    drive::counted(sagas, count, concurrency, rate, async |e: Ended| {
        ended += 1;
        bar.inc(1);
        current.push(e);
        if !ended.is_multiple_of(slice_size) && ended != count {
            return;
        }
        match slice(bench_ref, slices.len() + 1, ended, &current, slice_start).await {
            Ok(s) => {
                bar.suspend(|| print_slice(&s));
                slices.push(s);
            }
            Err(err) => error = Some(err),
        }
        current.clear();
        slice_start = Instant::now();
    })
    .await;
    bar.finish_and_clear();
    if let Some(vacuum) = vacuum {
        vacuum.abort();
    }
    bench.stop().await;
    if let Some(err) = error {
        return Err(err);
    }
    let failed: usize = slices.iter().map(|s| s.failed).sum();
    if json {
        println!(
            "{}",
            serde_json::json!({ "soak": count, "concurrency": concurrency, "rate": rate,
                                "tracing": if tracing { "on" } else { "off" },
                                "retention_s": RETENTION.as_secs(), "slices": slices })
        );
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn slice(
    bench: &Bench,
    number: usize,
    so_far: u64,
    ended: &[Ended],
    started: Instant,
) -> anyhow::Result<Slice> {
    let groups = run::groups(bench).await?;
    let now = Snapshot::take(&groups);
    let mut memory = BTreeMap::new();
    for ((name, _), sample) in &now.samples {
        let shared = groups.iter().any(|g| &g.name == name && g.shared_memory);
        let kib = if shared {
            sample.anon_kib
        } else {
            sample.rss_kib
        };
        *memory.entry(name.clone()).or_insert(0.0) += kib as f64 / 1024.0;
    }
    let ok: Vec<&Ended> = ended
        .iter()
        .filter(|e| e.outcome != Outcome::Failed)
        .collect();
    let secs = started
        .elapsed()
        .max(Duration::from_millis(1))
        .as_secs_f64();
    Ok(Slice {
        slice: number,
        sagas_so_far: so_far,
        sagas: ended.len(),
        failed: ended.len() - ok.len(),
        throughput_per_s: ended.len() as f64 / secs,
        latency: Latency::of(ok.into_iter()),
        memory_mib: memory,
        database_mib: super::probe::database_bytes(&bench.pg).await? as f64 / 1024.0 / 1024.0,
        saga_rows: super::probe::saga_rows(&bench.pg).await?,
    })
}

fn print_slice(s: &Slice) {
    let memory: Vec<String> = s
        .memory_mib
        .iter()
        .map(|(name, mib)| format!("{name} {mib:.0}"))
        .collect();
    println!(
        "{:>5} {:>9} {:>8.1} {:>7.1} {:>7.1} {:>6} {:>9}  {}, database {:.0}",
        s.slice,
        s.sagas_so_far,
        s.throughput_per_s,
        s.latency.p50_ms,
        s.latency.p99_ms,
        s.failed,
        s.saga_rows,
        memory.join(", "),
        s.database_mib
    );
}
