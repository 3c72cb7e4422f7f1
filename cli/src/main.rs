//! `checkout`: one binary for the checkout saga.
//!
//! ```text
//!  services:   checkout orchestrator | checkout worker <inventory|payment|order|notification> | checkout gateway
//!  clients:    checkout publish [--wait] | checkout load | checkout watch | checkout show <id>
//!  operators:  checkout stuck | checkout retry <id> | checkout provision
//! ```
//!
//! The demo, the chaos runner and the benchmark are another binary, `checkout-tools` (crate
//! `tools/`): this one, which the image ships, holds no test infrastructure.

use checkout_cli::{load, nats_trace_bridge, ops, publish, services, show, watch};

use clap::{Parser, Subcommand};

/// A durable checkout saga over NATS JetStream, traced end to end with OpenTelemetry.
#[derive(Debug, Parser)]
#[command(name = "checkout", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    access: checkout_cli::common::NatsAccessArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the saga orchestrator.
    Orchestrator(services::OrchestratorArgs),
    /// Run a worker service.
    Worker(services::WorkerArgs),
    /// Run the HTTP gateway (POST /checkout, GET /checkouts/{id}[/events]).
    Gateway(services::GatewayArgs),
    /// Publish one checkout, its cart completed from the catalog; optionally follow it to its
    /// end.
    Publish(publish::PublishArgs),
    /// Run many checkouts and report outcomes, throughput and latency.
    Load(load::LoadArgs),
    /// Follow sagas live: full-screen on a terminal, plain lines otherwise; one saga from its
    /// start to its end.
    Watch(watch::WatchArgs),
    /// Show one saga: its timeline of steps and undos, its trace id and where to open it; or
    /// why the door refused the checkout.
    Show(show::ShowArgs),
    /// List sagas flagged stuck, with the reason: an undo that has gone without success for
    /// longer than the orchestrator allows (it is still being retried).
    Stuck(ops::StuckArgs),
    /// Send a stuck saga's undo again now, instead of at its next retry.
    Retry(ops::RetryArgs),
    /// Turn nats-server's message-trace events (NATS_TRACE_SHARE, nats-server 2.11 or later)
    /// into spans of service `nats-server`, between the producer's and the consumer's.
    NatsTraceBridge(nats_trace_bridge::BridgeArgs),
    /// Create or update every stream and consumer (the administrator's job when identities
    /// are on: the services then only bind to them).
    Provision(ops::ProvisionArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Err(err) = cli.access.install() {
        eprintln!("error: {err:#}");
        return std::process::ExitCode::FAILURE;
    }
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
            Command::Publish(args) => publish::publish(args).await,
            Command::Load(args) => load::run(args).await,
            Command::Watch(args) => watch::watch(args).await,
            Command::Show(args) => show::show(args).await,
            Command::Stuck(args) => ops::stuck(args).await,
            Command::Retry(args) => ops::retry(args).await,
            Command::NatsTraceBridge(args) => nats_trace_bridge::run(args).await,
            Command::Provision(args) => ops::provision(args).await,
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
