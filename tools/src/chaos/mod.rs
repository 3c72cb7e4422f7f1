//! `checkout-tools chaos`: a private stack under a load of checkouts while it is hurt at moments
//! chosen from a seed (`--faults`: processes SIGKILLed, the database killed and one worker's
//! table made unusable, connections cut and slowed down; on a cluster, `--nats-nodes 3`, nodes
//! killed and cut off from the others); then, once quiet, an audit of every invariant. Exits non-zero when one fails, or when a kind of fault asked for was never
//! injected (the first round takes one of each, see `schedule.rs`).
//!
//! ```text
//!  publisher ──checkouts, paced over --duration──▶ private stack ◀── injector (faults, restarts)
//!  sampler   ──ended sagas every 100 ms──▶ hold-up after each fault
//!  audit     ──saga rows, stock, ledger, orders, spans──▶ table / JSON, exit code
//! ```

pub mod audit;
mod broker_report;
mod commands;
mod faults;
mod inject;
mod outage;
pub mod report;
mod sampler;
mod schedule;
mod traces;

use crate::stack::{PrivateStack, StackOptions};
use checkout_cli::client::Client;
use checkout_cli::load::{Mix, checkout};
use checkout_shared::streams::Topology;
use clap::Args;
use faults::FaultKind;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::StdRng;
use report::ChaosReport;
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};
use uuid::Uuid;

/// Options of `checkout-tools chaos`.
#[derive(Debug, Args)]
pub struct ChaosArgs {
    /// Checkouts to run.
    #[arg(long, default_value_t = 500)]
    count: usize,
    /// Seconds over which the checkouts are published (faults happen meanwhile).
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Mean seconds between two faults.
    #[arg(long, alias = "every", default_value_t = 2.5)]
    kill_every: f64,
    /// Faults to inject, comma-separated: worker, orchestrator, broker, database, network,
    /// partition (a cluster node cut off from the others; only with --nats-nodes above 1), or
    /// all (every kind the stack can take).
    #[arg(long, default_value = "all")]
    faults: String,
    /// nats-server processes: 1, or a JetStream cluster on loopback (3: streams and consumers
    /// at 3 replicas, the services given every node's URL); `broker` then kills one node (the
    /// one leading the most streams and consumers) and restarts it on its store.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    nats_nodes: u8,
    /// Orchestrator processes sharing the work.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=4))]
    orchestrators: u8,
    /// Seed of the failure mix and of the fault schedule.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Instances of each worker kind.
    #[arg(long, default_value_t = 2)]
    workers_per_kind: usize,
    /// Seconds to wait for the system to go quiet after the load (and the table outage).
    #[arg(long, default_value_t = 240)]
    settle_secs: u64,
    /// Keep the services' logs (and a shared-server database) for inspection.
    #[arg(long)]
    keep: bool,
    /// End with one JSON object on the last line.
    #[arg(long)]
    json: bool,
}

/// A checkout the runner published: its amount (what a completed saga must have been charged)
/// and when (where its wait starts).
struct Sent {
    amount_cents: i64,
    at: SystemTime,
}

/// `checkout-tools chaos`.
pub async fn run(args: ChaosArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let kinds =
        faults::parse_faults(&args.faults, args.nats_nodes > 1).map_err(anyhow::Error::msg)?;
    let say = |line: String| {
        if args.json {
            eprintln!("{line}")
        } else {
            println!("{line}")
        }
    };
    let options = StackOptions {
        nats_nodes: usize::from(args.nats_nodes),
        orchestrators: usize::from(args.orchestrators),
        workers_per_kind: args.workers_per_kind,
        seed_stock: "SKU-MUG=1000000,SKU-TEE=1000000,SKU-CAP=1000000,SKU-RARE=40".into(),
        env: vec![
            ("STEP_TIMEOUT_SECS".into(), "2".into()),
            ("MAX_STEP_TIMEOUT_SECS".into(), "8".into()),
            ("STEP_MAX_ATTEMPTS".into(), "10".into()),
        ],
        // Always a cluster of its own: the runner may kill it, and must not load the shared one.
        private_postgres: true,
        proxies: kinds.contains(&FaultKind::Network),
    };
    say(match (args.nats_nodes, args.orchestrators) {
        (1, 1) => {
            "chaos: starting a private nats-server, PostgreSQL, OTLP receiver and services ..."
                .into()
        }
        (nodes, orchestrators) => format!(
            "chaos: starting {}, PostgreSQL, OTLP receiver and services ({orchestrators} \
             orchestrators, {} workers per kind) ...",
            if nodes == 1 {
                "a private nats-server".to_owned()
            } else {
                format!("a {nodes}-node nats-server cluster")
            },
            args.workers_per_kind
        ),
    });
    let stack = PrivateStack::start(&options).await?;
    say(format!("chaos: logs in {}", stack.log_dir.display()));
    let telemetry = checkout_cli::common::client_telemetry(stack.receiver.endpoint())?;
    let initial_stock = checkout_workers::inventory::stock(&stack.pool).await?;
    let client = Client::connect(&stack.nats.admin_url(), telemetry.flusher()).await?;
    let versions: Vec<String> = stack
        .nats
        .nodes()
        .iter()
        .map(|n| {
            let v = checkout_harness::nats::version_of(n.binary());
            v.map_or_else(|| "unknown".into(), |(a, b, c)| format!("{a}.{b}.{c}"))
        })
        .collect();
    let broker_version = versions.first().cloned().unwrap_or_default();
    let sync_always = stack.nats.nodes().iter().all(|n| n.syncs_always());
    let pool = stack.pool.clone();

    let sampler = sampler::Sampler::start(pool.clone());
    let publishing = Arc::new(AtomicBool::new(true));
    let plan = inject::Plan {
        every: Duration::from_secs_f64(args.kill_every),
        duration: Duration::try_from_secs_f64(args.duration)
            .map_err(|err| anyhow::anyhow!("--duration {}: {err}", args.duration))?,
        seed: args.seed,
        kinds: kinds.clone(),
        outage: outage_length()?,
    };
    let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
    say(format!(
        "chaos: publishing {} checkouts over {:.0} s; faults ({}) every ~{:.1} s{}",
        args.count,
        args.duration,
        names.join(","),
        args.kill_every,
        if kinds.contains(&FaultKind::Database) {
            format!("; a table unusable for {:.0} s", plan.outage.as_secs_f64())
        } else {
            String::new()
        }
    ));
    let injector = tokio::spawn(inject::run(stack, plan, publishing.clone()));
    let (published, publish_failures) = publish(&client, &args).await;
    publishing.store(false, Ordering::SeqCst);
    let (mut stack, faults, outage) = injector.await?;
    say(format!(
        "chaos: {} faults; waiting for the system to go quiet ...",
        faults.len()
    ));
    audit::settle(
        &pool,
        published.len(),
        Duration::from_secs(args.settle_secs),
    )
    .await;
    let samples = sampler.stop().await;
    say("chaos: auditing ...".into());
    let mut report = ChaosReport {
        fault_kinds: names.iter().map(|n| (*n).to_owned()).collect(),
        published: published.len(),
        publish_failures,
        outage,
        ..ChaosReport::default()
    };
    let amounts = published
        .iter()
        .map(|(id, s)| (*id, s.amount_cents))
        .collect();
    audit::audit(&pool, &mut report, &amounts, &initial_stock).await?;
    let sent_at = published.iter().map(|(id, s)| (*id, s.at)).collect();
    report.saga_waits = sampler::saga_waits(&pool, &sent_at).await?;
    traces::wait_for_spans(&pool, &stack.receiver).await?;
    report.traces = traces::audit(&pool, &stack.receiver).await?;
    report.incomplete_traces = report.traces.incomplete;
    let spans = stack.receiver.spans();
    report.spans = spans.len();
    report.redelivered_process_spans = spans
        .iter()
        .filter(|s| s.attr("messaging.nats.delivery_count").is_some())
        .count();
    report.account_faults(&kinds, &faults);
    report.kills_by_kind = faults::kills_by_process(&faults);
    report.kills = report.kills_by_kind.values().sum();
    report.broker_restarts = report.kills_by_kind.get("nats").copied().unwrap_or(0);
    report.broker = report::BrokerReport::of(
        &faults,
        usize::from(args.nats_nodes),
        usize::from(args.orchestrators),
        broker_version,
        sync_always,
    );
    (report.max_recovery_ms, report.unrecovered_faults) =
        sampler::recovery(&faults, &samples.points, report.sagas);
    report.sampler_errors = samples.errors;
    report.sampler_failure = samples.failure;
    for (name, code) in stack.stop().await {
        if code != Some(0) {
            report.unclean_exits.push(format!("{name}: {code:?}"));
        }
    }
    telemetry.shutdown().await;
    report.elapsed_s = started.elapsed().as_secs_f64();
    report.invariants_ok = report.holds();
    report::print(&report, &faults, &say);
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

/// How long a worker's table stays unusable: longer than the whole delivery budget of a
/// command (the nak delays of the longest-lived worker consumer), by a margin that covers the
/// processing of the deliveries themselves.
fn outage_length() -> anyhow::Result<Duration> {
    let topology = Topology::load()?;
    let mut budget = Duration::ZERO;
    for durable in checkout_shared::steps::worker_kinds() {
        // A consumer that never gives up has no budget to outlast; a minute still breaks it.
        let of = topology.consumer(durable)?.delivery_budget();
        budget = budget.max(of.unwrap_or(Duration::from_secs(50)));
    }
    Ok(budget + Duration::from_secs(10))
}

/// Publishes the checkouts paced over the duration, retrying through broker restarts.
async fn publish(client: &Client, args: &ChaosArgs) -> (HashMap<Uuid, Sent>, usize) {
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
    let mut published = HashMap::with_capacity(args.count);
    let mut failures = 0;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.count {
        tokio::time::sleep_until(begin + pace * u32::try_from(i).unwrap_or(u32::MAX)).await;
        let mut request = checkout(&mut rng, &mix);
        let client = client.clone();
        let progress = progress.clone();
        // Publishes overlap so that a broker outage delays the schedule, not the pace.
        tasks.spawn(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
            // The wait starts at the first attempt: a broker outage is part of it.
            let at = SystemTime::now();
            while tokio::time::Instant::now() < deadline {
                // Priced here (the catalog's prices) so that the amount recorded is the one
                // published; `publish` leaves a priced request as it is.
                if client.price(&mut request).await.is_ok()
                    && client.publish(&request).await.is_ok()
                {
                    progress.inc(1);
                    let sent = Sent {
                        amount_cents: request.amount_cents,
                        at,
                    };
                    return Some((request.checkout_id, sent));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            None
        });
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Some((id, sent))) => {
                published.insert(id, sent);
            }
            _ => failures += 1,
        }
    }
    progress.finish_and_clear();
    (published, failures)
}
