//! The catalog as the door reads it: each SKU's price and currency, from the stream the
//! inventory service fills (`checkout.catalog.<sku>`, one message per SKU).
//!
//! A line whose price is not the catalog's is recorded as a `price_mismatch` event (sku,
//! expected, actual) on the current span, which callers open as their validation span.

use crate::validate::Rejection;
use async_nats::jetstream;
use checkout_shared::messages::{CatalogEntry, CheckoutRequested, LineItem};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a looked-up entry is trusted. Prices change, so entries cannot be kept forever
/// as SKUs once were; one second keeps the lookups off the hot path under load while a price
/// change reaches the door within a second.
const FRESH_FOR: Duration = Duration::from_secs(1);

/// The catalog could not be read (the checkout is retried, not refused).
pub type CatalogError = jetstream::stream::LastRawMessageError;

/// The catalog stream, with a short-lived cache of the entries read.
pub struct Catalog {
    stream: jetstream::stream::Stream<()>,
    cache: Mutex<HashMap<String, (Instant, CatalogEntry)>>,
}

impl Catalog {
    /// A catalog over the given stream.
    pub fn new(stream: jetstream::stream::Stream<()>) -> Self {
        Catalog {
            stream,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// One SKU's entry; `Ok(None)` when the catalog does not list it (or lists it in a form
    /// from before prices, which the inventory service replaces when it starts).
    pub async fn entry(&self, sku: &str) -> Result<Option<CatalogEntry>, CatalogError> {
        use jetstream::stream::LastRawMessageErrorKind;
        let cached = self.cache.lock().ok().and_then(|cache| {
            cache
                .get(sku)
                .filter(|(at, _)| at.elapsed() < FRESH_FOR)
                .map(|(_, entry)| entry.clone())
        });
        if cached.is_some() {
            return Ok(cached);
        }
        let Some(subject) = checkout_shared::subjects::catalog_entry(sku) else {
            return Ok(None);
        };
        let message = match self.stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => message,
            Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
            Err(err) => return Err(err),
        };
        let Ok(entry) = serde_json::from_slice::<CatalogEntry>(&message.payload) else {
            tracing::warn!(%sku, "catalog entry without a price; treating the sku as unknown");
            return Ok(None);
        };
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(sku.to_owned(), (Instant::now(), entry.clone()));
        }
        Ok(Some(entry))
    }

    /// The entry of the cart's line `index`, or its refusal as an unknown SKU naming the
    /// line's field (`items[1].sku`): the rule the door applies, and what a shop client
    /// that prices its cart from the catalog refuses before sending.
    pub async fn line(
        &self,
        index: usize,
        item: &LineItem,
    ) -> Result<Result<CatalogEntry, Rejection>, CatalogError> {
        Ok(self
            .entry(&item.sku)
            .await?
            .ok_or_else(|| Rejection::UnknownSku {
                field: format!("items[{index}].sku"),
                sku: item.sku.clone(),
            }))
    }

    /// Refuses a request naming an unknown SKU, a currency the catalog does not price a SKU
    /// in, or a line price that is not the catalog's. Every mismatched line is recorded as a
    /// `price_mismatch` event on the current span; the first one is the rejection.
    pub async fn check(
        &self,
        request: &CheckoutRequested,
    ) -> Result<Result<(), Rejection>, CatalogError> {
        let mut first_mismatch = None;
        for (i, item) in request.items.iter().enumerate() {
            let entry = match self.line(i, item).await? {
                Ok(entry) => entry,
                Err(unknown) => return Ok(Err(unknown)),
            };
            if entry.currency != request.currency {
                return Ok(Err(Rejection::CurrencyMismatch {
                    sku: item.sku.clone(),
                    expected: entry.currency,
                    actual: request.currency.clone(),
                }));
            }
            let actual = item.unit_price_cents.unwrap_or_default();
            if actual != entry.price_cents {
                tracing::info!(
                    sku = %item.sku,
                    expected = entry.price_cents,
                    actual,
                    "price_mismatch"
                );
                first_mismatch.get_or_insert(Rejection::PriceMismatch {
                    field: format!("items[{i}].unit_price_cents"),
                    sku: item.sku.clone(),
                    expected: entry.price_cents,
                    actual,
                });
            }
        }
        Ok(first_mismatch.map_or(Ok(()), Err))
    }
}
