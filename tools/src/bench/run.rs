//! One measured run: start the system's processes, warm up, restart them, count, drive,
//! count again.
//!
//! The processes are restarted between the warm-up and the run because PostgreSQL counts a
//! backend's commits in `pg_stat_database` only when it reports them (when idle, at most once
//! a second, and possibly ten seconds late), and at the latest when it exits: stopping the
//! services after the warm-up and after the run makes the commit count exact.

use super::drive::{self, Outcome, Sagas, Timed};
use super::procstat::{self, Group, Snapshot};
use super::report::{Counters, RunReport};
use super::{probe, skeleton, spans};
use crate::stack::{PrivateStack, StackOptions};
use checkout_cli::client::Client;
use checkout_cli::load::{Mix, checkout};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// The row of the benchmark's own process: the load's client and the span receiver.
pub const CLIENT: &str = "client+receiver";

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    /// The real services, traced or not.
    Checkout {
        /// Whether every span is exported.
        tracing: bool,
    },
    /// The bare message and commit pattern.
    Skeleton,
}

/// The private stack with the benchmark's own connections to it.
pub struct Bench {
    /// Broker, database, receiver, and the processes of the current run.
    pub stack: PrivateStack,
    /// For stream and consumer info.
    pub nats: async_nats::Client,
    /// For PostgreSQL's counters: one connection, so that every other backend of the
    /// database is a service's.
    pub pg: sqlx::PgPool,
}

impl Bench {
    /// Starts the stack (no service yet) with a receiver that counts spans.
    pub async fn start(options: &crate::stack::StackOptions) -> anyhow::Result<Bench> {
        let receiver = checkout_harness::OtlpReceiver::start_counting().await?;
        // Direct routes between a cluster's nodes: proxies would run in this process.
        let broker = crate::broker::Broker::start_with(options.nats_nodes, false).await?;
        let stack = PrivateStack::start_infra_on(options, receiver, broker).await?;
        let nats =
            checkout_shared::connect::connect(&stack.nats.admin_url(), "bench", false).await?;
        let pg = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&stack.database_url())
            .await?;
        Ok(Bench { stack, nats, pg })
    }

    /// Stops the run's processes and waits (at most 10 s) until their database backends
    /// have exited, which is when the last of their commits is counted.
    pub async fn stop(&mut self) {
        self.stack.stop().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && probe::other_backends(&self.pg).await.unwrap_or(0) > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// How runs are made.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The measured window.
    pub duration: Duration,
    /// The warm-up before it.
    pub warmup: Duration,
    /// The product's services.
    pub services: StackOptions,
    /// Instances of the worker kinds named here, instead of `services.workers_per_kind`.
    pub instances: BTreeMap<String, usize>,
    /// Export spans before each send (with tracing on).
    pub flush_before_send: bool,
    /// How long one saga may take.
    pub timeout: Duration,
    /// Keep the traced runs' spans and report where a saga's time went.
    pub breakdown: bool,
    /// In traced runs, nats-server traces every message of every saga and
    /// `checkout nats-trace-bridge` turns its trace events into spans.
    pub broker_hops: bool,
}

/// The product's checkouts, each its own trace when traced, 10% declined by default.
#[derive(Clone)]
pub struct Checkouts {
    /// The client.
    pub client: Client,
    /// The mix.
    pub mix: Mix,
    /// Seed of the mix.
    pub seed: u64,
    /// How long one checkout may take.
    pub timeout: Duration,
    /// Whether the client starts traces (and the services export spans).
    pub tracing: bool,
}

impl Sagas for Checkouts {
    async fn run(&self, index: u64) -> Outcome {
        // One generator per checkout, so the mix does not depend on the order they start in.
        let mut rng = StdRng::seed_from_u64(self.seed.wrapping_mul(1_000_003).wrapping_add(index));
        let request = checkout(&mut rng, &self.mix);
        let id = request.checkout_id;
        let events = self.client.follow(id);
        if self.client.publish(&request).await.is_err() {
            self.client.forget(id);
            return Outcome::Failed;
        }
        match self.client.wait(id, events, self.timeout, |_| {}).await {
            Some(e) if e.kind == checkout_shared::messages::LifecycleKind::Completed => {
                Outcome::Completed
            }
            // A saga refused at its first step (out of stock) ended by a business decision
            // too; bench carts never run out, so it is counted with the compensated.
            Some(e)
                if e.kind == checkout_shared::messages::LifecycleKind::Compensated
                    || e.kind == checkout_shared::messages::LifecycleKind::Failed =>
            {
                Outcome::Compensated
            }
            _ => Outcome::Failed,
        }
    }
}

/// Starts `system`'s processes and waits until each consumes.
pub async fn start(bench: &mut Bench, system: System, plan: &Plan) -> anyhow::Result<()> {
    let stack = &mut bench.stack;
    match system {
        System::Checkout { tracing } => {
            let mut options = plan.services.clone();
            if !tracing {
                options
                    .env
                    .push(("OTEL_TRACES_EXPORTER".into(), "none".into()));
            } else if !plan.flush_before_send {
                options
                    .env
                    .push(("TRACE_FLUSH_BEFORE_SEND".into(), "false".into()));
            }
            if tracing && plan.broker_hops {
                // Started first: it subscribes long before the services are consuming.
                stack.spawn_trace_bridge(&plan.services.env)?;
                options.env.push(("NATS_TRACE_SHARE".into(), "1".into()));
            }
            stack.spawn_services_with(&options, &plan.instances).await
        }
        System::Skeleton => {
            // The skeleton's processes run as the services do (runtime threads included), but
            // as the administrator: the skeleton is not the product, has no identity of its own
            // in users.conf, and makes its own streams (the URL's credentials, in the
            // environment, never on a command line).
            let mut envs = plan.services.env.clone();
            envs.extend([
                ("NATS_URL".to_owned(), stack.nats.admin_url()),
                ("DATABASE_URL".to_owned(), stack.database_url()),
            ]);
            let command = "bench-skeleton".to_owned();
            stack.spawn_extra(
                "skeleton-orchestrator",
                &[command.clone(), "orchestrator".into()],
                &envs,
            )?;
            for step in 1..=3 {
                let args = [command.clone(), "worker".into(), format!("--step={step}")];
                stack.spawn_extra(&format!("skeleton-worker-{step}"), &args, &envs)?;
            }
            for durable in skeleton::durables() {
                let deadline = Instant::now() + Duration::from_secs(60);
                while !probe::waiting_pulls(&bench.nats, &durable).await {
                    anyhow::ensure!(
                        Instant::now() < deadline,
                        "the skeleton's {durable} did not start; logs in {}",
                        stack.log_dir.display()
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            Ok(())
        }
    }
}

/// Every process of the run now: the broker, PostgreSQL's, the services and this one.
pub async fn groups(bench: &Bench) -> anyhow::Result<Vec<Group>> {
    let stack = &bench.stack;
    let one = |name: &str, pid: u32| Group {
        name: name.to_owned(),
        pids: vec![pid],
        shared_memory: false,
    };
    let mut groups = Vec::new();
    // Every node of a cluster in one row: what the broker costs, replication included.
    let nodes = stack.nats.pids();
    if !nodes.is_empty() {
        groups.push(Group {
            name: "nats-server".to_owned(),
            pids: nodes,
            shared_memory: false,
        });
    }
    groups.extend(probe::pg_groups(&bench.pg).await?);
    for (name, pid) in stack.pids() {
        // `inventory-1` reads better as `inventory` when it is the only one of its kind.
        let single = name
            .strip_suffix("-1")
            .filter(|kind| !stack.pids().iter().any(|(n, _)| n == &format!("{kind}-2")))
            .filter(|kind| checkout_shared::steps::worker_kinds().any(|k| k == *kind));
        groups.push(one(single.unwrap_or(&name), pid));
    }
    groups.push(one(CLIENT, std::process::id()));
    Ok(groups)
}

/// Waits until the spans of the run have arrived: all expected, or nothing new for 3 s
/// (some are missing), at most 30 s.
async fn settle_spans(stack: &PrivateStack, expected: u64) {
    let limit = Instant::now() + Duration::from_secs(30);
    let mut last = (stack.receiver.count(), Instant::now());
    while Instant::now() < limit {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = stack.receiver.count();
        if now != last.0 {
            last = (now, Instant::now());
        }
        let quiet = last.1.elapsed();
        if (now >= expected && quiet >= Duration::from_millis(500))
            || quiet >= Duration::from_secs(3)
        {
            return;
        }
    }
}

/// A progress bar over `secs` seconds (drawn on standard error, and only on a terminal).
pub fn progress(label: String, secs: f64) -> ProgressBar {
    let bar = ProgressBar::new((secs * 10.0).ceil() as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg:32} {bar:40} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(label);
    bar
}

/// Warms `system` up, restarts it, and measures one run of `plan.duration` at
/// `concurrency`.
pub async fn measure<S: Sagas>(
    bench: &mut Bench,
    system: System,
    sagas: &S,
    concurrency: usize,
    plan: &Plan,
) -> anyhow::Result<RunReport> {
    let (name, tracing) = match system {
        System::Checkout { tracing } => ("checkout", tracing),
        System::Skeleton => ("skeleton", false),
    };
    let label = format!(
        "{name} tracing {} @{concurrency}",
        if tracing { "on" } else { "off" }
    );
    start(bench, system, plan).await?;
    let warm = progress(format!("{label}: warm-up"), plan.warmup.as_secs_f64());
    let warmed = drive::timed(sagas, concurrency, plan.warmup, plan.timeout, &warm).await;
    warm.finish_and_clear();
    bench.stop().await;
    anyhow::ensure!(
        warmed.all().any(|e| e.outcome != Outcome::Failed),
        "no saga ended during the warm-up; logs in {}",
        bench.stack.log_dir.display()
    );
    start(bench, system, plan).await?;
    // The warm-up's last spans (the services flush theirs when they stop) land before the count.
    tokio::time::sleep(Duration::from_millis(500)).await;
    bench.stack.receiver.reset_counts();
    let keep = tracing && plan.breakdown;
    bench.stack.receiver.clear();
    bench.stack.receiver.keep_spans(keep);
    let pg = probe::pg_counts(&bench.pg).await?;
    let fallbacks = probe::fallbacks_logged(&bench.stack.log_dir)?;
    let sequences = probe::stream_sequences(&bench.nats).await?;
    let before = Snapshot::take(&groups(bench).await?);

    let bar = progress(label, plan.duration.as_secs_f64());
    let timed: Timed = drive::timed(sagas, concurrency, plan.duration, plan.timeout, &bar).await;
    bar.finish_and_clear();

    let spans_expected = spans::expected_spans(timed.all(), plan.broker_hops);
    if tracing {
        settle_spans(&bench.stack, spans_expected.values().sum()).await;
    }
    let groups = groups(bench).await?;
    let usage = procstat::usage(&groups, &before, &Snapshot::take(&groups));
    let spans = tracing.then(|| bench.stack.receiver.counts());
    let breakdown = keep
        .then(|| super::breakdown::of(&bench.stack.receiver.spans()))
        .flatten();
    bench.stack.receiver.keep_spans(false);
    bench.stack.receiver.clear();
    bench.stop().await;
    let pg_after = probe::pg_counts(&bench.pg).await?;
    let counters = Counters {
        usage,
        commits: pg_after.commits - pg.commits,
        deadlocks: pg_after.deadlocks - pg.deadlocks,
        fallbacks: probe::fallbacks_logged(&bench.stack.log_dir)?.saturating_sub(fallbacks),
        messages: probe::stored_between(&sequences, &probe::stream_sequences(&bench.nats).await?),
        spans,
        spans_expected,
    };
    let mut report = RunReport::build(name, concurrency, tracing, plan.duration, &timed, &counters);
    report.breakdown = breakdown;
    Ok(report)
}
