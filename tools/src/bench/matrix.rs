//! `checkout-tools bench --matrix`: how the system scales on this machine, in one invocation:
//! one nats-server (streams at one replica, R1) against a three-node cluster (R3), each with
//! one and with two instances of every worker kind.
//!
//! ```text
//!  bench --matrix ─┬─ bench --nats-nodes 1 --workers-per-kind 1 --json ─┐
//!                  ├─ bench --nats-nodes 1 --workers-per-kind 2 --json ─┤ sagas/s, p99,
//!                  ├─ bench --nats-nodes 3 --workers-per-kind 1 --json ─┤ CPU per saga
//!                  └─ bench --nats-nodes 3 --workers-per-kind 2 --json ─┘ (all, and NATS's)
//! ```
//!
//! Each cell is a child `bench` of its own (a private stack, its own span receiver and client
//! telemetry, which a process sets up once), run one after the other, so the cells never
//! share the cores with each other.

use serde::Serialize;
use serde_json::Value;
use std::process::ExitCode;
use std::time::Duration;

/// NATS nodes of the cells: one server, then a cluster of three (streams at three replicas).
pub const NODES: [u8; 2] = [1, 3];
/// Instances of every worker kind in the cells.
pub const WORKERS: [u8; 2] = [1, 2];

/// What the parent passes on to every cell, besides its nodes and workers.
#[derive(Debug, Clone)]
pub struct CellArgs {
    /// `--duration`, `--warmup`, `--concurrency` (the first), `--tracing` (on or off),
    /// `--decline-rate`, `--skus`, `--runtime-threads`, `--timeout` as given.
    pub passed: Vec<String>,
    /// How long the whole cell may take before it is killed.
    pub limit: Duration,
}

impl CellArgs {
    /// The options of `args` every cell runs with.
    pub fn of(args: &super::BenchArgs) -> CellArgs {
        let tracing = if args.modes()[0] { "on" } else { "off" };
        let passed = [
            ("duration", args.duration.to_string()),
            ("warmup", args.warmup.to_string()),
            ("concurrency", args.concurrency[0].to_string()),
            ("tracing", tracing.to_owned()),
            ("decline-rate", args.decline_rate.to_string()),
            ("skus", args.skus.to_string()),
            ("runtime-threads", args.runtime_threads.to_string()),
            ("timeout", args.timeout.to_string()),
            ("flush-before-send", args.flush_before_send.to_string()),
        ];
        let mut passed: Vec<String> = passed
            .into_iter()
            .map(|(name, value)| format!("--{name}={value}"))
            .collect();
        if args.broker_hops {
            passed.push("--broker-hops".to_owned());
        }
        CellArgs {
            passed,
            // Start-up of a cluster, the warm-up, the run and the drain of its sagas, twice
            // over: a cell that takes longer is hung.
            limit: Duration::from_secs_f64(2.0 * (args.warmup + args.duration + args.timeout))
                + Duration::from_secs(300),
        }
    }
}

/// One cell's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// nats-server processes.
    pub nats_nodes: u8,
    /// Stream replicas.
    pub replicas: u8,
    /// Instances of every worker kind.
    pub workers_per_kind: u8,
    /// Sagas ended per second of the window.
    pub sagas_per_s: f64,
    /// Latency percentile 99, ms.
    pub p99_ms: f64,
    /// CPU ms per saga, every process (the services, NATS, PostgreSQL, the client).
    pub cpu_ms_per_saga: f64,
    /// Of which the nats-server processes'.
    pub nats_cpu_ms_per_saga: f64,
    /// nats-server processes measured (the cell's nodes, if it ran what it was asked).
    pub nats_processes: u64,
    /// Sagas that failed.
    pub failed: u64,
}

impl Cell {
    /// Reads a cell from the `--json` line of its bench.
    fn from_report(nodes: u8, workers: u8, report: &Value) -> anyhow::Result<Cell> {
        let run = report["runs"]
            .as_array()
            .and_then(|runs| runs.first())
            .ok_or_else(|| anyhow::anyhow!("the cell's report has no run: {report}"))?;
        let number = |key: &str| {
            run[key]
                .as_f64()
                .ok_or_else(|| anyhow::anyhow!("the cell's run has no {key}"))
        };
        let nats: Vec<&Value> = run["processes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["process"].as_str().is_some_and(|n| n.starts_with("nats")))
            .collect();
        let nats_cpu_ms_per_saga = nats
            .iter()
            .filter_map(|p| p["cpu_ms_per_saga"].as_f64())
            .sum();
        let nats_processes = nats.iter().filter_map(|p| p["processes"].as_u64()).sum();
        Ok(Cell {
            nats_nodes: nodes,
            replicas: nodes,
            workers_per_kind: workers,
            sagas_per_s: number("throughput_per_s")?,
            p99_ms: number("p99_ms")?,
            cpu_ms_per_saga: number("cpu_ms_per_saga")?,
            nats_cpu_ms_per_saga,
            nats_processes,
            failed: run["failed"].as_u64().unwrap_or(0),
        })
    }
}

/// Runs every cell and prints the table (and, with `json`, one JSON line).
pub async fn run(cell_args: &CellArgs, json: bool) -> anyhow::Result<ExitCode> {
    let machine = super::procstat::Machine::read();
    let exe = std::env::current_exe()?;
    let mut cells = Vec::new();
    for nodes in NODES {
        for workers in WORKERS {
            eprintln!("matrix: {nodes} NATS node(s), {workers} worker(s) per kind ...");
            let mut command = tokio::process::Command::new(&exe);
            command
                .arg("bench")
                .args(&cell_args.passed)
                .args(["--skeleton", "false", "--json"])
                .arg(format!("--nats-nodes={nodes}"))
                .arg(format!("--workers-per-kind={workers}"))
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::inherit())
                .kill_on_drop(true);
            let output = tokio::time::timeout(cell_args.limit, command.output())
                .await
                .map_err(|_| {
                    anyhow::anyhow!("the cell took longer than {:?}", cell_args.limit)
                })??;
            let stdout = String::from_utf8_lossy(&output.stdout);
            let last = stdout.lines().last().unwrap_or_default();
            let report: Value = serde_json::from_str(last).map_err(|e| {
                anyhow::anyhow!(
                    "the cell ({}) printed no JSON ({e}):\n{stdout}",
                    output.status
                )
            })?;
            cells.push(Cell::from_report(nodes, workers, &report)?);
        }
    }
    println!(
        "checkout bench --matrix: {}; {} cores ({}), {:.0} GiB, load {:.2} at start",
        cell_args.passed.join(" "),
        machine.cores,
        machine.cpu,
        machine.memory_gib,
        machine.load_at_start
    );
    print!("{}", table(&cells));
    if json {
        println!(
            "{}",
            serde_json::json!({ "machine": machine, "matrix": cells })
        );
    }
    let failed = cells.iter().any(|c| c.failed > 0);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The cells as a table.
pub fn table(cells: &[Cell]) -> String {
    let mut out = String::from(
        "nats nodes  replicas  workers/kind   sagas/s   p99 ms  CPU ms/saga  of which NATS  failed\n",
    );
    for c in cells {
        out.push_str(&format!(
            "{:>10}  {:>8}  {:>12}  {:>8.1}  {:>7.1}  {:>11.2}  {:>13.2}  {:>6}\n",
            c.nats_nodes,
            format!("R{}", c.replicas),
            c.workers_per_kind,
            c.sagas_per_s,
            c.p99_ms,
            c.cpu_ms_per_saga,
            c.nats_cpu_ms_per_saga,
            c.failed
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cell_is_read_from_its_benchs_json_and_nats_cpu_summed_over_nodes() {
        let report = serde_json::json!({"runs": [{
            "throughput_per_s": 120.5, "p99_ms": 80.0, "cpu_ms_per_saga": 9.5, "failed": 0,
            "processes": [
                {"process": "nats-server", "cpu_ms_per_saga": 1.5, "processes": 2},
                {"process": "nats-2", "cpu_ms_per_saga": 1.0, "processes": 1},
                {"process": "orchestrator", "cpu_ms_per_saga": 3.0}
            ]
        }]});
        let cell = Cell::from_report(3, 2, &report).unwrap();
        assert_eq!(
            (cell.sagas_per_s, cell.p99_ms, cell.cpu_ms_per_saga),
            (120.5, 80.0, 9.5)
        );
        assert!((cell.nats_cpu_ms_per_saga - 2.5).abs() < 1e-9);
        assert_eq!(cell.nats_processes, 3);
        assert_eq!((cell.replicas, cell.workers_per_kind), (3, 2));
        assert!(table(&[cell]).contains("R3"));
        assert!(Cell::from_report(1, 1, &serde_json::json!({"runs": []})).is_err());
    }
}
