//! `checkout chaos`: a private stack under a load of checkouts while processes (workers, the
//! orchestrator, the broker itself) are killed with SIGKILL at moments chosen from a seed;
//! then, once quiet, an audit of every invariant. Exits non-zero when one fails.
//!
//! ```text
//!  publisher ──checkouts, paced over --duration──▶ private stack ◀── killer (SIGKILL, restart)
//!  sampler   ──terminal sagas every 100 ms──▶ recovery time of each kill
//!  audit     ──saga rows, stock, ledger, orders, spans──▶ table / JSON, exit code
//! ```

mod audit;
mod killer;

use crate::client::Client;
use crate::load::{Mix, checkout};
use crate::stack::{PrivateStack, StackOptions};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Options of `checkout chaos`.
#[derive(Debug, Args)]
pub struct ChaosArgs {
    /// Checkouts to run.
    #[arg(long, default_value_t = 500)]
    count: usize,
    /// Seconds over which the checkouts are published (kills happen meanwhile).
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Mean seconds between two kills.
    #[arg(long, default_value_t = 2.5)]
    kill_every: f64,
    /// Seed of the failure mix and of the kill schedule.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Instances of each worker kind.
    #[arg(long, default_value_t = 2)]
    workers_per_kind: usize,
    /// Seconds to wait for the system to go quiet after the load.
    #[arg(long, default_value_t = 240)]
    settle_secs: u64,
    /// Keep the database and the services' logs for inspection.
    #[arg(long)]
    keep: bool,
    /// End with one JSON object on the last line.
    #[arg(long)]
    json: bool,
}

/// The outcome of a chaos run.
#[derive(Debug, Default, Serialize)]
pub struct ChaosReport {
    /// Checkouts acknowledged by JetStream.
    pub published: usize,
    /// Checkouts the runner could not publish at all.
    pub publish_failures: usize,
    /// Sagas the orchestrator started.
    pub sagas: i64,
    /// Ended completed.
    pub completed: i64,
    /// Ended compensated.
    pub compensated: i64,
    /// Ended failed: refused at the first step, nothing to undo (a good end, like the two
    /// above).
    pub failed: i64,
    /// Stuck in compensation.
    pub stuck: i64,
    /// Still running or compensating when the runner gave up waiting.
    pub unfinished: i64,
    /// Published but never started.
    pub lost: i64,
    /// Processes killed with SIGKILL (the broker included).
    pub kills: usize,
    /// Kills of the broker.
    pub broker_restarts: usize,
    /// Kills per kind of process.
    pub kills_by_kind: std::collections::BTreeMap<String, usize>,
    /// Sagas with two charges, reservations or orders, or effects that disagree with their end.
    pub duplicate_effects: i64,
    /// Initial stock = available + held by completed orders, for every SKU.
    pub stock_ok: bool,
    /// Charges − refunds = the total of completed orders.
    pub money_ok: bool,
    /// Sagas whose trace is not one whole tree with its saga span and compensations.
    pub incomplete_traces: usize,
    /// Examples of what was wrong with incomplete traces.
    pub trace_problems: Vec<String>,
    /// Longest time from a kill until sagas completed again.
    pub max_recovery_ms: u64,
    /// Services that did not exit 0 on SIGTERM at the end.
    pub unclean_exits: Vec<String>,
    /// Spans received.
    pub spans: usize,
    /// Process spans of redelivered messages (they carry `messaging.nats.delivery_count`).
    pub redelivered_process_spans: usize,
    /// Wall-clock seconds of the whole run.
    pub elapsed_s: f64,
    /// Every invariant held.
    pub invariants_ok: bool,
}

/// `checkout chaos`.
pub async fn run(args: ChaosArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let say = |line: String| {
        if args.json {
            eprintln!("{line}")
        } else {
            println!("{line}")
        }
    };
    let options = StackOptions {
        workers_per_kind: args.workers_per_kind,
        seed_stock: "SKU-MUG=1000000,SKU-TEE=1000000,SKU-CAP=1000000,SKU-RARE=40".into(),
        env: vec![
            ("STEP_TIMEOUT_SECS".into(), "2".into()),
            ("MAX_STEP_TIMEOUT_SECS".into(), "8".into()),
            ("STEP_MAX_ATTEMPTS".into(), "10".into()),
        ],
    };
    say("chaos: starting a private nats-server, database, OTLP receiver and services ...".into());
    let stack = PrivateStack::start(&options).await?;
    say(format!("chaos: logs in {}", stack.log_dir.display()));
    let telemetry = crate::common::client_telemetry(stack.receiver.endpoint())?;
    let initial_stock = checkout_workers::inventory::stock(&stack.pool).await?;
    let client = Client::connect(&stack.nats.url(), telemetry.flusher()).await?;
    let pool = stack.pool.clone();

    let sampler = audit::Sampler::start(pool.clone());
    let publishing = Arc::new(AtomicBool::new(true));
    let schedule = killer::Schedule {
        every: Duration::from_secs_f64(args.kill_every),
        seed: args.seed,
    };
    let killer = tokio::spawn(killer::run(stack, schedule, publishing.clone()));
    say(format!(
        "chaos: publishing {} checkouts over {:.0} s, killing every ~{:.1} s",
        args.count, args.duration, args.kill_every
    ));
    let (published, publish_failures) = publish(&client, &args).await;
    publishing.store(false, Ordering::SeqCst);
    let (mut stack, kills) = killer.await?;
    say(format!(
        "chaos: {} kills; waiting for the system to go quiet ...",
        kills.len()
    ));
    audit::settle(
        &pool,
        published.len(),
        Duration::from_secs(args.settle_secs),
    )
    .await?;
    let samples = sampler.stop().await;
    say("chaos: auditing ...".into());
    let mut report = audit::audit(&pool, &stack.receiver, &published, &initial_stock).await?;
    report.published = published.len();
    report.publish_failures = publish_failures;
    report.kills = kills.len();
    report.broker_restarts = kills.iter().filter(|k| k.victim == "nats").count();
    for kill in &kills {
        *report
            .kills_by_kind
            .entry(kill.kind().to_owned())
            .or_default() += 1;
    }
    report.max_recovery_ms = audit::max_recovery_ms(&kills, &samples);
    for (name, code) in stack.stop().await {
        if code != Some(0) {
            report.unclean_exits.push(format!("{name}: {code:?}"));
        }
    }
    telemetry.shutdown().await;
    report.elapsed_s = started.elapsed().as_secs_f64();
    report.invariants_ok = report.lost == 0
        && report.stuck == 0
        && report.unfinished == 0
        && report.publish_failures == 0
        && report.duplicate_effects == 0
        && report.stock_ok
        && report.money_ok
        && report.incomplete_traces == 0
        && report.unclean_exits.is_empty();
    audit::print(&report, &kills, &say);
    stack.cleanup(args.keep || !report.invariants_ok).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(if report.invariants_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Publishes the checkouts paced over the duration, retrying through broker restarts.
async fn publish(client: &Client, args: &ChaosArgs) -> (Vec<Uuid>, usize) {
    let progress = if args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(args.count as u64)
    };
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} checkouts published  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mix = Mix {
        decline_rate: 0.15,
        order_fail_rate: 0.10,
        out_of_stock_rate: 0.05,
        skus: 3,
    };
    let mut rng = StdRng::seed_from_u64(args.seed);
    let pace = Duration::from_secs_f64(args.duration / args.count.max(1) as f64);
    let begin = tokio::time::Instant::now();
    let mut published = Vec::with_capacity(args.count);
    let mut failures = 0;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.count {
        tokio::time::sleep_until(begin + pace * u32::try_from(i).unwrap_or(u32::MAX)).await;
        let request = checkout(&mut rng, &mix);
        let client = client.clone();
        let progress = progress.clone();
        // Publishes overlap so that a broker outage delays the schedule, not the pace.
        tasks.spawn(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
            while tokio::time::Instant::now() < deadline {
                if client.publish(&request).await.is_ok() {
                    progress.inc(1);
                    return Some(request.checkout_id);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            None
        });
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Some(id)) => published.push(id),
            _ => failures += 1,
        }
    }
    progress.finish_and_clear();
    (published, failures)
}
