//! `--health-listen ADDR`: the orchestrator's and a worker's health over HTTP, for a
//! scheduler such as Kubernetes (the gateway serves its own on its listening port). Off
//! unless asked for: the services otherwise serve no port at all.
//!
//! ```text
//!  GET /healthz ─▶ 200 "alive"    while the process runs
//!  GET /readyz  ─▶ 200 "ready"    its broker connected, and its database answers with its
//!                                 schema migrated (the service can do its work)
//!               └▶ 503 "unready: broker, database"   naming what is not
//! ```
//!
//! It holds a connection of its own to each (one NATS connection, a one-connection pool) and
//! stops with the service.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use clap::Args;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The liveness route.
pub const HEALTHZ: &str = "/healthz";
/// The readiness route.
pub const READYZ: &str = "/readyz";

/// Where to serve the health routes.
#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    /// Serve GET /healthz (alive) and GET /readyz (broker connected, database answering
    /// with this service's schema migrated) on this address, e.g. 0.0.0.0:9090; off when
    /// unset.
    #[arg(long, env = "HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,
}

/// What `/readyz` checks.
struct Checks {
    nats: async_nats::Client,
    pool: PgPool,
    /// `SELECT 1 FROM <schema>._sqlx_migrations`: reachable, and migrated.
    migrated: String,
}

/// Starts serving at `args.health_listen` (when set) until `shutdown`, checking the broker
/// at `nats_url` and the database at `database_url`, where `schema` is the service's.
pub async fn serve(
    args: &HealthArgs,
    nats_url: &str,
    database_url: &str,
    schema: &str,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Some(addr) = args.health_listen else {
        return Ok(());
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot serve health on {addr}: {e}"))?;
    // Waits for a broker that is down in the background: /readyz says so meanwhile.
    let nats = checkout_shared::connect::connect(nats_url, "checkout-health", true).await?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy(database_url)?;
    let checks = Arc::new(Checks {
        nats,
        pool,
        migrated: format!("SELECT 1 FROM {schema}._sqlx_migrations LIMIT 1"),
    });
    let app = Router::new()
        .route(HEALTHZ, get(|| async { "alive\n" }))
        .route(READYZ, get(ready))
        .with_state(checks);
    tracing::info!(%addr, "serving health");
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(err) = served {
            tracing::warn!(error = %err, "health server stopped");
        }
    });
    Ok(())
}

async fn ready(State(checks): State<Arc<Checks>>) -> (StatusCode, String) {
    let broker = checks.nats.connection_state() == async_nats::connection::State::Connected;
    let query = sqlx::query(sqlx::AssertSqlSafe(checks.migrated.clone())).execute(&checks.pool);
    let database = tokio::time::timeout(Duration::from_secs(2), query)
        .await
        .is_ok_and(|r| r.is_ok());
    if broker && database {
        return (StatusCode::OK, "ready\n".to_owned());
    }
    let down: Vec<&str> = [("broker", broker), ("database", database)]
        .into_iter()
        .filter(|(_, up)| !up)
        .map(|(name, _)| name)
        .collect();
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("unready: {}\n", down.join(", ")),
    )
}
