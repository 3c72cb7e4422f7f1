//! `checkout`: one binary for the checkout saga.
//!
//! ```text
//!  services:   checkout orchestrator | checkout worker <inventory|payment|order> | checkout gateway
//!  clients:    checkout publish [--wait] | checkout load | checkout watch | checkout show <id>
//!  operators:  checkout stuck | checkout retry <id>
//!  the whole:  checkout demo | checkout chaos
//! ```

use checkout_cli::{bench, chaos, client, demo, load, ops, services};

use clap::{Parser, Subcommand};

/// A durable checkout saga over NATS JetStream, traced end to end with OpenTelemetry.
#[derive(Debug, Parser)]
#[command(name = "checkout", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the saga orchestrator.
    Orchestrator(services::OrchestratorArgs),
    /// Run a worker service.
    Worker(services::WorkerArgs),
    /// Run the HTTP gateway (POST /checkout, GET /checkouts/{id}[/events]).
    Gateway(services::GatewayArgs),
    /// Publish one checkout; with --wait, follow it to its end.
    Publish(client::PublishArgs),
    /// Run many checkouts and report outcomes, throughput and latency.
    Load(load::LoadArgs),
    /// Follow saga lifecycle events and rejections as they happen.
    Watch(client::WatchArgs),
    /// Show one saga: its state and its log.
    Show(ops::ShowArgs),
    /// List sagas stuck in compensation, with their reasons.
    Stuck(ops::StuckArgs),
    /// Resume a stuck saga's compensation.
    Retry(ops::RetryArgs),
    /// Start whatever is missing, run a handful of checkouts, print their traces, stop.
    Demo(demo::DemoArgs),
    /// Kill workers, the orchestrator and the broker under load, then audit every invariant.
    Chaos(chaos::ChaosArgs),
    /// Measure throughput and latency on a private stack.
    Bench(bench::BenchArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Orchestrator(args) => services::orchestrator(args).await,
            Command::Worker(args) => services::worker(args).await,
            Command::Gateway(args) => services::gateway(args).await,
            Command::Publish(args) => client::publish(args).await,
            Command::Load(args) => load::run(args).await,
            Command::Watch(args) => client::watch(args).await,
            Command::Show(args) => ops::show(args).await,
            Command::Stuck(args) => ops::stuck(args).await,
            Command::Retry(args) => ops::retry(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Chaos(args) => chaos::run(args).await,
            Command::Bench(args) => bench::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
