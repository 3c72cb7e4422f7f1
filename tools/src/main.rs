//! `checkout-tools`: the demo, the chaos runner and the benchmark, apart from the product.
//!
//! ```text
//!  checkout-tools demo | checkout-tools chaos | checkout-tools bench
//! ```
//!
//! They start the services by running the product binary `checkout`, found next to this one
//! or at `$CHECKOUT_BIN` (`cargo build --release -p checkout-cli` builds it).

use checkout_tools::{bench, chaos, demo};

use clap::{Parser, Subcommand};

/// The checkout saga's demo, chaos runner and benchmark, which start private stacks and break
/// them; the services they run are the product binary `checkout`.
#[derive(Debug, Parser)]
#[command(name = "checkout-tools", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start whatever is missing, run a handful of checkouts, print their traces, stop.
    Demo(demo::DemoArgs),
    /// Break workers, the orchestrator, the broker, the database and the network under load, then
    /// audit every invariant.
    Chaos(chaos::ChaosArgs),
    /// Measure throughput, latency and cost per saga on a private stack, against a skeleton.
    Bench(bench::BenchArgs),
    /// One process of the benchmark's skeleton (started by `checkout-tools bench`).
    #[command(hide = true)]
    BenchSkeleton(bench::skeleton::RoleArgs),
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
            Command::Demo(args) => demo::run(args).await,
            Command::Chaos(args) => chaos::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::BenchSkeleton(args) => bench::skeleton::role(args).await,
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
