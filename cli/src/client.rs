//! The client side: publish checkouts (each the root of its own trace), follow sagas through
//! their lifecycle events, and watch everything that happens.

use anyhow::Context as _;
use bytes::Bytes;
use checkout_door::catalog::Catalog;
use checkout_door::validate::{self, Rejection};
use checkout_shared::RejectionCode;
use checkout_shared::envelope::MSG_ID;
use checkout_shared::messages::{CheckoutRequested, LifecycleEvent, LifecycleKind};
use checkout_shared::messaging::{self, Outgoing};
use checkout_shared::streams::CATALOG_STREAM;
use checkout_shared::subjects;
use checkout_shared::telemetry::SpanFlusher;
use futures::StreamExt;
use opentelemetry::trace::TraceContextExt;
use opentelemetry::{Context, KeyValue};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use uuid::Uuid;

/// A connection that publishes checkouts and follows their sagas.
#[derive(Clone)]
pub struct Client {
    nats: async_nats::Client,
    js: async_nats::jetstream::Context,
    flusher: SpanFlusher,
    waiters: Arc<Mutex<HashMap<Uuid, mpsc::UnboundedSender<LifecycleEvent>>>>,
    /// The catalog as the door reads it (prices and currencies, fresh within a second).
    catalog: Arc<Catalog>,
    /// Whether a checkout starts a trace; off, the benchmark measures the system untraced.
    traced: bool,
}

impl Client {
    /// Connects and starts following lifecycle events.
    pub async fn connect(url: &str, flusher: SpanFlusher) -> anyhow::Result<Self> {
        let nats = checkout_shared::connect::connect(url, "checkout-client", false)
            .await
            .with_context(|| {
                format!(
                    "is nats-server running at {}? (see README: quick start)",
                    checkout_shared::connect::redacted(url)
                )
            })?;
        let js = checkout_shared::connect::jetstream(nats.clone());
        let mut events = nats.subscribe(format!("{}.>", subjects::LIFECYCLE)).await?;
        let waiters: Arc<Mutex<HashMap<Uuid, mpsc::UnboundedSender<LifecycleEvent>>>> =
            Arc::default();
        let routes = waiters.clone();
        tokio::spawn(async move {
            while let Some(message) = events.next().await {
                let Ok(event) = serde_json::from_slice::<LifecycleEvent>(&message.payload) else {
                    continue;
                };
                if let Ok(routes) = routes.lock()
                    && let Some(waiter) = routes.get(&event.saga_id)
                {
                    let _ = waiter.send(event);
                }
            }
        });
        nats.flush().await?;
        let catalog = Arc::new(Catalog::new(js.get_stream_no_info(CATALOG_STREAM).await?));
        Ok(Client {
            nats,
            js,
            flusher,
            waiters,
            catalog,
            traced: true,
        })
    }

    /// Completes a cart the way a shop front end does, from the catalog the door checks
    /// against: a line without a price gets the catalog's, an empty currency becomes the
    /// catalog's (of the first line it lists), and the amount becomes the sum of the lines
    /// when a line had no price or the amount is 0. A cart with every line priced, a currency
    /// and an amount is left as it is, so that a stale price or a wrong amount reaches the
    /// door as sent.
    ///
    /// A SKU the catalog does not list is refused as the door refuses it (`unknown_sku`,
    /// naming the line) when the client needs it (to price its line, or for the currency when
    /// no line is listed); a priced line is sent as it is, for the door to judge.
    pub async fn price(
        &self,
        request: &mut CheckoutRequested,
    ) -> anyhow::Result<Result<(), Rejection>> {
        let priced = request.items.iter().all(|i| i.unit_price_cents.is_some());
        if priced && !request.currency.is_empty() && request.amount_cents != 0 {
            return Ok(Ok(()));
        }
        let mut unlisted = None;
        for (i, item) in request.items.iter_mut().enumerate() {
            if item.unit_price_cents.is_some() && !request.currency.is_empty() {
                continue;
            }
            match self.catalog.line(i, item).await? {
                Ok(entry) => {
                    item.unit_price_cents.get_or_insert(entry.price_cents);
                    if request.currency.is_empty() {
                        request.currency = entry.currency;
                    }
                }
                Err(unknown) if item.unit_price_cents.is_none() => return Ok(Err(unknown)),
                Err(unknown) => {
                    unlisted.get_or_insert(unknown);
                }
            }
        }
        if let (true, Some(unknown)) = (request.currency.is_empty(), unlisted) {
            return Ok(Err(unknown));
        }
        if !priced || request.amount_cents == 0 {
            request.amount_cents = validate::sum_of_lines(&request.items);
        }
        Ok(Ok(()))
    }

    /// This client without tracing: checkouts carry no trace context and no publish span is
    /// made (the services then start untraced sagas; with their export off, nothing is sent).
    pub fn untraced(mut self) -> Self {
        self.traced = false;
        self.flusher = SpanFlusher::disabled();
        self
    }

    /// The underlying NATS connection.
    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    /// Starts following a saga's events (call before publishing, so that none is missed).
    pub fn follow(&self, saga_id: Uuid) -> mpsc::UnboundedReceiver<LifecycleEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut waiters) = self.waiters.lock() {
            waiters.insert(saga_id, tx);
        }
        rx
    }

    /// Stops following a saga.
    pub fn forget(&self, saga_id: Uuid) {
        if let Ok(mut waiters) = self.waiters.lock() {
            waiters.remove(&saga_id);
        }
    }

    /// Publishes a checkout as the root span of a new trace; returns its trace id. The cart
    /// is completed from the catalog first ([`Client::price`]); one it cannot complete (an
    /// unknown SKU) is an error, and is not sent.
    pub async fn publish(&self, request: &CheckoutRequested) -> anyhow::Result<String> {
        let mut request = request.clone();
        if let Err(rejection) = self.price(&mut request).await? {
            anyhow::bail!(
                "{}",
                refusal_line(
                    rejection.code(),
                    rejection.field().as_deref(),
                    &rejection.to_string()
                )
            );
        }
        self.send(&request).await
    }

    /// Publishes a checkout exactly as it is; returns its trace id.
    pub async fn send(&self, request: &CheckoutRequested) -> anyhow::Result<String> {
        let payload = Bytes::from(serde_json::to_vec(request)?);
        self.publish_raw(request.checkout_id.to_string(), payload)
            .await
    }

    /// Publishes any body on `checkout.requested` (bad input included); returns the trace id
    /// (empty when untraced).
    pub async fn publish_raw(&self, msg_id: String, payload: Bytes) -> anyhow::Result<String> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(MSG_ID, msg_id.as_str());
        if !self.traced {
            let outgoing = Outgoing {
                subject: subjects::CHECKOUT_REQUESTED.to_owned(),
                msg_id,
                headers,
                payload,
            };
            messaging::send(&self.js, outgoing).await?;
            return Ok(String::new());
        }
        let cx = messaging::stamp_producer_span(
            &Context::new(),
            subjects::CHECKOUT_REQUESTED,
            &msg_id,
            &mut headers,
            vec![KeyValue::new("saga.id", msg_id.clone())],
        );
        let trace_id = cx.span().span_context().trace_id().to_string();
        self.flusher.flush().await;
        let outgoing = Outgoing {
            subject: subjects::CHECKOUT_REQUESTED.to_owned(),
            msg_id,
            headers,
            payload,
        };
        messaging::send(&self.js, outgoing).await?;
        Ok(trace_id)
    }

    /// Waits for a followed saga's last event (completed, compensated, failed or rejected), printing
    /// each event with `on_event`. `None` when the wait times out.
    pub async fn wait(
        &self,
        saga_id: Uuid,
        mut events: mpsc::UnboundedReceiver<LifecycleEvent>,
        timeout: Duration,
        mut on_event: impl FnMut(&LifecycleEvent),
    ) -> Option<LifecycleEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        let last = loop {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(event)) => {
                    on_event(&event);
                    // Stuck is a flag on a saga whose undo is still retried, not an end.
                    if event.kind.is_terminal() {
                        break Some(event);
                    }
                }
                Ok(None) | Err(_) => break None,
            }
        };
        self.forget(saga_id);
        last
    }
}

/// One line for a lifecycle event.
pub fn describe(event: &LifecycleEvent) -> String {
    match (event.kind, event.step, event.phase, event.rejection) {
        (LifecycleKind::Step, Some(step), Some(phase), _) => {
            let verb = if phase == checkout_shared::Phase::Undo {
                "compensate"
            } else {
                "step"
            };
            format!("{verb} {:<16} {}", step.action_name(), event.detail)
        }
        (LifecycleKind::Rejected, _, _, Some(code)) => {
            refusal_line(code, event.field.as_deref(), &event.detail)
        }
        (kind, ..) if event.detail.is_empty() => kind.as_str().to_owned(),
        (kind, ..) => format!("{} ({})", kind.as_str(), event.detail),
    }
}

/// How a refused checkout reads, whether the door or the client refused it: the reason code
/// and the field at fault, as the gateway's problem response names them, then why:
/// `rejected unknown_sku items[1].sku: unknown sku "SKU-NOPE"`.
pub fn refusal_line(code: RejectionCode, field: Option<&str>, reason: &str) -> String {
    match field {
        Some(field) => format!("rejected {code} {field}: {reason}"),
        None => format!("rejected {code}: {reason}"),
    }
}
