//! A private stack for the chaos runner and the benchmark: its own nats-server (free port,
//! temporary store), a fresh database, its own OTLP receiver, and the real services as
//! separate processes, any of which can be killed and restarted.

use crate::local::{pulling, wait_until};
use checkout_harness::{NatsServer, OtlpReceiver, Service, TestDb};
use checkout_shared::streams::EVENTS_CONSUMER;
use sqlx::PgPool;
use std::path::PathBuf;
use std::time::Duration;

/// How many of each process, and how they are configured.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Instances of each worker kind.
    pub workers_per_kind: usize,
    /// Stock seeded by the inventory workers.
    pub seed_stock: String,
    /// Environment for every service (on top of the connection settings).
    pub env: Vec<(String, String)>,
}

/// The running stack.
pub struct PrivateStack {
    /// The broker, which can itself be killed and restarted.
    pub nats: NatsServer,
    /// The spans every process exported.
    pub receiver: OtlpReceiver,
    /// The system's database.
    pub pool: PgPool,
    db: Option<TestDb>,
    services: Vec<Service>,
    /// Where the services' logs are.
    pub log_dir: PathBuf,
}

impl PrivateStack {
    /// Starts everything and waits until every kind consumes.
    pub async fn start(options: &StackOptions) -> anyhow::Result<Self> {
        let mut stack = Self::start_infra(OtlpReceiver::start().await?).await?;
        stack.spawn_services(options).await?;
        Ok(stack)
    }

    /// Starts the broker and a fresh database, with `receiver` for spans, and no service yet:
    /// the benchmark starts and stops the services per run on the same broker and database.
    pub async fn start_infra(receiver: OtlpReceiver) -> anyhow::Result<Self> {
        let nats = NatsServer::start_async().await?;
        let db = TestDb::create().await?;
        let pool = PgPool::connect(&db.url()).await?;
        let log_dir =
            std::env::temp_dir().join(format!("checkout-stack-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&log_dir)?;
        Ok(PrivateStack {
            nats,
            receiver,
            pool,
            db: Some(db),
            services: vec![],
            log_dir,
        })
    }

    /// Starts the services (one orchestrator, `workers_per_kind` of each worker kind) and
    /// waits until every kind consumes.
    pub async fn spawn_services(&mut self, options: &StackOptions) -> anyhow::Result<()> {
        let exe = std::env::current_exe()?;
        let mut plan: Vec<(String, Vec<String>, &str)> = Vec::new();
        for kind in checkout_shared::steps::worker_kinds() {
            for i in 1..=options.workers_per_kind.max(1) {
                plan.push((
                    format!("{kind}-{i}"),
                    vec!["worker".into(), kind.into()],
                    kind,
                ));
            }
        }
        plan.push((
            "orchestrator".into(),
            vec!["orchestrator".into()],
            "orchestrator",
        ));
        for (name, args, service_name) in plan {
            let mut envs = vec![
                ("NATS_URL".to_owned(), self.nats.url()),
                ("DATABASE_URL".to_owned(), self.db_url()),
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
                    self.receiver.endpoint(),
                ),
                ("OTEL_SERVICE_NAME".to_owned(), service_name.to_owned()),
                ("LOG_FORMAT".to_owned(), "json".to_owned()),
                ("SEED_STOCK".to_owned(), options.seed_stock.clone()),
            ];
            envs.extend(options.env.iter().cloned());
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

    /// Starts one more process, `exe args`, whose output goes to the stack's log directory;
    /// it is stopped with the others.
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

    /// The running services' names and pids.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.services
            .iter()
            .filter_map(|s| Some((s.name().to_owned(), s.pid()?)))
            .collect()
    }

    /// The database's URL.
    pub fn database_url(&self) -> String {
        self.db_url()
    }

    fn db_url(&self) -> String {
        self.db.as_ref().map(TestDb::url).unwrap_or_default()
    }

    async fn wait_pulling(&self, durable: &str) -> anyhow::Result<()> {
        let client = async_nats::connect(self.nats.url()).await?;
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

    /// Drops the database (keeps it when `keep`, for inspection).
    pub async fn cleanup(mut self, keep: bool) -> anyhow::Result<()> {
        self.pool.close().await;
        if let Some(db) = self.db.take() {
            if keep {
                db.keep();
            } else {
                db.drop_db().await?;
                let _ = std::fs::remove_dir_all(&self.log_dir);
            }
        }
        Ok(())
    }
}
