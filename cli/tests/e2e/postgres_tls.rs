//! PostgreSQL over TLS, verified: a private cluster (`initdb`) with `ssl=on`, a certificate
//! from a throw-away CA (`scripts/make-certs`) and every plain TCP connection refused; every
//! service connects with `sslmode=verify-full&sslrootcert=<the CA>` and a checkout completes.
//! A client that trusts another CA is refused, and its error names the certificate, not a
//! password (nor shows the one in its URL).
//!
//! ```text
//!  services ──TLS, server certificate verified against ca.pem, host 127.0.0.1──▶ PostgreSQL
//!  sslmode=disable ──────────────────────────────────────────────────────────▶ refused
//!  sslrootcert=<another CA> ─────────────────────────────────────────────────▶ refused
//! ```

use crate::support::receiver;
use crate::tls::Certificates;
use checkout_cli::common::{pulling, wait_until};
use checkout_cli::databases::one_database_env;
use checkout_harness::{NatsServer, PgCluster, Service};
use checkout_shared::streams::EVENTS_CONSUMER;
use sqlx::{Connection as _, PgConnection};
use std::path::PathBuf;
use std::time::Duration;

/// A password in the URL that the server never asks for (it trusts TLS connections): it must
/// not show up in any error.
const UNUSED_PASSWORD: &str = "pw-never-printed-3141";

/// `url` verified against the CA at `ca`.
fn verified(url: &str, ca: &str) -> String {
    format!("{url}?sslmode=verify-full&sslrootcert={ca}")
}

/// The environment of a service (or a command) whose every schema is at `database_url`,
/// connected to the broker as `identity`.
fn env(nats: &NatsServer, database_url: &str, name: &str, identity: &str) -> Vec<(String, String)> {
    let mut env = one_database_env(database_url);
    env.extend(nats.service_env(identity).expect("a shipped identity"));
    env.extend([
        ("NATS_URL".to_owned(), nats.url()),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
            receiver().endpoint(),
        ),
        ("OTEL_SERVICE_NAME".to_owned(), name.to_owned()),
        ("LOG_FORMAT".to_owned(), "json".to_owned()),
        ("SEED_STOCK".to_owned(), "SKU-MUG=1000@2100".to_owned()),
        ("TRACE_UI".to_owned(), "none".to_owned()),
    ]);
    env
}

/// Runs `checkout args`; returns (success, stdout and stderr).
async fn checkout(env: &[(String, String)], args: &[&str]) -> (bool, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_checkout"));
    command
        .args(args)
        .envs(env.iter().cloned())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(90), command.output())
        .await
        .expect("checkout finished within 90 s")
        .expect("checkout ran");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("checkout {args:?}: {}\n{text}", output.status);
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_reach_postgres_over_verified_tls_and_a_client_trusting_another_ca_is_refused() {
    let certs = Certificates::make();
    let cluster = PgCluster::start_tls(&certs.postgres()).await.unwrap();
    let admin = verified(&cluster.url("postgres"), &certs.ca());
    let mut conn = PgConnection::connect(&admin).await.unwrap();
    sqlx::raw_sql("CREATE DATABASE checkout")
        .execute(&mut conn)
        .await
        .unwrap();
    let plain = format!("{}?sslmode=disable", cluster.url("checkout"));
    let refused = PgConnection::connect(&plain).await.map(|_| ()).unwrap_err();
    assert!(
        refused.to_string().contains("no encryption"),
        "a plain connection is refused: {refused}"
    );

    let url = verified(&cluster.url("checkout"), &certs.ca());
    let nats = NatsServer::start_async().await.unwrap();
    crate::identities::provision(&nats, &[]).await;
    let js = async_nats::jetstream::new(nats.admin_client().await.unwrap());
    let logs = tempfile::tempdir().unwrap();
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_checkout"));
    let mut services = Vec::new();
    for (name, args) in checkout_shared::steps::worker_kinds()
        .map(|kind| (kind, vec!["worker", kind]))
        .chain([("orchestrator", vec!["orchestrator"])])
    {
        let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        let env = env(&nats, &url, name, name);
        services.push(Service::spawn(name, &exe, &args, &env, logs.path()).unwrap());
    }
    let service_logs = |services: &[Service]| -> String {
        services
            .iter()
            .map(|s| std::fs::read_to_string(s.log_path()).unwrap_or_default())
            .collect()
    };
    for durable in checkout_shared::steps::worker_kinds().chain([EVENTS_CONSUMER]) {
        let up = wait_until(Duration::from_secs(60), || pulling(&js, durable)).await;
        assert!(
            up,
            "{durable} is not consuming:\n{}",
            service_logs(&services)
        );
    }
    let client = env(&nats, &url, "client", "client");
    let (_, out) = checkout(&client, &["publish", "--item", "SKU-MUG:1", "--wait"]).await;
    assert!(out.contains("outcome: completed"), "{out}");

    // Every service's connection is TLS (a plain one could not have got in anyway).
    let connections: Vec<(String, bool)> = sqlx::query_as(
        "SELECT a.application_name, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
         WHERE a.datname = 'checkout' AND a.backend_type = 'client backend'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(connections.len() >= 5, "{connections:?}");
    assert!(connections.iter().all(|(_, ssl)| *ssl), "{connections:?}");

    // Another CA: the server's certificate is not trusted, and the error says so.
    let stranger = Certificates::make();
    let with_password = cluster
        .url("checkout")
        .replace("postgres@", &format!("postgres:{UNUSED_PASSWORD}@"));
    let distrusting = verified(&with_password, &stranger.ca());
    let (ok, out) = checkout(&env(&nats, &distrusting, "stuck", "admin"), &["stuck"]).await;
    assert!(!ok, "a client trusting another CA got in: {out}");
    assert!(out.contains("invalid peer certificate"), "{out}");
    assert!(
        !out.contains(UNUSED_PASSWORD),
        "the URL's password printed: {out}"
    );
    assert!(
        !out.to_lowercase().contains("password authentication"),
        "{out}"
    );
    // A service says the same while it waits for its database.
    let args = vec!["orchestrator".to_owned()];
    let env = env(&nats, &distrusting, "distrusting", "orchestrator");
    let mut waiting = Service::spawn("distrusting", &exe, &args, &env, logs.path()).unwrap();
    let log = waiting.log_path().to_owned();
    let said = wait_until(Duration::from_secs(30), || {
        let log = log.clone();
        async move {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("invalid peer certificate"))
        }
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(said, "{text}");
    assert!(!text.contains(UNUSED_PASSWORD), "{text}");
    waiting.kill();

    conn.close().await.unwrap();
    for mut service in services.into_iter().rev() {
        let name = service.name().to_owned();
        let code = tokio::task::spawn_blocking(move || service.terminate(Duration::from_secs(20)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(code, Some(0), "{name} did not exit cleanly on SIGTERM");
    }
}
