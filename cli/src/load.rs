//! `checkout load`: many checkouts at a bounded concurrency, each its own trace; then
//! outcomes, throughput and latency percentiles (publish to last lifecycle event).

use crate::client::Client;
use crate::common::{CLIENT_FILTER, NatsArgs, TelemetryArgs};
use checkout_shared::messages::{CheckoutRequested, LifecycleKind, LineItem};
use clap::Args;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use uuid::Uuid;

/// The failure mix of a load.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct Mix {
    /// Fraction of checkouts paid with the always-declined token.
    #[arg(long, default_value_t = 0.0)]
    pub decline_rate: f64,
    /// Fraction of checkouts whose order is refused.
    #[arg(long, default_value_t = 0.0)]
    pub order_fail_rate: f64,
    /// Fraction of checkouts that ask for more than is in stock.
    #[arg(long, default_value_t = 0.0)]
    pub out_of_stock_rate: f64,
    /// Distinct SKUs the successful checkouts buy from: 3 uses SKU-MUG, SKU-TEE and SKU-CAP
    /// (the demo catalog); more uses SKU-0000, SKU-0001, ... (seed them in the inventory
    /// worker's stock first). Few SKUs measure contention on hot rows.
    #[arg(long, default_value_t = 3)]
    pub skus: usize,
}

/// The name of the `i`-th SKU of a catalog of `n`.
pub fn sku_name(i: usize, n: usize) -> String {
    if n <= 3 {
        ["SKU-MUG", "SKU-TEE", "SKU-CAP"][i % 3].to_owned()
    } else {
        format!("SKU-{i:04}")
    }
}

/// Options of `checkout load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    telemetry: TelemetryArgs,
    /// Checkouts to run.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Checkouts in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    #[command(flatten)]
    mix: Mix,
    /// Seed of the failure mix.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds one checkout may take before it counts as failed.
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
    /// End with one JSON object on the last line.
    #[arg(long)]
    json: bool,
}

/// The figures of a load.
#[derive(Debug, Clone, Serialize, Default)]
pub struct LoadReport {
    /// Checkouts published.
    pub sagas: usize,
    /// Ended completed.
    pub completed: usize,
    /// Ended compensated.
    pub compensated: usize,
    /// Ended failed: refused at the first step (out of stock), with nothing to undo.
    pub refused: usize,
    /// Did not end (stuck, rejected, timed out or not published).
    pub failed: usize,
    /// Wall-clock seconds.
    pub elapsed_s: f64,
    /// Sagas ended per second.
    pub throughput_per_s: f64,
    /// Latency percentiles, publish to last event, in milliseconds.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

/// The `i`-th checkout of a load: the mix decides its fate deterministically from the seed.
pub fn checkout(rng: &mut StdRng, mix: &Mix) -> CheckoutRequested {
    let roll: f64 = rng.random();
    let (customer, token, items) = if roll < mix.decline_rate {
        ("cust-load", "tok_decline", vec![line("SKU-MUG", 1)])
    } else if roll < mix.decline_rate + mix.order_fail_rate {
        ("order-fails-load", "tok_visa", vec![line("SKU-TEE", 1)])
    } else if roll < mix.decline_rate + mix.order_fail_rate + mix.out_of_stock_rate {
        ("cust-load", "tok_visa", vec![line("SKU-RARE", 9_999)])
    } else {
        let n = mix.skus.max(1);
        let sku = sku_name(rng.random_range(0..n), n);
        (
            "cust-load",
            "tok_visa",
            vec![line(&sku, rng.random_range(1..=3))],
        )
    };
    CheckoutRequested {
        checkout_id: Uuid::new_v4(),
        customer_id: customer.to_owned(),
        items,
        payment_token: token.to_owned(),
        // Priced from the catalog when published (`Client::price`).
        amount_cents: 0,
        currency: String::new(),
    }
}

fn line(sku: &str, quantity: i32) -> LineItem {
    LineItem {
        sku: sku.to_owned(),
        quantity,
        unit_price_cents: None,
    }
}

/// Runs `requests` at `concurrency`, returning the figures.
pub async fn drive(
    client: &Client,
    requests: Vec<CheckoutRequested>,
    concurrency: usize,
    timeout: Duration,
    progress: &ProgressBar,
) -> LoadReport {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let sagas = requests.len();
    for request in requests {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let client = client.clone();
        let progress = progress.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let begun = Instant::now();
            let events = client.follow(request.checkout_id);
            if client.publish(&request).await.is_err() {
                client.forget(request.checkout_id);
                progress.inc(1);
                return (None, begun.elapsed());
            }
            let last = client
                .wait(request.checkout_id, events, timeout, |_| {})
                .await;
            progress.inc(1);
            (last.map(|e| e.kind), begun.elapsed())
        });
    }
    let mut report = LoadReport {
        sagas,
        ..LoadReport::default()
    };
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).ok();
    while let Some(joined) = tasks.join_next().await {
        let Ok((kind, took)) = joined else {
            report.failed += 1;
            continue;
        };
        match kind {
            Some(LifecycleKind::Completed) => report.completed += 1,
            Some(LifecycleKind::Compensated) => report.compensated += 1,
            Some(LifecycleKind::Failed) => report.refused += 1,
            _ => report.failed += 1,
        }
        if let Some(h) = histogram.as_mut() {
            let _ = h.record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1));
        }
    }
    report.elapsed_s = started.elapsed().as_secs_f64();
    report.throughput_per_s = (report.completed + report.compensated + report.refused) as f64
        / report.elapsed_s.max(1e-9);
    if let Some(h) = histogram {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        report.p50_ms = ms(0.50);
        report.p90_ms = ms(0.90);
        report.p99_ms = ms(0.99);
        report.max_ms = h.max() as f64 / 1000.0;
    }
    report
}

/// `checkout load`.
pub async fn run(args: LoadArgs) -> anyhow::Result<ExitCode> {
    let telemetry = args.telemetry.init("checkout-client", CLIENT_FILTER)?;
    let client = Client::connect(&args.nats.nats_url, telemetry.flusher()).await?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let requests: Vec<_> = (0..args.count)
        .map(|_| checkout(&mut rng, &args.mix))
        .collect();
    let progress = if args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(args.count as u64)
    };
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} sagas ended  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let timeout = Duration::from_secs(args.timeout_secs);
    let report = drive(&client, requests, args.concurrency, timeout, &progress).await;
    progress.finish_and_clear();
    telemetry.shutdown().await;
    print_report(&report, args.concurrency);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(if report.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Prints the figures of a load.
pub fn print_report(r: &LoadReport, concurrency: usize) {
    println!("sagas        {:>8}   (concurrency {concurrency})", r.sagas);
    println!("completed    {:>8}", r.completed);
    println!("compensated  {:>8}", r.compensated);
    println!("failed       {:>8}  (refused at the first step)", r.refused);
    println!(
        "failed       {:>8}   (stuck, timed out or not published)",
        r.failed
    );
    println!("elapsed      {:>8.2} s", r.elapsed_s);
    println!("throughput   {:>8.1} sagas/s", r.throughput_per_s);
    println!(
        "latency ms   p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
        r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms
    );
}
