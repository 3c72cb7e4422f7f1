//! `checkout publish`: one checkout, its cart completed as a shop completes it
//! ([`Client::price`]), published as the root of its trace; with `--wait`, followed to its end.
//!
//! ```text
//!  --item lines ─▶ Client::price (catalog) ─no─▶ rejected unknown_sku items[i].sku (not sent)
//!                        │ yes
//!                        ▼
//!      --amount-cents, --currency as given ─▶ checkout.requested ─▶ (--wait) lifecycle events
//!                                                                   until completed,
//!                                                                   compensated, failed or
//!                                                                   rejected
//! ```

use crate::client::{Client, describe, refusal_line};
use crate::common::{CLIENT_FILTER, NatsArgs, TelemetryArgs};
use crate::trace_links::TraceUiArgs;
use anyhow::Context as _;
use checkout_shared::messages::{CheckoutRequested, LifecycleKind, LineItem};
use checkout_shared::telemetry::SpanFlusher;
use clap::Args;
use std::process::ExitCode;
use std::time::Duration;
use uuid::Uuid;

/// Options of `checkout publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    telemetry: TelemetryArgs,
    /// A cart line, `SKU:QTY[@UNIT_PRICE_CENTS]`; repeat for more lines. A line without a
    /// price gets the catalog's; a line with one keeps it.
    #[arg(long = "item", default_value = "SKU-MUG:1")]
    items: Vec<String>,
    /// The customer (one starting with `order-fails` has its order refused).
    #[arg(long, default_value = "cust-42")]
    customer: String,
    /// The payment token (`tok_decline` is always declined).
    #[arg(long, default_value = "tok_visa")]
    token: String,
    /// The amount, in cents, sent as given (default: the sum of the lines).
    #[arg(long, allow_negative_numbers = true)]
    amount_cents: Option<i64>,
    /// The currency, sent as given (default: the catalog's).
    #[arg(long)]
    currency: Option<String>,
    /// Follow the saga step by step until it ends, and print its outcome.
    #[arg(long)]
    wait: bool,
    /// The checkout's id, which becomes its saga id (default: a new one). Publishing the same
    /// id again is the same checkout: it is never done twice.
    #[arg(long)]
    checkout_id: Option<Uuid>,
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
        checkout_id: args.checkout_id.unwrap_or_else(Uuid::new_v4),
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
    if let Err(rejection) = client.price(&mut request).await? {
        let (code, field) = (rejection.code(), rejection.field());
        let reason = rejection.to_string();
        if args.json {
            let out = serde_json::json!({
                "outcome": LifecycleKind::Rejected.as_str(), "sent": false,
                "rejection": code, "field": field, "detail": reason,
            });
            println!("{out}");
        } else {
            println!("{}", refusal_line(code, field.as_deref(), &reason));
            println!("(not sent: the catalog does not list it)");
        }
        return Ok(ExitCode::FAILURE);
    }
    // Given on the command line: sent as given, for the door to judge.
    if let Some(amount) = args.amount_cents {
        request.amount_cents = amount;
    }
    let saga_id = request.checkout_id;
    let events = client.follow(saga_id);
    let trace_id = client.send(&request).await?;
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
    let kind = last.map(|e| e.kind);
    let outcome = kind.map(LifecycleKind::as_str).unwrap_or("timed_out");
    if json {
        let out = serde_json::json!({
            "saga_id": saga_id, "trace_id": trace_id, "outcome": outcome, "events": seen,
        });
        println!("{out}");
    } else {
        println!("outcome: {outcome}");
        // Only now: a trace UI holds the trace once the saga has ended and flushed its spans.
        // A refused checkout has no saga span to wait for: it ends at once.
        if kind != Some(LifecycleKind::Rejected) {
            for line in args.links.resolve().await.lines(&trace_id).await {
                println!("{line}");
            }
        }
        if kind.is_none() {
            println!(
                "(no lifecycle event: is the orchestrator running? try `checkout watch {saga_id}`)"
            );
        }
    }
    // A checkout that ran (completed, compensated, failed) was answered; one refused at the
    // door or never answered was not.
    Ok(match kind {
        None | Some(LifecycleKind::Rejected) => ExitCode::FAILURE,
        Some(_) => ExitCode::SUCCESS,
    })
}
