//! `NATS_URL` as a list of nodes: a service and a client given a list with a malformed entry
//! stop at once and name it, instead of the client library's bare "invalid port number"; a
//! list whose first node is down connects to the next.

use checkout_harness::{NatsServer, TestDb, free_port};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a process may take to stop on a bad list (it migrates its schema first).
const BOUND: Duration = Duration::from_secs(60);

/// Runs `checkout args` with `envs`, killed if it outlives [`BOUND`]; its output.
fn run_bounded(args: &[&str], envs: &[(&str, String)]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_checkout"))
        .args(args)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .env("OTEL_TRACES_EXPORTER", "none")
        .env("OTEL_METRICS_EXPORTER", "none")
        .env("OTEL_LOGS_EXPORTER", "none")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("checkout ran");
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > BOUND {
            child.kill().expect("kill");
            panic!("checkout {args:?} still ran after {BOUND:?} with a bad NATS_URL");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().expect("output")
}

const BAD_LIST: &str = "nats://127.0.0.1:4222,nats://127.0.0.1:42x2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_entry_stops_a_service_and_a_client_with_its_position() {
    let db = TestDb::create().await.expect("database");
    let envs = [
        ("NATS_URL", BAD_LIST.to_owned()),
        ("DATABASE_URL", db.url()),
    ];
    let watch = ["watch", "00000000-0000-0000-0000-000000000000"];
    for args in [&["worker", "payment"][..], &["orchestrator"], &watch] {
        let output = run_bounded(args, &envs);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "checkout {args:?} succeeded");
        assert!(
            stderr.contains("entry 2 (\"nats://127.0.0.1:42x2\")"),
            "checkout {args:?} did not name the bad entry:\n{stderr}"
        );
    }
    db.drop_db().await.expect("drop the database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_whose_first_node_is_down_connects_to_the_next() {
    let nats = NatsServer::start_async().await.expect("nats-server");
    let down = format!("nats://127.0.0.1:{}", free_port());
    // With the administrator's credentials in the URL, which `connect` logs in with (plain
    // async-nats would ignore them, and the broker refuse the connection).
    let list = format!("{down},{}", nats.admin_url());
    let client = checkout_shared::connect::connect(&list, "test", false).await;
    let client = client.expect("connected through the second node");
    assert_eq!(
        client.server_info().port,
        nats.port(),
        "connected to the wrong node"
    );
}
