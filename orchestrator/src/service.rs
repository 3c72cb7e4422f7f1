//! `run(config, shutdown)`: the orchestrator process. Two pull consumers (incoming checkouts
//! and workers' replies), a deadline scanner, span-export confirmation, the retention pruner,
//! and recovery first.

use crate::executor::{ExecError, Executor, Timing};
use crate::saga::SagaData;
use crate::store;
use async_nats::jetstream::{self, AckKind};
use checkout_door::catalog::{Catalog, CatalogError};
use checkout_door::validate;
use checkout_shared::envelope;
use checkout_shared::pull::pull_loop;
use checkout_shared::shutdown::retry;
use checkout_shared::streams::{self, EVENTS_CONSUMER, REQUESTS_CONSUMER, Topology};
use checkout_shared::supervise;
use checkout_shared::telemetry::SpanFlusher;
use checkout_shared::{messaging, metrics};
use sqlx::postgres::PgPoolOptions;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Everything the orchestrator needs to run.
#[derive(Debug, Clone)]
pub struct OrchestratorConfig {
    /// NATS URL.
    pub nats_url: String,
    /// PostgreSQL URL.
    pub database_url: String,
    /// Messages handled at once per consumer.
    pub concurrency: usize,
    /// Database connections.
    pub max_connections: u32,
    /// Stream replicas when provisioning.
    pub replicas: usize,
    /// Deadlines and bounds of the steps.
    pub timing: Timing,
    /// How long ended sagas and their log are kept, and how often the pruner looks.
    pub retention: checkout_shared::retention::Retention,
}

/// Why the orchestrator could not start.
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    /// NATS unreachable.
    #[error(transparent)]
    Connect(#[from] checkout_shared::connect::ConnectFailed),
    /// Streams or consumers could not be provisioned.
    #[error(transparent)]
    Provision(#[from] streams::ProvisionError),
    /// PostgreSQL unreachable.
    #[error("PostgreSQL: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("migrating the saga schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The catalog stream is missing.
    #[error("catalog: {0}")]
    Catalog(String),
    /// Recovery failed.
    #[error("recovery: {0}")]
    Recover(#[from] ExecError),
    /// One of the service's tasks panicked or stopped while it was meant to run.
    #[error(transparent)]
    Task(#[from] checkout_shared::supervise::TaskFailed),
}

struct Ctx {
    executor: Executor,
    js: jetstream::Context,
    catalog: Catalog,
    topology: Topology,
}

/// Runs the orchestrator until `shutdown`, then finishes the messages in hand, drains NATS
/// and closes the pool. The caller flushes telemetry.
pub async fn run(
    config: OrchestratorConfig,
    flusher: SpanFlusher,
    shutdown: CancellationToken,
) -> Result<(), OrchestratorError> {
    let pool = PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy(&config.database_url)?;
    // A database that is down (or restarting) at start-up is waited for, as the broker is.
    if retry("migrating the saga schema", &shutdown, || {
        store::migrate(&pool)
    })
    .await
    .is_none()
    {
        pool.close().await;
        return Ok(());
    }
    let client =
        checkout_shared::connect::connect(&config.nats_url, "checkout-orchestrator", true).await?;
    let js = checkout_shared::connect::jetstream(client.clone());
    let catalog = retry("provisioning JetStream", &shutdown, || async {
        streams::provision(&js, config.replicas).await?;
        js.get_stream_no_info(streams::CATALOG_STREAM)
            .await
            .map_err(|e| OrchestratorError::Catalog(e.to_string()))
    })
    .await;
    let Some(catalog) = catalog.map(Catalog::new) else {
        pool.close().await;
        return Ok(());
    };
    let (executor, exported) =
        Executor::new(pool.clone(), client.clone(), flusher.clone(), config.timing);
    let confirmer = tokio::spawn({
        let executor = executor.clone();
        async move { executor.confirm_exports(exported).await }
    });
    let resumed = executor.recover().await?;
    tracing::info!(resumed, "recovered unfinished sagas");
    let ctx = Arc::new(Ctx {
        executor,
        js: js.clone(),
        catalog,
        topology: Topology::load()?,
    });
    let requests = tokio::spawn(consume(
        ctx.clone(),
        REQUESTS_CONSUMER,
        config.concurrency,
        shutdown.clone(),
    ));
    let events = tokio::spawn(consume(
        ctx.clone(),
        EVENTS_CONSUMER,
        config.concurrency,
        shutdown.clone(),
    ));
    let deadlines = tokio::spawn({
        let (ctx, shutdown) = (ctx.clone(), shutdown.clone());
        async move {
            crate::deadlines::scan(&ctx.executor, shutdown).await;
            Ok(())
        }
    });
    let dead_ends = tokio::spawn({
        let (client, js, shutdown) = (client.clone(), js.clone(), shutdown.clone());
        async move {
            crate::dead_ends::watch(client, js, shutdown).await;
            Ok(())
        }
    });
    let in_flight = tokio::spawn({
        let (pool, shutdown) = (pool.clone(), shutdown.clone());
        async move {
            crate::observe::poll_in_flight(pool, shutdown).await;
            Ok(())
        }
    });
    let pruner = crate::retention::spawn(pool.clone(), config.retention, shutdown.clone());
    let tasks = vec![
        ("in-flight gauge", in_flight),
        ("saga retention", pruner),
        ("checkout requests", requests),
        ("worker replies", events),
        ("deadline scanner", deadlines),
        ("dead-end watcher", dead_ends),
    ];
    let stopped = supervise::join_all(tasks, &shutdown).await;
    tracing::info!("stopped fetching; draining");
    drop(ctx);
    confirmer.abort();
    if let Err(err) = client.drain().await {
        tracing::warn!(error = %err, "draining the NATS connection");
    }
    pool.close().await;
    stopped?;
    Ok(())
}

async fn consume(
    ctx: Arc<Ctx>,
    durable: &'static str,
    concurrency: usize,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let def = ctx
        .topology
        .consumer(durable)
        .cloned()
        .map_err(|err| format!("consumer {durable}: {err}"))?;
    let js = ctx.js.clone();
    pull_loop(&js, &def, concurrency, shutdown, |message| {
        let ctx = ctx.clone();
        let def = &def;
        async move {
            let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
            let msg_id = message
                .headers
                .as_ref()
                .and_then(|h| h.get(envelope::MSG_ID))
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            let span = messaging::consumer_span(
                &message.subject,
                message.headers.as_ref(),
                &def.durable,
                &msg_id,
                delivered,
                messaging::Stored::of(&message).as_ref(),
            );
            let ack = if durable == REQUESTS_CONSUMER {
                on_request(&ctx, &message, def.nak_delay(delivered))
                    .instrument(span.clone())
                    .await
            } else {
                crate::replies::on_reply(&ctx.executor, &ctx.js, &message, def.nak_delay(delivered))
                    .instrument(span.clone())
                    .await
            };
            drop(span);
            if let Err(err) = message.ack_with(ack).await {
                tracing::warn!(error = %err, "settling failed; the message will be redelivered");
            }
        }
    })
    .await;
    Ok(())
}

/// A new checkout: validate, then start its saga or reject it.
/// `retry_after`: the consumer's redelivery delay for this delivery. The orchestrator's
/// consumers retry without limit, so a database outage delays sagas but never drops a
/// checkout or a reply.
async fn on_request(ctx: &Ctx, message: &jetstream::Message, retry_after: Duration) -> AckKind {
    // The validation has its own span, so that what it found (a `price_mismatch` event per
    // changed line, the rejection as its error status) reads apart from the processing.
    let validation = tracing::info_span!(
        "validate checkout",
        otel.status_code = tracing::field::Empty,
        otel.status_message = tracing::field::Empty,
        checkout.rejection = tracing::field::Empty,
        saga.id = tracing::field::Empty,
    );
    let checked = async {
        let request = match validate::parse(&message.payload) {
            Ok(request) => request,
            Err(rejection) => return Ok(Err(rejection)),
        };
        tracing::Span::current().record("saga.id", request.checkout_id.to_string());
        Ok(ctx.catalog.check(&request).await?.map(|()| request))
    }
    .instrument(validation.clone())
    .await;
    let request = match checked {
        Ok(Ok(request)) => request,
        Ok(Err(rejection)) => {
            validation.record("checkout.rejection", rejection.kind());
            messaging::mark_error(&validation, &rejection.to_string());
            drop(validation);
            let pool = ctx.executor.pool();
            return crate::rejections::refuse(&ctx.js, pool, message, rejection).await;
        }
        Err(err) => {
            let err: CatalogError = err;
            tracing::warn!(error = %err, "catalog unavailable; retrying the request");
            metrics::get().redelivered("catalog_unavailable");
            return AckKind::Nak(Some(retry_after));
        }
    };
    drop(validation);
    tracing::Span::current().record("saga.id", request.checkout_id.to_string());
    let saga_id = request.checkout_id;
    // The saga span hangs under the client's publish span (from the headers), not under this
    // process span: the client's span is exported before its message is sent, so it exists
    // even if this process dies before exporting its own.
    let parent = checkout_shared::propagation::extract(message.headers.as_ref());
    match ctx.executor.start(SagaData::new(request), &parent).await {
        Ok(true) => {
            tracing::info!(%saga_id, "saga started");
            AckKind::Ack
        }
        // A duplicate, or a checkout refused before (which gets the same answer again).
        Ok(false) => {
            tracing::info!(%saga_id, "duplicate checkout ignored");
            crate::rejections::answer_again(&ctx.js, ctx.executor.pool(), saga_id).await
        }
        // The saga row committed if the failure was the publish: its deadline re-sends.
        Err(ExecError::Publish(err)) => {
            tracing::warn!(%saga_id, error = %err, "first command not sent; its deadline will re-send it");
            AckKind::Ack
        }
        Err(err) => {
            tracing::warn!(%saga_id, error = %err, "could not start the saga; retrying");
            metrics::get().redelivered("store_unavailable");
            AckKind::Nak(Some(retry_after))
        }
    }
}
