//! Each owner's schema in a database of its own, on two PostgreSQL servers (private clusters
//! made with `initdb`): the whole flow runs, every outcome, through the client and the
//! gateway, and `checkout show`, `stuck` and `retry` read the saga store where it is.
//!
//! Nothing can read across: each database holds its owner's schema and no other, so a query
//! of another owner's table fails; and the shared `DATABASE_URL` points at a database that
//! must stay empty, so a process that fell back to it instead of its own URL is seen.
//!
//! ```text
//!  server A: saga, payment, notification, and the empty "shared" database
//!  server B: inventory, orders, gateway
//! ```

use crate::gateway::{cart, post};
use crate::support::receiver;
use checkout_cli::common::{pulling, wait_until};
use checkout_cli::databases::{GATEWAY_URL_VAR, SAGA_URL_VAR, SHARED_URL_VAR, worker_url_var};
use checkout_harness::{NatsServer, PgCluster, Service};
use checkout_shared::Step;
use checkout_shared::streams::EVENTS_CONSUMER;
use sqlx::PgPool;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Which server holds each owner's database (named after its schema).
const ON_A: [&str; 3] = ["saga", "payment", "notification"];
const ON_B: [&str; 3] = ["inventory", "orders", "gateway"];
/// The database `DATABASE_URL` names: no process may put anything in it.
const SHARED: &str = "shared";

struct Split {
    a: PgCluster,
    b: PgCluster,
    nats: NatsServer,
    services: Vec<Service>,
    logs: tempfile::TempDir,
}

impl Split {
    fn url(&self, owner: &str) -> String {
        if ON_B.contains(&owner) {
            self.b.url(owner)
        } else {
            self.a.url(owner)
        }
    }

    /// The environment of every process: the broker, the empty shared database and each
    /// owner's own URL.
    fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("NATS_URL".to_owned(), self.nats.url()),
            (SHARED_URL_VAR.to_owned(), self.url(SHARED)),
            (SAGA_URL_VAR.to_owned(), self.url("saga")),
            (GATEWAY_URL_VAR.to_owned(), self.url("gateway")),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
                receiver().endpoint(),
            ),
            ("LOG_FORMAT".to_owned(), "json".to_owned()),
            (
                "SEED_STOCK".to_owned(),
                "SKU-MUG=1000@2100,SKU-RARE=3@5000".to_owned(),
            ),
        ];
        for kind in Step::ALL {
            env.push((worker_url_var(*kind).to_owned(), self.url(kind.schema())));
        }
        env
    }

    fn spawn(&mut self, name: &str, args: &[&str]) {
        let mut env = self.env();
        env.push(("OTEL_SERVICE_NAME".to_owned(), name.to_owned()));
        env.extend(self.nats.service_env(name).expect("an identity"));
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        let exe = PathBuf::from(env!("CARGO_BIN_EXE_checkout"));
        let service = Service::spawn(name, &exe, &args, &env, self.logs.path()).expect("spawn");
        self.services.push(service);
    }

    /// Runs `checkout args` with the same environment; returns (success, stdout).
    async fn checkout(&self, args: &[&str]) -> (bool, String) {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_checkout"));
        command
            .args(args)
            .envs(self.env())
            .envs(self.nats.passwords().admin_env())
            .env("TRACE_UI", "none")
            .kill_on_drop(true);
        let output = tokio::time::timeout(Duration::from_secs(90), command.output())
            .await
            .expect("checkout finished within 90 s")
            .expect("checkout ran");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr);
        eprintln!("checkout {args:?}: {}\n{stdout}{stderr}", output.status);
        (output.status.success(), stdout)
    }

    fn logs(&self) -> String {
        self.services
            .iter()
            .map(|s| {
                let text = std::fs::read_to_string(s.log_path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                format!("--- {} ---\n{}\n", s.name(), tail.join("\n"))
            })
            .collect()
    }
}

/// Creates a database per name on `cluster`.
async fn create_databases(cluster: &PgCluster, names: &[&str]) {
    let admin = PgPool::connect(&cluster.url("postgres")).await.unwrap();
    for name in names {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .unwrap();
    }
    admin.close().await;
}

/// The schemas of a database other than PostgreSQL's own and `public`, and how many tables
/// and functions it holds outside PostgreSQL's own schemas.
async fn contents(url: &str) -> (BTreeSet<String>, i64) {
    let pool = PgPool::connect(url).await.unwrap();
    let schemas: Vec<String> = sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' \
         AND nspname NOT IN ('information_schema', 'public')",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let objects: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema') \
              + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                 WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    (schemas.into_iter().collect(), objects)
}

/// A count from one owner's database.
async fn count(url: &str, sql: &str) -> i64 {
    let pool = PgPool::connect(url).await.unwrap();
    let n = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}

/// The saga id `checkout publish` printed.
fn saga_of(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("saga  "))
        .unwrap_or_else(|| panic!("no saga id in {stdout}"))
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_schema_on_its_own_database_across_two_servers_and_nothing_reads_across() {
    let (a, b) = (
        PgCluster::start().await.unwrap(),
        PgCluster::start().await.unwrap(),
    );
    create_databases(&a, &[ON_A.as_slice(), &[SHARED]].concat()).await;
    create_databases(&b, &ON_B).await;
    let mut split = Split {
        a,
        b,
        nats: NatsServer::start_async().await.unwrap(),
        services: vec![],
        logs: tempfile::tempdir().unwrap(),
    };
    let js = async_nats::jetstream::new(split.nats.admin_client().await.unwrap());
    crate::identities::provision(&split.nats, &[]).await;
    for kind in checkout_shared::steps::worker_kinds() {
        split.spawn(kind, &["worker", kind]);
    }
    split.spawn("orchestrator", &["orchestrator"]);
    let gateway = SocketAddr::from(([127, 0, 0, 1], checkout_harness::free_port()));
    let listen = format!("--listen={gateway}");
    split.spawn("gateway", &["gateway", &listen]);
    for durable in checkout_shared::steps::worker_kinds().chain([EVENTS_CONSUMER]) {
        let up = wait_until(Duration::from_secs(60), || pulling(&js, durable)).await;
        assert!(up, "{durable} is not consuming:\n{}", split.logs());
    }
    let ready = wait_until(Duration::from_secs(60), || async move {
        tokio::net::TcpStream::connect(gateway).await.is_ok()
            && crate::http::request(gateway, "GET", "/readyz", &[], b"")
                .await
                .status
                == 200
    })
    .await;
    assert!(ready, "the gateway is not ready:\n{}", split.logs());

    // Every way a checkout ends, each touching its owners' databases.
    let cases = [
        (["--item", "SKU-MUG:2"].as_slice(), "completed"),
        (
            &["--item", "SKU-MUG:1", "--token", "tok_decline"],
            "compensated",
        ),
        (
            &["--item", "SKU-MUG:1", "--customer", "order-fails-1"],
            "compensated",
        ),
        (&["--item", "SKU-RARE:4"], "failed"),
    ];
    let mut completed = String::new();
    for (items, expected) in cases {
        let args = [["publish", "--wait"].as_slice(), items].concat();
        let (_, stdout) = split.checkout(&args).await;
        assert!(
            stdout.contains(&format!("outcome: {expected}")),
            "{args:?} should end {expected}:\n{stdout}\n{}",
            split.logs()
        );
        if expected == "completed" {
            completed = saga_of(&stdout);
        }
    }
    let response = post(gateway, &[("Idempotency-Key", "split-1")], &cart(1, 2100)).await;
    assert_eq!(response.status, 202, "{response:?}");
    let saga = response.json()["saga_id"].as_str().unwrap().to_owned();
    let (_, watched) = split.checkout(&["watch", &saga, "--plain"]).await;
    assert!(watched.contains("completed"), "{watched}");

    // The operator's commands read the saga store where it is.
    let (shown, show) = split.checkout(&["show", &completed]).await;
    assert!(shown && show.contains("status   completed"), "{show}");
    let (listed, stuck) = split.checkout(&["stuck"]).await;
    assert!(listed && stuck.contains("no stuck sagas"), "{stuck}");
    let (_, retry) = split.checkout(&["retry", &completed]).await;
    assert!(retry.contains("not stuck: nothing to retry"), "{retry}");

    // Each database holds its owner's schema and nothing else; the shared one nothing.
    for owner in ON_A.iter().chain(&ON_B) {
        let (schemas, _) = contents(&split.url(owner)).await;
        assert_eq!(
            schemas,
            BTreeSet::from([(*owner).to_owned()]),
            "database {owner}"
        );
    }
    let (schemas, objects) = contents(&split.url(SHARED)).await;
    assert!(
        schemas.is_empty() && objects == 0,
        "the shared DATABASE_URL was used: schemas {schemas:?}, {objects} objects"
    );
    // And each owner's records are where its own URL points: five sagas, four that reached
    // payment and charged three times (the refused order's is refunded), two confirmations.
    let at = |owner: &str| split.url(owner);
    assert_eq!(
        count(&at("saga"), "SELECT count(*) FROM saga.sagas").await,
        5
    );
    let charges = "SELECT count(*) FROM payment.ledger WHERE kind = 'charge'";
    assert_eq!(count(&at("payment"), charges).await, 3);
    let held = "SELECT count(*) FROM inventory.reservations WHERE state = 'held'";
    assert_eq!(count(&at("inventory"), held).await, 2);
    let created = "SELECT count(*) FROM orders.orders WHERE status = 'created'";
    assert_eq!(count(&at("orders"), created).await, 2);
    let sent = "SELECT count(*) FROM notification.confirmations";
    let confirmed = wait_until(Duration::from_secs(30), || {
        let url = at("notification");
        async move { count(&url, sent).await == 2 }
    })
    .await;
    assert!(confirmed, "two confirmations in the notification database");
    let keys = "SELECT count(*) FROM gateway.idempotency_keys";
    assert_eq!(count(&at("gateway"), keys).await, 1);

    for mut service in split.services.drain(..).rev() {
        let name = service.name().to_owned();
        let code = tokio::task::spawn_blocking(move || service.terminate(Duration::from_secs(20)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(code, Some(0), "{name} did not exit cleanly on SIGTERM");
    }
}
