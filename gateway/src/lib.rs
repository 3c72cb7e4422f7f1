//! The HTTP gateway: the front door of the checkout for browsers and other HTTP callers.
//!
//! ```text
//!  POST /checkout ─▶ server span (the caller's traceparent continued)
//!       │  a slot free and the system not behind (429 / 503 with Retry-After if not)
//!       │  content type, size, JSON, the door's rules and the catalog's prices (422 if not)
//!       │  Idempotency-Key ─▶ gateway.idempotency_keys (same key, other body: 409)
//!       └─▶ record it accepted ─▶ publish checkout.requested (Nats-Msg-Id = saga id)
//!                              ─▶ 202 {saga_id, trace_id}, Location: /checkouts/{id}
//!  GET /checkouts/{id}         ◀─ checkout.saga.<id>.* (lifecycle stream), folded;
//!                                 `accepted` before the first event
//!  GET /checkouts/{id}/events  ◀─ checkout.saga.<id>.* as server-sent events, until it ends
//!  GET /healthz, GET /readyz   (alive; broker and database reachable)
//!  GET /openapi.json           this API, described from the code (utoipa)
//! ```
//!
//! The gateway owns the `gateway` schema (idempotency keys and accepted checkouts, pruned
//! after their retention) and nothing else; it reads a saga's progress from the lifecycle
//! events the orchestrator publishes for watchers, not from the orchestrator's schema. Its
//! rules are the door's ([`checkout_door::validate`]), which the orchestrator applies too, so
//! what it accepts the orchestrator accepts.

mod accepted;
mod cart_input;
mod checkout;
mod http_span;
mod idempotency;
pub mod openapi;
mod problem;
mod shedding;
mod status;
mod view;

#[cfg(test)]
mod fuzz;

use async_nats::jetstream;
use axum::Router;
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
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use shedding::Limits;

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
    /// When to shed load rather than queue it.
    pub limits: Limits,
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
    pub shedding: Arc<shedding::Shedding>,
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
    let shedding = Arc::new(shedding::Shedding::new(config.limits));
    let state = Arc::new(AppState {
        nats: nats.clone(),
        js: js.clone(),
        pool: pool.clone(),
        catalog: Catalog::new(catalog),
        lifecycle,
        flusher,
        shutdown: shutdown.clone(),
        shedding: shedding.clone(),
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
    let keep = config.idempotency_retention;
    let keys = tokio::spawn({
        let (pool, stop) = (pool.clone(), stop_pruning.clone());
        let target = retention::Target {
            schema: "gateway",
            table: "idempotency_keys",
        };
        async move {
            retention::every(target, keep, stop, || idempotency::prune_pass(&pool, keep)).await;
        }
    });
    // Accepted checkouts are kept as long as the keys: a day by default, as the lifecycle
    // stream keeps a saga's events (after which the status is 404 either way).
    let accepted = tokio::spawn({
        let (pool, stop) = (pool.clone(), stop_pruning.clone());
        let target = retention::Target {
            schema: "gateway",
            table: "accepted_checkouts",
        };
        async move {
            retention::every(target, keep, stop, || accepted::prune_pass(&pool, keep)).await;
        }
    });
    let backlog = tokio::spawn(shedding::watch_backlog(js, shedding, stop_pruning.clone()));
    let served = axum::serve(listener, routes().0.with_state(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    stop_pruning.cancel();
    for task in [keys, accepted, backlog] {
        if let Err(err) = task.await {
            tracing::error!(error = %err, "a background task of the gateway panicked");
        }
    }
    tracing::info!("stopped serving; draining");
    if let Err(err) = nats.drain().await {
        tracing::warn!(error = %err, "draining the NATS connection");
    }
    pool.close().await;
    served.map_err(|source| GatewayError::Serve { addr, source })
}

/// Every route and its description, from the same calls: a route is served as documented.
pub(crate) fn routes() -> (Router<Arc<AppState>>, utoipa::openapi::OpenApi) {
    let traced = OpenApiRouter::new()
        .routes(routes!(checkout::post))
        .routes(routes!(status::get))
        .routes(routes!(status::events))
        .layer(axum::middleware::from_fn(http_span::server_span));
    // Probes are not traced: a trace every few seconds per probe would drown the real ones.
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(ready))
        .routes(routes!(openapi_json))
        .merge(traced)
        .split_for_parts()
}

/// Alive.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "operations",
    responses((status = 200, description = "The process serves", body = String,
        content_type = "text/plain", example = "ok\n"))
)]
async fn healthz() -> &'static str {
    "ok\n"
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI document of this gateway",
        body = Object, content_type = "application/json"))
)]
async fn openapi_json() -> axum::response::Response {
    static DOCUMENT: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| openapi::document().to_string());
    use axum::response::IntoResponse;
    ([("content-type", "application/json")], DOCUMENT.as_str()).into_response()
}

/// Ready when the broker connection is up and the database answers.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Broker and database reachable", body = String,
            content_type = "text/plain", example = "ready\n"),
        (status = 503, description = "The broker or the database is unreachable",
            body = openapi::Problem503, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    )
)]
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
        problem::Reason::NotReady,
        format!("unreachable: {}", down.join(", ")),
    )
    .into_response()
}
