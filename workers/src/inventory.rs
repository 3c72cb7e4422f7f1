//! Inventory: holds stock for a saga and gives it back. Never oversells: a reservation is a
//! conditional decrement, and the schema forbids negative stock.

use crate::error::ApplyError;
use checkout_shared::messages::{CatalogEntry, LineItem, Refusal, RefusalCode};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Decrements stock for every line, or refuses the whole cart.
#[tracing::instrument(name = "inventory reserve", skip_all, fields(otel.kind = "internal"))]
pub async fn reserve(
    conn: &mut PgConnection,
    saga_id: Uuid,
    items: &[LineItem],
) -> Result<Uuid, ApplyError> {
    if let Some(state) = reservation_state(conn, saga_id).await? {
        // 'void' is the tombstone of a release that came first; 'released' is the same
        // decision made after a reservation whose record was cleared.
        let code = match state.as_str() {
            "held" => RefusalCode::AlreadyDone,
            _ => RefusalCode::CancelledBeforeDone,
        };
        return Err(ApplyError::Refused(Refusal::new(
            code,
            format!("reservation already {state} for this saga"),
        )));
    }
    // Lock rows in one order so that concurrent carts sharing SKUs cannot deadlock.
    let mut lines = items.to_vec();
    lines.sort_by(|a, b| a.sku.cmp(&b.sku));
    for line in &lines {
        let updated = sqlx::query(
            "UPDATE inventory.stock SET available = available - $2, updated_at = now() \
             WHERE sku = $1 AND available >= $2",
        )
        .bind(&line.sku)
        .bind(line.quantity)
        .execute(&mut *conn)
        .await?;
        if updated.rows_affected() == 0 {
            let known: Option<i32> =
                sqlx::query_scalar("SELECT available FROM inventory.stock WHERE sku = $1")
                    .bind(&line.sku)
                    .fetch_optional(&mut *conn)
                    .await?;
            return Err(ApplyError::Refused(match known {
                Some(available) => Refusal::new(
                    RefusalCode::OutOfStock,
                    format!(
                        "{} wants {}, {available} available",
                        line.sku, line.quantity
                    ),
                ),
                None => Refusal::new(RefusalCode::UnknownSku, format!("unknown sku {}", line.sku)),
            }));
        }
    }
    let reservation_id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO inventory.reservations (saga_id, reservation_id, items, state) \
         VALUES ($1, $2, $3, 'held')",
    )
    .bind(saga_id)
    .bind(reservation_id)
    .bind(sqlx::types::Json(&lines))
    .execute(&mut *conn)
    .await?;
    Ok(reservation_id)
}

/// Gives back what the saga holds. With nothing held, leaves a tombstone so that a late
/// reservation is refused.
#[tracing::instrument(name = "inventory release", skip_all, fields(otel.kind = "internal"))]
pub async fn release(conn: &mut PgConnection, saga_id: Uuid) -> Result<Option<Uuid>, ApplyError> {
    let held: Option<(Uuid, sqlx::types::Json<Vec<LineItem>>, String)> = sqlx::query_as(
        "SELECT reservation_id, items, state FROM inventory.reservations \
         WHERE saga_id = $1 FOR UPDATE",
    )
    .bind(saga_id)
    .fetch_optional(&mut *conn)
    .await?;
    match held {
        Some((reservation_id, items, state)) if state == "held" => {
            for line in items.0.iter() {
                sqlx::query(
                    "UPDATE inventory.stock SET available = available + $2, updated_at = now() \
                     WHERE sku = $1",
                )
                .bind(&line.sku)
                .bind(line.quantity)
                .execute(&mut *conn)
                .await?;
            }
            sqlx::query(
                "UPDATE inventory.reservations SET state = 'released', released_at = now() \
                 WHERE saga_id = $1",
            )
            .bind(saga_id)
            .execute(&mut *conn)
            .await?;
            Ok(Some(reservation_id))
        }
        Some(_) => Ok(None),
        None => {
            sqlx::query(
                "INSERT INTO inventory.reservations (saga_id, reservation_id, items, state) \
                 VALUES ($1, $2, '[]', 'void')",
            )
            .bind(saga_id)
            .bind(Uuid::new_v4())
            .execute(&mut *conn)
            .await?;
            Ok(None)
        }
    }
}

async fn reservation_state(
    conn: &mut PgConnection,
    saga_id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT state FROM inventory.reservations WHERE saga_id = $1")
        .bind(saga_id)
        .fetch_optional(&mut *conn)
        .await
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

/// Sets the stock of a SKU, creating it if needed (operators and tests).
pub async fn set_stock(pool: &PgPool, sku: &str, quantity: i32) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO inventory.stock (sku, available) VALUES ($1, $2) \
         ON CONFLICT (sku) DO UPDATE SET available = EXCLUDED.available, updated_at = now()",
    )
    .bind(sku)
    .bind(quantity)
    .execute(pool)
    .await?;
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
