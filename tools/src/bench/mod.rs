//! `checkout-tools bench`: throughput, latency and cost per saga of the whole system on this
//! machine, against a bare skeleton of its message and commit pattern, on a private stack.
//!
//! ```text
//!  private nats-server (JetStream, file store) ─┐
//!  fresh PostgreSQL database (synchronous commit)├─ skeleton run ─┐ per concurrency:
//!  span receiver that counts (this process)     ─┘  checkout runs ─┴─ warm-up, restart,
//!                                                                   count, drive, count
//! ```
//!
//! Per run: sagas/s, latency percentiles, spans received against spans expected, CPU per
//! saga of every process (from `/proc`), peak memory, PostgreSQL commits and JetStream
//! messages per saga. `--soak N` runs N sagas instead and reports every tenth of them.

pub mod breakdown;
pub mod drive;
pub mod matrix;
pub mod probe;
pub mod procstat;
pub mod report;
pub mod run;
pub mod skeleton;
mod soak;
pub mod spans;
mod vacuum;

use crate::stack::StackOptions;
use checkout_cli::client::Client;
use checkout_cli::load::Mix;
use clap::{Args, ValueEnum};
use run::{Bench, Checkouts, Plan, System};
use std::process::ExitCode;
use std::time::Duration;

/// Which tracing the product runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Tracing {
    /// Every span exported (to the benchmark's receiver, which counts them).
    On,
    /// No span exported, no trace started by the client.
    Off,
    /// One run of each, side by side.
    Both,
}

/// Options of `checkout-tools bench`.
#[derive(Debug, Args)]
#[command(after_help = "\
Each run: start the services, warm up, restart them (so PostgreSQL's commit counts are exact), \
then keep C checkouts in flight for the duration, wait for the last of them and their spans, \
and read CPU (utime+stime of /proc/<pid>/stat, every thread), peak memory (VmHWM), \
PostgreSQL commits and deadlocks (pg_stat_database.xact_commit, .deadlocks), JetStream \
messages (stream last sequences) and the group statements the workers logged as fallen back \
to one action at a time (lines of their logs) before and after. Counts are divided by every \
saga of the run (fallbacks and deadlocks are shown as they are), rates by the window. \
The PostgreSQL server is shared: its backends of the benchmark's database are one row, its \
shared processes (WAL writer, checkpointer, ...) another, which may include other users' work.

Examples:
  checkout-tools bench --duration 20 --concurrency 16,64 --tracing both
  checkout-tools bench --tracing off --skeleton false --instances inventory=3
  checkout-tools bench --soak 1000000 --rate 300 --json
  checkout-tools bench --matrix --duration 15 --warmup 3   # R1/R3 x 1/2 workers per kind")]
pub struct BenchArgs {
    /// Seconds measured per run.
    #[arg(long, default_value_t = 20.0, value_parser = seconds(1.0, 3600.0))]
    duration: f64,
    /// Seconds of warm-up before each run (not measured).
    #[arg(long, default_value_t = 5.0, value_parser = seconds(0.5, 600.0))]
    warmup: f64,
    /// Checkouts in flight at once; a list runs each.
    #[arg(long, value_delimiter = ',', default_value = "64",
          value_parser = clap::value_parser!(u16).range(1..=4096))]
    concurrency: Vec<u16>,
    /// Tracing of the product: on, off, or both side by side.
    #[arg(long, value_enum, default_value_t = Tracing::On)]
    tracing: Tracing,
    /// Fraction of checkouts whose card is declined (their inventory step is compensated).
    #[arg(long, default_value_t = 0.1, value_parser = fraction)]
    decline_rate: f64,
    /// Distinct SKUs bought (3 measures contention on three hot stock rows).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=10_000))]
    skus: u16,
    /// Instances of each worker kind.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=8))]
    workers_per_kind: u8,
    /// Instances of one worker kind instead of --workers-per-kind, as KIND=N
    /// (`inventory=3`); a list sets several kinds.
    #[arg(long, value_delimiter = ',', value_parser = kind_instances)]
    instances: Vec<(String, usize)>,
    /// With tracing on, export spans before each message that names them leaves (off
    /// measures the cost of that crash-safety guarantee).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    flush_before_send: bool,
    /// Keep every span of the traced runs and print where a completed saga's time went: each
    /// hop of its path (to the broker, waiting in the stream, each service's handling and its
    /// database), mean ms per saga. Keeping the spans costs the benchmark's own process.
    #[arg(long)]
    breakdown: bool,
    /// In the traced runs, nats-server traces every message of every saga
    /// (`NATS_TRACE_SHARE=1`) and `checkout nats-trace-bridge` runs beside the services,
    /// turning each trace event into a `nats-server` span: the process table then shows
    /// what the bridge and the broker's tracing cost, and each saga expects a span per hop.
    #[arg(long)]
    broker_hops: bool,
    /// Tokio worker threads of each service and skeleton process (`TOKIO_WORKER_THREADS`);
    /// 0 for Tokio's default, one per core. One suits many processes sharing few cores: on
    /// the 2-core build machine it cut the traced CPU per saga by a fifth (docs/performance.md).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(0..=256))]
    runtime_threads: u16,
    /// Also run the skeleton at each concurrency, and compare.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    skeleton: bool,
    /// Seconds one checkout may take before it counts as failed.
    #[arg(long, default_value_t = 60.0, value_parser = seconds(1.0, 600.0))]
    timeout: f64,
    /// Instead of timed runs: this many checkouts (at most 1,000,000), reported per tenth,
    /// at the first concurrency and tracing mode (both: on).
    #[arg(long, value_parser = clap::value_parser!(u64).range(10..=1_000_000))]
    soak: Option<u64>,
    /// With --soak: checkouts started per second at most (0: as fast as they end).
    #[arg(long, default_value_t = 0.0, value_parser = seconds(0.0, 100_000.0))]
    rate: f64,
    /// End with one JSON object on the last line.
    #[arg(long)]
    json: bool,
    /// nats-server processes: 1, or a JetStream cluster of that many on loopback (every
    /// stream at min(nodes, 3) replicas).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    nats_nodes: u8,
    /// Instead of the runs above: one run of the product (the first concurrency and tracing
    /// mode) per cell of {1 NATS node (R1), a 3-node cluster (R3)} x {1, 2 workers per kind},
    /// each in a bench of its own, then a table of sagas/s, p99 and CPU per saga.
    #[arg(long, conflicts_with_all = ["soak", "nats_nodes", "workers_per_kind", "instances"])]
    matrix: bool,
}

/// The environment that sets a process's Tokio worker threads; none for Tokio's default.
fn runtime_env(threads: u16) -> Vec<(String, String)> {
    (threads > 0)
        .then(|| ("TOKIO_WORKER_THREADS".to_owned(), threads.to_string()))
        .into_iter()
        .collect()
}

fn seconds(min: f64, max: f64) -> impl Fn(&str) -> Result<f64, String> + Clone {
    move |text| {
        let value: f64 = text
            .parse()
            .map_err(|_| format!("{text:?} is not a number"))?;
        if value.is_finite() && (min..=max).contains(&value) {
            Ok(value)
        } else {
            Err(format!("{value} is not between {min} and {max}"))
        }
    }
}

/// `KIND=N`: a worker kind and its instances (1 to 8).
fn kind_instances(text: &str) -> Result<(String, usize), String> {
    let (kind, count) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not KIND=N"))?;
    if !checkout_shared::steps::worker_kinds().any(|k| k == kind) {
        let kinds: Vec<_> = checkout_shared::steps::worker_kinds().collect();
        return Err(format!(
            "{kind:?} is not a worker kind ({})",
            kinds.join(", ")
        ));
    }
    match count.parse::<usize>() {
        Ok(n @ 1..=8) => Ok((kind.to_owned(), n)),
        _ => Err(format!(
            "{count:?} is not a number of instances from 1 to 8"
        )),
    }
}

fn fraction(text: &str) -> Result<f64, String> {
    seconds(0.0, 1.0)(text).map_err(|_| format!("{text:?} is not a fraction between 0 and 1"))
}

impl BenchArgs {
    fn modes(&self) -> Vec<bool> {
        match self.tracing {
            Tracing::On => vec![true],
            Tracing::Off => vec![false],
            Tracing::Both => vec![true, false],
        }
    }

    fn plan(&self) -> Plan {
        let skus = usize::from(self.skus);
        let seed_stock = (0..skus.max(3))
            .map(|i| format!("{}=100000000", checkout_cli::load::sku_name(i, skus)))
            .chain(["SKU-MUG=100000000".to_owned()])
            .collect::<Vec<_>>()
            .join(",");
        Plan {
            duration: Duration::from_secs_f64(self.duration),
            warmup: Duration::from_secs_f64(self.warmup),
            services: StackOptions {
                nats_nodes: usize::from(self.nats_nodes),
                orchestrators: 1,
                workers_per_kind: usize::from(self.workers_per_kind),
                seed_stock,
                env: runtime_env(self.runtime_threads),
                private_postgres: false,
                proxies: false,
            },
            instances: self.instances.iter().cloned().collect(),
            flush_before_send: self.flush_before_send,
            timeout: Duration::from_secs_f64(self.timeout),
            breakdown: self.breakdown,
            broker_hops: self.broker_hops,
        }
    }

    fn checkouts(&self, client: Client, tracing: bool) -> Checkouts {
        Checkouts {
            client: if tracing { client } else { client.untraced() },
            mix: Mix {
                decline_rate: self.decline_rate,
                skus: usize::from(self.skus),
                ..Mix::default()
            },
            seed: 7,
            timeout: Duration::from_secs_f64(self.timeout),
            tracing,
        }
    }
}

/// `checkout-tools bench`.
pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if args.matrix {
        return matrix::run(&matrix::CellArgs::of(&args), args.json).await;
    }
    let machine = procstat::Machine::read();
    let mut bench = Bench::start(&args.plan().services).await?;
    let result = measure_all(&args, &mut bench, &machine).await;
    bench.stop().await;
    let log_dir = bench.stack.log_dir.clone();
    // Keep the database and logs of a failed invocation for a look.
    let cleaned = bench.stack.cleanup(result.is_err()).await;
    if result.is_err() {
        eprintln!("logs kept in {}", log_dir.display());
    }
    let code = result?;
    cleaned?;
    Ok(code)
}

async fn measure_all(
    args: &BenchArgs,
    bench: &mut Bench,
    machine: &procstat::Machine,
) -> anyhow::Result<ExitCode> {
    let telemetry = checkout_cli::common::client_telemetry(bench.stack.receiver.endpoint())?;
    if args.broker_hops {
        // The client's request is a hop too (only traced checkouts carry the mark).
        checkout_shared::broker_trace::set_share(1.0);
    }
    let flusher = if args.flush_before_send {
        telemetry.flusher()
    } else {
        checkout_shared::telemetry::SpanFlusher::disabled()
    };
    let client = Client::connect(&bench.stack.nats.admin_url(), flusher).await?;
    let plan = args.plan();
    skeleton::provision(
        &checkout_shared::connect::jetstream(bench.nats.clone()),
        &bench.pg,
    )
    .await?;
    let result = match args.soak {
        Some(count) => {
            let tracing = args.modes()[0];
            let concurrency = usize::from(args.concurrency[0]);
            let sagas = args.checkouts(client, tracing);
            soak::soak(
                bench,
                &plan,
                &sagas,
                count,
                concurrency,
                args.rate,
                args.json,
            )
            .await
        }
        None => timed_runs(args, bench, &plan, &client, machine).await,
    };
    telemetry.shutdown().await;
    result
}

async fn timed_runs(
    args: &BenchArgs,
    bench: &mut Bench,
    plan: &Plan,
    client: &Client,
    machine: &procstat::Machine,
) -> anyhow::Result<ExitCode> {
    let mut runs = Vec::new();
    let mut skeletons = Vec::new();
    for &concurrency in &args.concurrency {
        let concurrency = usize::from(concurrency);
        let skeleton = if args.skeleton {
            let sagas =
                skeleton::SkeletonSagas::connect(&bench.stack.nats.admin_url(), plan.timeout)
                    .await?;
            let r = run::measure(bench, System::Skeleton, &sagas, concurrency, plan).await?;
            skeletons.push(r.clone());
            Some(r)
        } else {
            None
        };
        for tracing in args.modes() {
            let sagas = args.checkouts(client.clone(), tracing);
            let system = System::Checkout { tracing };
            let mut r = run::measure(bench, system, &sagas, concurrency, plan).await?;
            if let Some(skeleton) = &skeleton {
                r.compare(skeleton);
            }
            runs.push(r);
        }
    }
    let shown: Vec<_> = skeletons.iter().chain(&runs).cloned().collect();
    println!(
        "checkout bench: {} s per run after {} s warm-up, decline rate {}, {} SKUs, \
         {} NATS node(s), {} worker(s) per kind{}, runtime threads per process {}; {} cores \
         ({}), {:.0} GiB, load {:.2} at start",
        args.duration,
        args.warmup,
        args.decline_rate,
        args.skus,
        args.nats_nodes,
        args.workers_per_kind,
        args.instances
            .iter()
            .map(|(kind, n)| format!(" ({kind}: {n})"))
            .collect::<String>(),
        match args.runtime_threads {
            0 => "Tokio's default".to_owned(),
            n => n.to_string(),
        },
        machine.cores,
        machine.cpu,
        machine.memory_gib,
        machine.load_at_start
    );
    print!("{}", report::table(&shown));
    for run in &runs {
        if let Some(breakdown) = &run.breakdown {
            let label = format!("tracing on @{}", run.concurrency);
            print!(
                "{}",
                breakdown::table(&label, breakdown, run.latency.p50_ms)
            );
        }
    }
    let failed = runs.iter().chain(&skeletons).any(|r| r.failed > 0);
    if args.json {
        let json = serde_json::json!({
            "machine": machine,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "decline_rate": args.decline_rate,
            "runs": runs,
            "skeleton_runs": skeletons,
        });
        println!("{json}");
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_name_a_worker_kind_and_a_count() {
        assert_eq!(
            kind_instances("inventory=3"),
            Ok(("inventory".to_owned(), 3))
        );
        assert!(kind_instances("inventory").is_err());
        assert!(kind_instances("orchestrator=2").is_err());
        assert!(kind_instances("payment=0").is_err());
        assert!(kind_instances("payment=9").is_err());
    }
}
