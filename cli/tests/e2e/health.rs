//! `--health-listen` (`HEALTH_LISTEN`) of the orchestrator and the workers, against a real
//! broker and a private PostgreSQL cluster that are killed and restarted: `/readyz` says
//! ready only while both answer (naming what does not), `/healthz` while the process runs.

use crate::http::request;
use checkout_cli::common::wait_until;
use checkout_harness::{NatsServer, PgCluster, Service, free_port};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Waits (bounded) until `GET path` answers `status` with a body containing `text`.
async fn until(addr: SocketAddr, path: &str, status: u16, text: &str) -> bool {
    wait_until(Duration::from_secs(60), || async move {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return false;
        }
        let response = request(addr, "GET", path, &[], b"").await;
        response.status == status && String::from_utf8_lossy(&response.body).contains(text)
    })
    .await
}

fn spawn(name: &str, args: &[&str], env: &[(String, String)], logs: &std::path::Path) -> Service {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .cloned()
        .chain([("OTEL_TRACES_EXPORTER".to_owned(), "none".to_owned())])
        .collect();
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_checkout"));
    Service::spawn(name, &exe, &args, &env, logs).expect("spawn")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_broker_and_the_database_and_liveness_the_process() {
    let mut pg = PgCluster::start().await.unwrap();
    let mut nats = NatsServer::start_async().await.unwrap();
    let logs = tempfile::tempdir().unwrap();
    let worker = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let orchestrator = SocketAddr::from(([127, 0, 0, 1], free_port()));
    crate::identities::provision(&nats, &[]).await;
    // Each service as itself, on streams the administrator provisioned.
    let env = |addr: SocketAddr, identity: &str| {
        let mut env = vec![
            ("NATS_URL".to_owned(), nats.url()),
            ("DATABASE_URL".to_owned(), pg.url("postgres")),
            ("HEALTH_LISTEN".to_owned(), addr.to_string()),
        ];
        env.extend(nats.service_env(identity).expect("an identity"));
        env
    };
    let mut services = vec![
        spawn(
            "payment",
            &["worker", "payment"],
            &env(worker, "payment"),
            logs.path(),
        ),
        spawn(
            "orchestrator",
            &["orchestrator"],
            &env(orchestrator, "orchestrator"),
            logs.path(),
        ),
    ];
    let log = |services: &[Service]| -> String {
        services
            .iter()
            .map(|s| std::fs::read_to_string(s.log_path()).unwrap_or_default())
            .collect()
    };
    for addr in [worker, orchestrator] {
        assert!(
            until(addr, "/readyz", 200, "ready").await,
            "{}",
            log(&services)
        );
        assert!(until(addr, "/healthz", 200, "alive").await);
    }

    pg.kill();
    assert!(
        until(worker, "/readyz", 503, "unready: database").await,
        "the database is down"
    );
    assert!(until(worker, "/healthz", 200, "alive").await, "still alive");
    pg.restart().await.unwrap();
    assert!(
        until(worker, "/readyz", 200, "ready").await,
        "the database is back"
    );

    nats.kill();
    assert!(
        until(orchestrator, "/readyz", 503, "unready: broker").await,
        "the broker is down"
    );
    nats.restart_async().await.unwrap();
    assert!(
        until(orchestrator, "/readyz", 200, "ready").await,
        "the broker is back"
    );

    for mut service in services.drain(..) {
        let name = service.name().to_owned();
        let code = tokio::task::spawn_blocking(move || service.terminate(Duration::from_secs(20)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(code, Some(0), "{name} did not exit cleanly on SIGTERM");
    }
    // Stopped with its service: nothing answers any more.
    assert!(tokio::net::TcpStream::connect(worker).await.is_err());
}
