//! A private stack for the chaos runner and the benchmark: its own nats-server (free port,
//! temporary store) or cluster of them ([`Broker`]), a fresh database (on the shared server, or on a private cluster that can
//! itself be killed), its own OTLP receiver, and the real services as separate processes, any
//! of which can be killed and restarted. With proxies, the services reach the broker and the
//! database through TCP proxies whose connections the caller can cut or slow down; the stack's
//! own pool always connects directly, so the audit sees the truth whatever the network does.
//!
//! ```text
//!  services ──▶ [nats proxy] ──▶ nats-server        runner pool ──▶ PostgreSQL (direct)
//!           └─▶ [db proxy]   ──▶ PostgreSQL
//! ```
//!
//! On a cluster there is one nats proxy per node, the services list them all in `NATS_URL`,
//! and the streams are provisioned at three replicas (`STREAM_REPLICAS`).
//!
//! The broker requires identities: the stack provisions the streams and consumers as the
//! administrator, then each service connects as itself (`NATS_USER`, `NATS_PASSWORD`,
//! `NATS_PROVISION=false`), as in production.

use crate::broker::Broker;
use checkout_cli::common::{pulling, wait_until};
use checkout_harness::{OtlpReceiver, PgCluster, Service, TcpProxy, TestDb};
use checkout_shared::streams::EVENTS_CONSUMER;
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// How many of each process, and how they are configured.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// nats-server processes: 1, or a cluster of 3 (streams then at 3 replicas).
    pub nats_nodes: usize,
    /// Orchestrator processes.
    pub orchestrators: usize,
    /// Instances of each worker kind.
    pub workers_per_kind: usize,
    /// Stock seeded by the inventory workers.
    pub seed_stock: String,
    /// Environment for every service (on top of the connection settings).
    pub env: Vec<(String, String)>,
    /// Run a private PostgreSQL cluster (which can be killed) instead of a database on the
    /// shared server.
    pub private_postgres: bool,
    /// Put TCP proxies between the services and their broker and database.
    pub proxies: bool,
}

/// The database the services use: a fresh one on the shared server, or a private cluster.
enum Database {
    Shared(TestDb),
    Private(PgCluster),
}

/// The name of the services' database in a private cluster.
const PRIVATE_DB: &str = "checkout";

/// The running stack.
pub struct PrivateStack {
    /// The broker (a server or a cluster), whose nodes can be killed and restarted.
    pub nats: Broker,
    /// The spans every process exported.
    pub receiver: OtlpReceiver,
    /// The system's database, connected directly (never through a proxy).
    pub pool: PgPool,
    /// The direct URL of the system's database, for admin connections.
    pub db_url: String,
    db: Option<Database>,
    /// The proxies in front of the broker's nodes, when the stack has proxies.
    pub nats_proxies: Vec<TcpProxy>,
    /// The proxy in front of the database, when the stack has proxies.
    pub db_proxy: Option<TcpProxy>,
    services: Vec<Service>,
    /// Where the services' logs are.
    pub log_dir: PathBuf,
}

impl PrivateStack {
    /// Starts everything and waits until every kind consumes.
    pub async fn start(options: &StackOptions) -> anyhow::Result<Self> {
        let mut stack = Self::start_infra(options, OtlpReceiver::start().await?).await?;
        stack.spawn_services(options).await?;
        Ok(stack)
    }

    /// Starts the broker, the database (and the proxies), with `receiver` for spans, and no
    /// service yet: the benchmark starts and stops the services per run on the same broker
    /// and database.
    pub async fn start_infra(
        options: &StackOptions,
        receiver: OtlpReceiver,
    ) -> anyhow::Result<Self> {
        let nats = Broker::start(options.nats_nodes).await?;
        Self::start_infra_on(options, receiver, nats).await
    }

    /// As [`PrivateStack::start_infra`], on a broker the caller started (the benchmark's
    /// cluster has direct routes).
    pub async fn start_infra_on(
        options: &StackOptions,
        receiver: OtlpReceiver,
        nats: Broker,
    ) -> anyhow::Result<Self> {
        // The database proxy needs a URL whose port it can replace: the private cluster's.
        anyhow::ensure!(
            options.private_postgres || !options.proxies,
            "proxies need the private PostgreSQL cluster"
        );
        let (db, db_url, db_port) = if options.private_postgres {
            let cluster = PgCluster::start().await?;
            let admin = PgPool::connect(&cluster.url("postgres")).await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {PRIVATE_DB}")))
                .execute(&admin)
                .await?;
            admin.close().await;
            let (url, port) = (cluster.url(PRIVATE_DB), cluster.port());
            (Database::Private(cluster), url, port)
        } else {
            let db = TestDb::create().await?;
            let url = db.url();
            let port = port_of(&url);
            (Database::Shared(db), url, port)
        };
        let pool = PgPool::connect(&db_url).await?;
        let (nats_proxies, db_proxy) = if options.proxies {
            let db_addr = std::net::SocketAddr::from(([127, 0, 0, 1], db_port));
            let mut nats_proxies = Vec::new();
            for node in nats.nodes() {
                nats_proxies.push(TcpProxy::start(node.addr()).await?);
            }
            (nats_proxies, Some(TcpProxy::start(db_addr).await?))
        } else {
            (Vec::new(), None)
        };
        let log_dir =
            std::env::temp_dir().join(format!("checkout-stack-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&log_dir)?;
        Ok(PrivateStack {
            nats,
            receiver,
            pool,
            db_url,
            db: Some(db),
            nats_proxies,
            db_proxy,
            services: vec![],
            log_dir,
        })
    }

    /// Starts the services (`orchestrators`, `workers_per_kind` of each worker kind) and
    /// waits until every kind consumes.
    pub async fn spawn_services(&mut self, options: &StackOptions) -> anyhow::Result<()> {
        self.spawn_services_with(options, &BTreeMap::new()).await
    }

    /// As [`PrivateStack::spawn_services`], with `instances[kind]` of the worker kinds it
    /// names instead of `workers_per_kind` (the benchmark's `--instances inventory=3`).
    pub async fn spawn_services_with(
        &mut self,
        options: &StackOptions,
        instances: &BTreeMap<String, usize>,
    ) -> anyhow::Result<()> {
        let exe = crate::product::checkout_bin()?;
        self.provision().await?;
        let mut plan: Vec<(String, Vec<String>, &str)> = Vec::new();
        for kind in checkout_shared::steps::worker_kinds() {
            let count = instances
                .get(kind)
                .copied()
                .unwrap_or(options.workers_per_kind);
            for i in 1..=count.max(1) {
                plan.push((
                    format!("{kind}-{i}"),
                    vec!["worker".into(), kind.into()],
                    kind,
                ));
            }
        }
        for name in orchestrator_names(options.orchestrators) {
            plan.push((name, vec!["orchestrator".into()], "orchestrator"));
        }
        for (name, args, service_name) in plan {
            let mut envs = vec![
                ("NATS_URL".to_owned(), self.service_nats_url()),
                ("DATABASE_URL".to_owned(), self.service_db_url()),
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
                    self.receiver.endpoint(),
                ),
                ("OTEL_SERVICE_NAME".to_owned(), service_name.to_owned()),
                ("LOG_FORMAT".to_owned(), "json".to_owned()),
                ("SEED_STOCK".to_owned(), options.seed_stock.clone()),
                (
                    "STREAM_REPLICAS".to_owned(),
                    self.nats.replicas().to_string(),
                ),
            ];
            envs.extend(options.env.iter().cloned());
            // Its own identity, after the caller's settings: a service is never someone else.
            envs.extend(self.nats.passwords().service_env(service_name)?);
            // Every owner's URL too, all this stack's one database: one inherited from the
            // caller's environment (`SAGA_DATABASE_URL`, ...) would send a service elsewhere.
            envs.extend(checkout_cli::databases::one_database_env(
                &self.service_db_url(),
            ));
            let service = Service::spawn(&name, &exe, &args, &envs, &self.log_dir)?;
            self.services.push(service);
            if name == "inventory-1" {
                // The orchestrator refuses SKUs missing from the catalog inventory publishes.
                self.wait_pulling("inventory").await?;
            }
        }
        for durable in checkout_shared::steps::worker_kinds().chain([EVENTS_CONSUMER]) {
            self.wait_pulling(durable).await?;
        }
        Ok(())
    }

    /// Starts one more process, `exe args` (`exe` being this tools binary, as for
    /// `bench-skeleton`), whose output goes to the stack's log directory; it is stopped with
    /// the others.
    pub fn spawn_extra(
        &mut self,
        name: &str,
        args: &[String],
        envs: &[(String, String)],
    ) -> anyhow::Result<()> {
        let exe = std::env::current_exe()?;
        let service = Service::spawn(name, &exe, args, envs, &self.log_dir)?;
        self.services.push(service);
        Ok(())
    }

    /// Starts `checkout nats-trace-bridge` as its own identity, exporting to the receiver.
    pub fn spawn_trace_bridge(&mut self, env: &[(String, String)]) -> anyhow::Result<()> {
        let mut envs = vec![
            ("NATS_URL".to_owned(), self.service_nats_url()),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
                self.receiver.endpoint(),
            ),
            ("LOG_FORMAT".to_owned(), "json".to_owned()),
        ];
        envs.extend(env.iter().cloned());
        envs.extend(self.nats.passwords().service_env("tracebridge")?);
        let exe = crate::product::checkout_bin()?;
        let args = ["nats-trace-bridge".to_owned()];
        let bridge = Service::spawn("nats-bridge", &exe, &args, &envs, &self.log_dir)?;
        self.services.push(bridge);
        Ok(())
    }

    /// The running services' names and pids.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.services
            .iter()
            .filter_map(|s| Some((s.name().to_owned(), s.pid()?)))
            .collect()
    }

    /// The database's URL, direct (never through a proxy).
    pub fn database_url(&self) -> String {
        self.db_url.clone()
    }

    /// The broker as the services see it: every node, through its proxy when there are
    /// proxies.
    fn service_nats_url(&self) -> String {
        if self.nats_proxies.is_empty() {
            return self.nats.url();
        }
        let urls: Vec<String> = self
            .nats_proxies
            .iter()
            .map(|proxy| format!("nats://{}", proxy.addr()))
            .collect();
        urls.join(",")
    }

    /// The database as the services see it: through its proxy when there is one.
    fn service_db_url(&self) -> String {
        match &self.db_proxy {
            Some(proxy) => self.db_url.replacen(
                &format!(":{}/", port_of(&self.db_url)),
                &format!(":{}/", proxy.port()),
                1,
            ),
            None => self.db_url.clone(),
        }
    }

    /// The private PostgreSQL cluster, when the stack runs one.
    pub fn postgres(&mut self) -> Option<&mut PgCluster> {
        match &mut self.db {
            Some(Database::Private(cluster)) => Some(cluster),
            _ => None,
        }
    }

    /// Creates or updates the streams and consumers as the administrator (no service's
    /// identity may), at the broker's replicas; idempotent, so every run of services may.
    async fn provision(&self) -> anyhow::Result<()> {
        let client =
            checkout_shared::connect::connect(&self.nats.admin_url(), "checkout-stack", false)
                .await?;
        let js = checkout_shared::connect::jetstream(client);
        checkout_shared::streams::provision(&js, self.nats.replicas()).await?;
        Ok(())
    }

    async fn wait_pulling(&self, durable: &str) -> anyhow::Result<()> {
        let client =
            checkout_shared::connect::connect(&self.nats.admin_url(), "checkout-stack", false)
                .await?;
        let js = async_nats::jetstream::new(client);
        let ready = wait_until(Duration::from_secs(60), || pulling(&js, durable)).await;
        anyhow::ensure!(
            ready,
            "{durable} did not start; logs in {}",
            self.log_dir.display()
        );
        Ok(())
    }

    /// The names of the services.
    pub fn names(&self) -> Vec<String> {
        self.services.iter().map(|s| s.name().to_owned()).collect()
    }

    /// A service by name.
    pub fn service(&mut self, name: &str) -> Option<&mut Service> {
        self.services.iter_mut().find(|s| s.name() == name)
    }

    /// Stops every service with SIGTERM; returns each one's exit code.
    pub async fn stop(&mut self) -> Vec<(String, Option<i32>)> {
        let services = std::mem::take(&mut self.services);
        checkout_harness::process::terminate_all(services, Duration::from_secs(20)).await
    }

    /// Drops the database (keeps it when `keep`, for inspection; a private cluster cannot be
    /// kept, as its files live in a temporary directory, but the services' logs are).
    pub async fn cleanup(mut self, keep: bool) -> anyhow::Result<()> {
        self.pool.close().await;
        match self.db.take() {
            Some(Database::Shared(db)) if keep => db.keep(),
            Some(Database::Shared(db)) => db.drop_db().await?,
            Some(Database::Private(cluster)) => drop(cluster),
            None => {}
        }
        if !keep {
            // The logs are only worth keeping when asked to, or when a run failed.
            let _ = std::fs::remove_dir_all(&self.log_dir);
        }
        Ok(())
    }
}

/// The orchestrators' service names: `orchestrator` alone, `orchestrator-1`, ... for several
/// (the chaos runner's kills and counts go by the part before the dash).
pub fn orchestrator_names(count: usize) -> Vec<String> {
    match count {
        0 | 1 => vec!["orchestrator".into()],
        n => (1..=n).map(|i| format!("orchestrator-{i}")).collect(),
    }
}

/// The port of a `postgres://user@host:port/db` URL (5432 when none is given).
fn port_of(url: &str) -> u16 {
    let authority = url
        .split("://")
        .nth(1)
        .unwrap_or("")
        .split('/')
        .next()
        .unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    host.rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or(5432)
}

#[cfg(test)]
mod tests {
    use super::{orchestrator_names, port_of};

    #[test]
    fn one_orchestrator_keeps_its_plain_name() {
        assert_eq!(orchestrator_names(1), ["orchestrator"]);
        assert_eq!(orchestrator_names(2), ["orchestrator-1", "orchestrator-2"]);
    }

    #[test]
    fn ports_are_read_from_urls() {
        assert_eq!(port_of("postgres://postgres@127.0.0.1:6543/checkout"), 6543);
        assert_eq!(port_of("postgres://u:p@h:15/db?x=1"), 15);
        assert_eq!(port_of("postgres://postgres@127.0.0.1/checkout"), 5432);
    }
}
