//! `run(config, shutdown)`: connect, migrate, provision, consume, and drain on shutdown.

use crate::config::WorkerConfig;
use crate::consume;
use crate::error::WorkerError;
use crate::handler::{Handler, schema_of};
use crate::inventory;
use checkout_shared::Step;
use checkout_shared::shutdown::retry;
use checkout_shared::streams::{self, ProvisionError, Topology};
use checkout_shared::telemetry::SpanFlusher;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Applies the migrations of `kind`'s schema. Each schema keeps its own migration history, so
/// the workers migrate one database independently.
pub async fn migrate(pool: &PgPool, kind: Step) -> Result<(), WorkerError> {
    let schema = schema_of(kind);
    let mut migrator = migrator(kind);
    migrator.create_schema(schema);
    migrator.dangerous_set_table_name(format!("{schema}._sqlx_migrations"));
    migrator.run(pool).await?;
    Ok(())
}

/// The embedded migrations of a step's worker, from `workers/migrations/<schema>`.
/// `sqlx::migrate!` takes a literal path, hence one arm per step: a new step does not
/// compile without its migrations.
fn migrator(kind: Step) -> Migrator {
    match kind {
        Step::Inventory => sqlx::migrate!("./migrations/inventory"),
        Step::Payment => sqlx::migrate!("./migrations/payment"),
        Step::Order => sqlx::migrate!("./migrations/orders"),
        Step::Notification => sqlx::migrate!("./migrations/notification"),
    }
}

/// Runs one worker until `shutdown`; then finishes the messages in hand, drains the NATS
/// connection and closes the pool. The caller flushes telemetry.
pub async fn run(
    config: WorkerConfig,
    flusher: SpanFlusher,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let name = format!("checkout-{}", config.kind.as_str());
    // Read before anything connects: a consumer missing from the topology is a build mistake
    // to report at once, not something to retry.
    let consumer = match config.consumer.clone() {
        Some(def) if def.durable == config.kind.as_str() => def,
        Some(def) => return Err(ProvisionError::UnknownConsumer(def.durable).into()),
        None => Topology::load()?.consumer(config.kind.as_str())?.clone(),
    };
    let pool = PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy(&config.database_url)?;
    // A database that is down (or restarting) at start-up is waited for, as the broker is.
    let schema_ready = retry("migrating the schema", &shutdown, || async {
        migrate(&pool, config.kind).await?;
        if config.kind == Step::Inventory {
            inventory::seed(&pool, &config.seed_stock).await?;
        }
        Ok::<(), WorkerError>(())
    })
    .await;
    if schema_ready.is_none() {
        pool.close().await;
        return Ok(());
    }
    let client = checkout_shared::connect::connect(&config.nats_url, &name, true).await?;
    let js = checkout_shared::connect::jetstream(client.clone());
    let ready = retry("provisioning JetStream", &shutdown, || async {
        streams::provision(&js, config.replicas).await?;
        if config.kind == Step::Inventory {
            publish_catalog(&js, &pool).await?;
        }
        Ok::<_, WorkerError>(())
    })
    .await;
    if ready.is_none() {
        pool.close().await;
        return Ok(());
    }
    let ctx = consume::Context {
        js,
        db: crate::calls::Db::new(pool.clone()),
        handler: Handler::new(config.kind, config.faults.clone()),
        consumer,
        flusher,
    };
    // Its own token: the pruner also stops when the consume loop ends without a shutdown.
    let stop_pruning = shutdown.child_token();
    let pruner = crate::retention::spawn(
        pool.clone(),
        config.kind,
        config.retention,
        stop_pruning.clone(),
    );
    tracing::info!(worker = %name, concurrency = config.concurrency, "consuming");
    consume::run(ctx, config.concurrency.max(1), shutdown.clone()).await;
    stop_pruning.cancel();
    if let Err(err) = pruner.await {
        tracing::error!(worker = %name, error = %err, "the retention pruner panicked");
    }
    if !shutdown.is_cancelled() {
        // The loop only returns on shutdown; anything else is a bug that must not look like
        // a clean exit.
        pool.close().await;
        return Err(WorkerError::EndedEarly(name));
    }
    tracing::info!(worker = %name, "stopped fetching; draining");
    if let Err(err) = client.drain().await {
        tracing::warn!(error = %err, "draining the NATS connection");
    }
    pool.close().await;
    Ok(())
}

/// Lists every SKU with its price and currency in the catalog stream, so the door can refuse
/// unknown SKUs and changed prices, and shop clients can price their carts.
pub async fn publish_catalog(
    js: &async_nats::jetstream::Context,
    pool: &PgPool,
) -> Result<(), WorkerError> {
    for entry in inventory::catalog(pool).await? {
        let Some(subject) = checkout_shared::subjects::catalog_entry(&entry.sku) else {
            tracing::warn!(sku = %entry.sku, "sku cannot be listed in the catalog; checkouts for it are refused");
            continue;
        };
        let body = serde_json::to_vec(&entry).map_err(|e| WorkerError::Catalog(e.to_string()))?;
        let ack = js
            .publish(subject, bytes::Bytes::from(body))
            .await
            .map_err(|e| WorkerError::Catalog(e.to_string()))?;
        ack.await.map_err(|e| WorkerError::Catalog(e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_has_its_migrations_embedded() {
        for &step in Step::ALL {
            let migrations = migrator(step);
            assert!(
                migrations.iter().next().is_some(),
                "no migrations for {step} (workers/migrations/{})",
                step.schema()
            );
        }
    }
}
