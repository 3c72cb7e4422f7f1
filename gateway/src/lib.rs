//! The HTTP gateway: the front door of the checkout for browsers and other HTTP callers.
//!
//! ```text
//!  POST /checkout ─▶ server span (the caller's traceparent continued)
//!       │  content type, size, JSON, the door's rules and the catalog's prices (422 if not)
//!       │  Idempotency-Key ─▶ gateway.idempotency_keys (same key, other body: 409)
//!       └─▶ publish checkout.requested (Nats-Msg-Id = saga id) ─▶ 202 {saga_id, trace_id}
//!  GET /checkouts/{id}         ◀─ checkout.saga.<id>.* (lifecycle stream), folded
//!  GET /checkouts/{id}/events  ◀─ checkout.saga.<id>.* as server-sent events, until it ends
//!  GET /healthz, GET /readyz   (alive; broker and database reachable)
//! ```
//!
//! The gateway owns the `gateway` schema (idempotency keys, pruned after their retention) and
//! nothing else; it reads a
//! saga's progress from the lifecycle events the orchestrator publishes for watchers, not
//! from the orchestrator's schema. Its rules are the door's ([`checkout_door::validate`]),
//! which the orchestrator applies too, so what it accepts the orchestrator accepts.

mod checkout;
mod http_span;
mod idempotency;
mod problem;
mod status;

use async_nats::jetstream;
use axum::Router;
use axum::routing::{get, post};
use checkout_door::catalog::Catalog;
use checkout_shared::retention::{self, Retention};
use checkout_shared::shutdown::retry;
use checkout_shared::streams::{self, LIFECYCLE_STREAM};
use checkout_shared::telemetry::SpanFlusher;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Everything the gateway needs to run.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// NATS URL.
    pub nats_url: String,
    /// PostgreSQL URL (the `gateway` schema).
    pub database_url: String,
    /// Database connections.
    pub max_connections: u32,
    /// Stream replicas when provisioning.
    pub replicas: usize,
    /// How long idempotency keys are kept, and how often the pruner looks.
    pub idempotency_retention: Retention,
}

/// Why the gateway could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// NATS unreachable.
    #[error(transparent)]
    Connect(#[from] checkout_shared::connect::ConnectFailed),
    /// PostgreSQL unreachable.
    #[error("PostgreSQL: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("migrating the gateway schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The listening socket could not be bound or served.
    #[error("serving HTTP on {addr}: {source}")]
    Serve {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// What every handler shares.
pub(crate) struct AppState {
    pub nats: async_nats::Client,
    pub js: jetstream::Context,
    pub pool: PgPool,
    pub catalog: Catalog,
    pub lifecycle: jetstream::stream::Stream<()>,
    pub flusher: SpanFlusher,
    pub shutdown: CancellationToken,
}

/// Applies the migrations of the `gateway` schema, with its own migration history.
pub async fn migrate(pool: &PgPool) -> Result<(), GatewayError> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.create_schema("gateway");
    migrator.dangerous_set_table_name("gateway._sqlx_migrations");
    migrator.run(pool).await?;
    Ok(())
}

/// Serves HTTP until `shutdown`; then stops accepting, ends the event streams, lets requests
/// in hand finish, drains NATS and closes the pool. The caller flushes telemetry.
pub async fn run(
    config: GatewayConfig,
    flusher: SpanFlusher,
    shutdown: CancellationToken,
) -> Result<(), GatewayError> {
    let pool = PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy(&config.database_url)?;
    // A database that is down (or restarting) at start-up is waited for, as the broker is.
    if retry("migrating the gateway schema", &shutdown, || migrate(&pool))
        .await
        .is_none()
    {
        pool.close().await;
        return Ok(());
    }
    let nats =
        checkout_shared::connect::connect(&config.nats_url, "checkout-gateway", true).await?;
    let js = checkout_shared::connect::jetstream(nats.clone());
    let found = retry("provisioning JetStream", &shutdown, || async {
        streams::provision(&js, config.replicas)
            .await
            .map_err(|e| e.to_string())?;
        let catalog = js.get_stream_no_info(streams::CATALOG_STREAM).await;
        let lifecycle = js.get_stream_no_info(LIFECYCLE_STREAM).await;
        match (catalog, lifecycle) {
            (Ok(catalog), Ok(lifecycle)) => Ok((catalog, lifecycle)),
            (Err(e), _) | (_, Err(e)) => Err(e.to_string()),
        }
    })
    .await;
    let Some((catalog, lifecycle)) = found else {
        pool.close().await;
        return Ok(());
    };
    let state = Arc::new(AppState {
        nats: nats.clone(),
        js,
        pool: pool.clone(),
        catalog: Catalog::new(catalog),
        lifecycle,
        flusher,
        shutdown: shutdown.clone(),
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| GatewayError::Serve {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(config.listen);
    tracing::info!(%addr, "gateway listening");
    // Its own token: the pruner also stops when serving fails without a shutdown.
    let stop_pruning = shutdown.child_token();
    let pruner = tokio::spawn({
        let (pool, keep) = (pool.clone(), config.idempotency_retention);
        let keys = retention::Target {
            schema: "gateway",
            table: "idempotency_keys",
        };
        let stop = stop_pruning.clone();
        async move {
            retention::every(keys, keep, stop, || idempotency::prune_pass(&pool, keep)).await;
        }
    });
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    stop_pruning.cancel();
    if let Err(err) = pruner.await {
        tracing::error!(error = %err, "the idempotency-key pruner panicked");
    }
    tracing::info!("stopped serving; draining");
    if let Err(err) = nats.drain().await {
        tracing::warn!(error = %err, "draining the NATS connection");
    }
    pool.close().await;
    served.map_err(|source| GatewayError::Serve { addr, source })
}

fn router(state: Arc<AppState>) -> Router {
    let traced = Router::new()
        .route("/checkout", post(checkout::post))
        .route("/checkouts/{id}", get(status::get))
        .route("/checkouts/{id}/events", get(status::events))
        .layer(axum::middleware::from_fn(http_span::server_span));
    // Probes are not traced: a trace every few seconds per probe would drown the real ones.
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .merge(traced)
        .with_state(state)
}

/// Ready when the broker connection is up and the database answers.
async fn ready(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
) -> axum::response::Response {
    let broker = state.nats.connection_state() == async_nats::connection::State::Connected;
    let database = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(&state.pool),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    use axum::response::IntoResponse;
    if broker && database {
        return "ready\n".into_response();
    }
    let down: Vec<&str> = [("broker", broker), ("database", database)]
        .into_iter()
        .filter(|(_, up)| !up)
        .map(|(name, _)| name)
        .collect();
    problem::Problem::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "not_ready",
        "Not ready",
        format!("unreachable: {}", down.join(", ")),
    )
    .into_response()
}
