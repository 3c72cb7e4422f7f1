//! The client side: publish checkouts (each the root of its own trace), follow sagas through
//! their lifecycle events, and watch everything that happens.

use crate::common::{CLIENT_FILTER, NatsArgs, TelemetryArgs};
use crate::trace_links::TraceUiArgs;
use anyhow::Context as _;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use bytes::Bytes;
use checkout_shared::RejectionCode;
use checkout_shared::envelope::MSG_ID;
use checkout_shared::messages::{
    CatalogEntry, CheckoutRequested, LifecycleEvent, LifecycleKind, LineItem,
};
use checkout_shared::messaging::{self, Outgoing};
use checkout_shared::streams::CATALOG_STREAM;
use checkout_shared::subjects;
use checkout_shared::telemetry::SpanFlusher;
use clap::Args;
use futures::StreamExt;
use opentelemetry::trace::TraceContextExt;
use opentelemetry::{Context, KeyValue};
use std::collections::HashMap;
use std::process::ExitCode;
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
    prices: Arc<Mutex<HashMap<String, CatalogEntry>>>,
    /// Whether a checkout starts a trace; off, the benchmark measures the system untraced.
    traced: bool,
}

impl Client {
    /// Connects and starts following lifecycle events.
    pub async fn connect(url: &str, flusher: SpanFlusher) -> anyhow::Result<Self> {
        let nats = checkout_shared::connect::connect(url, "checkout-client", false)
            .await
            .with_context(|| {
                format!("is nats-server running at {url}? (see README: quick start)")
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
        Ok(Client {
            nats,
            js,
            flusher,
            waiters,
            prices: Arc::default(),
            traced: true,
        })
    }

    /// A SKU's catalog entry (price and currency), read once from the catalog stream;
    /// `None` if the catalog does not list it.
    pub async fn catalog_entry(&self, sku: &str) -> anyhow::Result<Option<CatalogEntry>> {
        if let Some(entry) = self.prices.lock().ok().and_then(|p| p.get(sku).cloned()) {
            return Ok(Some(entry));
        }
        let Some(subject) = subjects::catalog_entry(sku) else {
            return Ok(None);
        };
        let stream = self.js.get_stream_no_info(CATALOG_STREAM).await?;
        let entry = match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => serde_json::from_slice::<CatalogEntry>(&message.payload).ok(),
            Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => None,
            Err(err) => return Err(err.into()),
        };
        if let (Some(entry), Ok(mut prices)) = (&entry, self.prices.lock()) {
            prices.insert(sku.to_owned(), entry.clone());
        }
        Ok(entry)
    }

    /// Completes a cart the way a shop front end does: lines without a price get the
    /// catalog's, and then the amount is the sum of the lines and the currency the catalog's.
    /// A cart whose lines all carry a price is left as it is, so that a stale price or a
    /// wrong amount reaches the door as sent. A SKU the catalog does not list keeps no price
    /// (the door refuses it).
    pub async fn price(&self, request: &mut CheckoutRequested) -> anyhow::Result<()> {
        if request.items.iter().all(|i| i.unit_price_cents.is_some()) {
            return Ok(());
        }
        let mut sum = 0;
        for item in &mut request.items {
            if item.unit_price_cents.is_none()
                && let Some(entry) = self.catalog_entry(&item.sku).await?
            {
                item.unit_price_cents = Some(entry.price_cents);
                if request.currency.is_empty() {
                    request.currency = entry.currency;
                }
            }
            sum += item.unit_price_cents.unwrap_or(0) * i64::from(item.quantity);
        }
        request.amount_cents = sum;
        Ok(())
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

    /// Publishes a checkout as the root span of a new trace; returns its trace id. Lines
    /// without a price are priced from the catalog first (see [`Client::price`]).
    pub async fn publish(&self, request: &CheckoutRequested) -> anyhow::Result<String> {
        let mut request = request.clone();
        self.price(&mut request).await?;
        let payload = Bytes::from(serde_json::to_vec(&request)?);
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

    /// Waits for a followed saga's last event (completed, compensated or stuck), printing
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

/// Options of `checkout publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    telemetry: TelemetryArgs,
    /// A cart line, `SKU:QTY[@UNIT_PRICE_CENTS]`; repeat for more lines. Lines without a
    /// price are priced from the catalog (and the amount is then their sum).
    #[arg(long = "item", default_value = "SKU-MUG:1")]
    items: Vec<String>,
    /// The customer (one starting with `order-fails` has its order refused).
    #[arg(long, default_value = "cust-42")]
    customer: String,
    /// The payment token (`tok_decline` is always declined).
    #[arg(long, default_value = "tok_visa")]
    token: String,
    /// The amount, in cents (default: the sum of the lines).
    #[arg(long, allow_negative_numbers = true)]
    amount_cents: Option<i64>,
    /// The currency (default: the catalog's).
    #[arg(long)]
    currency: Option<String>,
    /// Follow the saga step by step until it ends, and print its outcome.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits, in seconds.
    #[arg(long, default_value_t = 60)]
    timeout_secs: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    links: TraceUiArgs,
}

/// Parses `SKU:QTY[@UNIT_PRICE_CENTS]`.
pub fn parse_item(spec: &str) -> anyhow::Result<LineItem> {
    let (spec_line, price) = match spec.split_once('@') {
        Some((line, price)) => (
            line,
            Some(
                price
                    .parse()
                    .with_context(|| format!("price in {spec:?}"))?,
            ),
        ),
        None => (spec, None),
    };
    let (sku, qty) = spec_line.split_once(':').unwrap_or((spec_line, "1"));
    let quantity = qty
        .parse()
        .with_context(|| format!("quantity in {spec:?}"))?;
    Ok(LineItem {
        sku: sku.to_owned(),
        quantity,
        unit_price_cents: price,
    })
}

/// `checkout publish`.
pub async fn publish(args: PublishArgs) -> anyhow::Result<ExitCode> {
    let telemetry = args.telemetry.init("checkout-client", CLIENT_FILTER)?;
    let result = publish_inner(&args, telemetry.flusher()).await;
    telemetry.shutdown().await;
    result
}

async fn publish_inner(args: &PublishArgs, flusher: SpanFlusher) -> anyhow::Result<ExitCode> {
    let client = Client::connect(&args.nats.nats_url, flusher).await?;
    let mut request = CheckoutRequested {
        checkout_id: Uuid::new_v4(),
        customer_id: args.customer.clone(),
        items: args
            .items
            .iter()
            .map(|s| parse_item(s))
            .collect::<anyhow::Result<_>>()?,
        payment_token: args.token.clone(),
        amount_cents: 0,
        currency: args.currency.clone().unwrap_or_default(),
    };
    client.price(&mut request).await?;
    if let Some(amount) = args.amount_cents {
        request.amount_cents = amount;
    }
    let saga_id = request.checkout_id;
    let events = client.follow(saga_id);
    let trace_id = client.publish(&request).await?;
    if !args.json {
        println!("saga  {saga_id}\ntrace {trace_id}");
    }
    if !args.wait {
        if args.json {
            println!(
                "{}",
                serde_json::json!({"saga_id": saga_id, "trace_id": trace_id})
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let json = args.json;
    let mut seen = Vec::new();
    let last = client
        .wait(
            saga_id,
            events,
            Duration::from_secs(args.timeout_secs),
            |event| {
                if !json {
                    println!("  {}", describe(event));
                }
                seen.push(event.clone());
            },
        )
        .await;
    let outcome = last.map(|e| e.kind.as_str()).unwrap_or("timed_out");
    if json {
        let out = serde_json::json!({
            "saga_id": saga_id, "trace_id": trace_id, "outcome": outcome, "events": seen,
        });
        println!("{out}");
    } else {
        println!("outcome: {outcome}");
        // Only now: a trace UI holds the trace once the saga has ended and flushed its spans.
        for line in args.links.resolve().await.lines(&trace_id).await {
            println!("{line}");
        }
        if outcome == "timed_out" {
            println!(
                "(no lifecycle event: is the orchestrator running? was it rejected? try `checkout watch`)"
            );
        }
    }
    Ok(if outcome == "timed_out" {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
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
