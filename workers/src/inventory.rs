//! Inventory: holds stock for a saga and gives it back. Never oversells: a reservation is a
//! conditional decrement, and the schema forbids negative stock.

use crate::calls::{self, Db};
use crate::handler::{Decided, Once};
use checkout_shared::messages::{CatalogEntry, LineItem};
use checkout_shared::messaging::mark_error;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

/// What `inventory.reserve_once` decided for one line of the cart.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct LineDecision {
    /// The line's SKU.
    pub sku: String,
    /// The line's quantity.
    pub requested: i32,
    /// What the line could take: the SKU's stock less the cart's earlier lines of the same
    /// SKU; `None` for an unknown SKU.
    pub available: Option<i32>,
    /// Whether the line fits.
    pub ok: bool,
}

/// Decrements stock for every line, or refuses the whole cart (one statement:
/// `inventory.reserve_once`, which checks every line before it changes any).
#[tracing::instrument(name = "inventory reserve", skip_all, fields(otel.kind = "internal"))]
pub async fn reserve(db: &Db, once: &Once<'_>, items: &[LineItem]) -> Result<Decided, sqlx::Error> {
    // Rows are locked and lines checked in SKU order (so that concurrent carts sharing SKUs
    // cannot deadlock); stored sorted, so a release gives back in the same order.
    let mut lines = items.to_vec();
    lines.sort_by(|a, b| a.sku.cmp(&b.sku));
    let args = json!([once.key, once.saga_id, once.reply, lines, Uuid::new_v4()]);
    let decided = db.call(&calls::RESERVE, args).await?;
    for line in decided.lines.iter().flat_map(|l| l.0.iter()) {
        trace_line(line);
    }
    Ok(decided)
}

/// One span per cart line, so a refused cart shows which line it was; the
/// `insufficient_stock` event (requested, available) and error status land on a line that
/// did not fit. The line spans record the decision the one statement made inside the
/// database (every line checked under the stock rows' locks, before any was changed): they
/// do not time per-line SQL, there is none. A span's duration is therefore next to nothing.
fn trace_line(line: &LineDecision) {
    let span = tracing::info_span!(
        "inventory reserve line",
        product.id = %line.sku,
        quantity.requested = line.requested,
        otel.status_code = tracing::field::Empty,
        otel.status_message = tracing::field::Empty,
    );
    let _entered = span.enter();
    if line.ok {
        return;
    }
    match line.available {
        Some(available) => {
            // A span event (the bridge turns the message into its name) on the line's span.
            tracing::info!(requested = line.requested, available, "insufficient_stock");
            mark_error(&span, "insufficient_stock");
        }
        None => mark_error(&span, "unknown_sku"),
    }
}

/// Gives back what the saga holds. With nothing held, leaves a tombstone so that a late
/// reservation is refused (one statement: `inventory.release_once`).
#[tracing::instrument(name = "inventory release", skip_all, fields(otel.kind = "internal"))]
pub async fn release(db: &Db, once: &Once<'_>) -> Result<Decided, sqlx::Error> {
    let args = json!([once.key, once.saga_id, once.reply, Uuid::new_v4()]);
    db.call(&calls::RELEASE, args).await
}

/// A SKU to create at start-up: its stock, and its catalog price and currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockSeed {
    /// The SKU.
    pub sku: String,
    /// Units created if the SKU is new.
    pub quantity: i32,
    /// Unit price in cents.
    pub price_cents: i64,
    /// ISO 4217 code of the price.
    pub currency: String,
}

/// Creates stock for SKUs that do not exist yet; existing stock is left alone (it is state,
/// not configuration), but the price and currency are set from the seed (they are the
/// operator's catalog).
pub async fn seed(pool: &PgPool, stock: &[StockSeed]) -> Result<(), sqlx::Error> {
    for seed in stock {
        sqlx::query(
            "INSERT INTO inventory.stock (sku, available, price_cents, currency) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (sku) DO UPDATE SET price_cents = EXCLUDED.price_cents, \
             currency = EXCLUDED.currency",
        )
        .bind(&seed.sku)
        .bind(seed.quantity)
        .bind(seed.price_cents)
        .bind(&seed.currency)
        .execute(pool)
        .await?;
    }
    Ok(())
}

/// Every SKU's catalog entry (price and currency).
pub async fn catalog(pool: &PgPool) -> Result<Vec<CatalogEntry>, sqlx::Error> {
    let rows: Vec<(String, i64, String)> =
        sqlx::query_as("SELECT sku, price_cents, currency FROM inventory.stock ORDER BY sku")
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(sku, price_cents, currency)| CatalogEntry {
            sku,
            price_cents,
            currency,
        })
        .collect())
}

/// Every SKU and its available stock.
pub async fn stock(pool: &PgPool) -> Result<Vec<(String, i32)>, sqlx::Error> {
    sqlx::query_as("SELECT sku, available FROM inventory.stock ORDER BY sku")
        .fetch_all(pool)
        .await
}
