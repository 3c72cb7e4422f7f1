//! `checkout bench`: throughput and latency of the whole system on this machine, measured on a
//! private stack (its own broker, database and span receiver), so the figures are repeatable.

use crate::client::Client;
use crate::load::{Mix, checkout, drive};
use crate::stack::{PrivateStack, StackOptions};
use clap::Args;
use indicatif::ProgressBar;
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::process::ExitCode;
use std::time::Duration;

/// Options of `checkout bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Checkouts to run.
    #[arg(long, default_value_t = 5_000)]
    count: usize,
    /// Checkouts in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Distinct SKUs bought (3 measures contention on three hot stock rows).
    #[arg(long, default_value_t = 100)]
    skus: usize,
    /// Instances of each worker kind.
    #[arg(long, default_value_t = 1)]
    workers_per_kind: usize,
    /// Checkouts run first and not measured.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// Export spans before each message leaves (off measures the cost of that guarantee).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    flush_before_send: bool,
    /// Export spans at all (off measures the cost of tracing).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    traces: bool,
    /// End with one JSON object on the last line.
    #[arg(long)]
    json: bool,
}

/// `checkout bench`.
pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let mut env = Vec::new();
    if !args.flush_before_send {
        env.push(("TRACE_FLUSH_BEFORE_SEND".to_owned(), "false".to_owned()));
    }
    if !args.traces {
        env.push(("OTEL_TRACES_EXPORTER".to_owned(), "none".to_owned()));
    }
    let options = StackOptions {
        workers_per_kind: args.workers_per_kind,
        seed_stock: (0..args.skus.max(3))
            .map(|i| format!("{}=100000000", crate::load::sku_name(i, args.skus)))
            .chain([
                "SKU-MUG=100000000".to_owned(),
                "SKU-TEE=100000000".to_owned(),
            ])
            .collect::<Vec<_>>()
            .join(","),
        env,
        private_postgres: false,
        proxies: false,
    };
    let mut stack = PrivateStack::start(&options).await?;
    let telemetry = crate::common::client_telemetry(stack.receiver.endpoint())?;
    let flusher = if args.flush_before_send && args.traces {
        telemetry.flusher()
    } else {
        checkout_shared::telemetry::SpanFlusher::disabled()
    };
    let client = Client::connect(&stack.nats.url(), flusher).await?;
    let mut rng = StdRng::seed_from_u64(7);
    let mix = Mix {
        skus: args.skus,
        ..Mix::default()
    };
    let timeout = Duration::from_secs(120);
    let warmup: Vec<_> = (0..args.warmup).map(|_| checkout(&mut rng, &mix)).collect();
    drive(
        &client,
        warmup,
        args.concurrency,
        timeout,
        &ProgressBar::hidden(),
    )
    .await;
    let requests: Vec<_> = (0..args.count).map(|_| checkout(&mut rng, &mix)).collect();
    let progress = if args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(args.count as u64)
    };
    let report = drive(&client, requests, args.concurrency, timeout, &progress).await;
    progress.finish_and_clear();
    stack.stop().await;
    telemetry.shutdown().await;
    let spans = stack.receiver.spans().len();
    stack.cleanup(false).await?;
    println!(
        "{} checkouts over {} SKUs, concurrency {}, {} worker(s) per kind, traces: {}, \
         flush before send: {}",
        args.count,
        args.skus,
        args.concurrency,
        args.workers_per_kind,
        args.traces,
        args.flush_before_send
    );
    crate::load::print_report(&report, args.concurrency);
    println!("spans received {spans}");
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(if report.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
