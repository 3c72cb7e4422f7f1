//! `checkout-tools demo`: the whole system on one machine, a handful of checkouts that end every
//! way a checkout can end, each with its trace, then a clean shutdown.

use crate::local::{self, LocalStack};
use checkout_cli::client::{Client, describe};
use checkout_cli::common::{CLIENT_FILTER, DbArgs, NatsArgs, TelemetryArgs};
use checkout_cli::databases::{SagaDbArgs, WorkerDbArgs, services_env};
use checkout_cli::trace_links::{Links, TraceUiArgs};
use checkout_harness::{ReceivedSpan, SpanKind, trace_check};
use checkout_shared::messages::{CheckoutRequested, LineItem};
use clap::Args;
use serde::Serialize;
use std::process::ExitCode;
use std::time::Duration;
use uuid::Uuid;

/// Options of `checkout-tools demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    saga_db: SagaDbArgs,
    #[command(flatten)]
    worker_db: WorkerDbArgs,
    #[command(flatten)]
    telemetry: TelemetryArgs,
    /// Print one JSON object per saga on standard output (the narrative goes to stderr).
    #[arg(long)]
    json: bool,
    /// Stop the otelite the demo started (when nothing listened on the OTLP port) as it ends;
    /// by default it is left running for you to browse, with the command that stops it.
    #[arg(long)]
    stop_otelite: bool,
    #[command(flatten)]
    links: TraceUiArgs,
}

struct Scenario {
    name: &'static str,
    expect: &'static str,
    request: CheckoutRequested,
}

fn scenarios() -> Vec<Scenario> {
    let request =
        |customer: &str, token: &str, items: Vec<(&str, i32)>, amount| CheckoutRequested {
            checkout_id: Uuid::new_v4(),
            customer_id: customer.to_owned(),
            items: items
                .into_iter()
                .map(|(sku, quantity)| LineItem {
                    sku: sku.to_owned(),
                    quantity,
                    unit_price_cents: None,
                })
                .collect(),
            payment_token: token.to_owned(),
            amount_cents: amount,
            currency: String::new(),
        };
    vec![
        Scenario {
            name: "happy path",
            expect: "completed",
            request: request(
                "cust-ada",
                "tok_visa",
                vec![("SKU-MUG", 2), ("SKU-CAP", 1)],
                4_597,
            ),
        },
        Scenario {
            name: "card declined",
            expect: "compensated",
            request: request("cust-bob", "tok_decline", vec![("SKU-TEE", 1)], 2_500),
        },
        Scenario {
            name: "order refused",
            expect: "compensated",
            request: request("order-fails-cy", "tok_visa", vec![("SKU-MUG", 1)], 1_299),
        },
        Scenario {
            name: "out of stock",
            // Refused at the first step: nothing to undo.
            expect: "failed",
            request: request("cust-dee", "tok_visa", vec![("SKU-RARE", 50)], 99_900),
        },
        Scenario {
            name: "happy path",
            expect: "completed",
            request: request("cust-eve", "tok_visa", vec![("SKU-TEE", 3)], 7_500),
        },
    ]
}

#[derive(Debug, Serialize)]
struct SagaLine {
    scenario: &'static str,
    saga_id: Uuid,
    trace_id: String,
    outcome: String,
    /// Where the trace opens; none when no trace UI holds it.
    trace_url: Option<String>,
}

/// `checkout-tools demo`.
pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let say = |line: String| {
        if args.json {
            eprintln!("{line}")
        } else {
            println!("{line}")
        }
    };
    let databases = services_env(&args.db, &args.saga_db, &args.worker_db);
    let mut stack = LocalStack::up(
        &args.nats.nats_url,
        &databases,
        &args.links.otelite_url,
        &say,
    )
    .await?;
    let telemetry = args.telemetry.init("checkout-client", CLIENT_FILTER)?;
    // The demo shows every hop through the broker (its services trace all, too).
    checkout_shared::broker_trace::set_share(1.0);
    let outcome = drive(&args, &stack, telemetry.flusher(), &say).await;
    telemetry.shutdown().await;
    say("stopping what the demo started ...".into());
    for (name, code) in stack.down().await {
        say(format!(
            "  {name:<12} exited {}",
            code.map_or("by signal".to_owned(), |c| c.to_string())
        ));
    }
    if let Some(mut otelite) = stack.otelite.take() {
        let ui = otelite.ui_url();
        if args.stop_otelite {
            let code = otelite.terminate(Duration::from_secs(10))?;
            say(format!(
                "  {:<12} exited {} (--stop-otelite), its storage removed",
                "otelite",
                code.map_or("by signal".to_owned(), |c| c.to_string())
            ));
        } else {
            let stop = otelite.leave_running();
            say(format!(
                "\notelite is still running: the traces, logs and metrics of this run are at \
                 {ui}/#traces\nstop it with: {stop}\n(or run the demo with --stop-otelite)"
            ));
        }
    }
    outcome
}

async fn drive(
    args: &DemoArgs,
    stack: &LocalStack,
    flusher: checkout_shared::telemetry::SpanFlusher,
    say: &impl Fn(String),
) -> anyhow::Result<ExitCode> {
    let client = Client::connect(stack.admin_url(), flusher).await?;
    let links = args.links.resolve().await;
    say(match &links {
        Links::Otelite(otelite) => format!("trace UI     otelite at {}", otelite.base()),
        Links::Jaeger(base) => format!("trace UI     Jaeger at {base}"),
        Links::Nowhere(why) => format!("trace UI     none: {why}"),
    });
    let rejected = local::rejected_reasons(client.nats()).await?;
    let scenarios = scenarios();
    let mut followed = Vec::new();
    for scenario in &scenarios {
        let events = client.follow(scenario.request.checkout_id);
        let trace_id = client.publish(&scenario.request).await?;
        followed.push((scenario, trace_id, events));
    }
    say_running(&links, &followed, say).await;
    let bad = br#"{"checkout_id":"7d0c3c55-5a6f-4d59-9d1e-3f1b2c3d4e5f","customer_id":"cust-x","items":[{"sku":"SKU-MUG","quantity":-1,"unit_price_cents":100}],"payment_token":"tok_visa","amount_cents":-100,"currency":"EUR"}"#;
    client
        .publish_raw("demo-bad-input".into(), bytes::Bytes::from_static(bad))
        .await?;
    let mut all_as_expected = true;
    for (scenario, trace_id, events) in followed {
        let saga_id = scenario.request.checkout_id;
        let mut steps = Vec::new();
        let last = client
            .wait(saga_id, events, Duration::from_secs(60), |e| {
                steps.push(describe(e))
            })
            .await;
        let outcome = last
            .map(|e| e.kind.as_str().to_owned())
            .unwrap_or_else(|| "timed_out".into());
        all_as_expected &= outcome == scenario.expect;
        let link = links.link(&trace_id).await;
        say(format!(
            "\n{:<12} {}  saga {saga_id}",
            outcome.to_uppercase(),
            scenario.name
        ));
        for step in steps {
            say(format!("    {step}"));
        }
        say(format!("    trace {trace_id}"));
        match &link {
            Ok(link) => {
                say(format!("    open  {}", link.url));
                for note in &link.notes {
                    say(format!("          {note}"));
                }
            }
            Err(why) => say(format!("    link  none: {why}")),
        }
        if let (Some(_), Links::Otelite(otelite)) = (&stack.otelite, &links) {
            // The saga span is in (the link waited for it); let the workers' last batch land.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let spans = otelite
                .trace(&trace_id)
                .await
                .ok()
                .flatten()
                .unwrap_or_default();
            let spans: Vec<_> = spans.iter().map(received).collect();
            for line in trace_check::render_tree(&spans).lines() {
                say(format!("    | {line}"));
            }
        }
        if let Some(receiver) = &stack.receiver {
            let whole = receiver
                .wait_for(Duration::from_secs(10), |spans| {
                    spans
                        .iter()
                        .any(|s| s.trace_id == trace_id && s.name == "saga checkout")
                })
                .await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let spans = receiver.trace(&trace_id);
            if whole {
                for line in trace_check::render_tree(&spans).lines() {
                    say(format!("    | {line}"));
                }
            }
        }
        if args.json {
            let line = SagaLine {
                scenario: scenario.name,
                saga_id,
                trace_id,
                outcome,
                trace_url: link.ok().map(|l| l.url),
            };
            println!("{}", serde_json::to_string(&line)?);
        }
    }
    if let Ok(Some(reason)) = tokio::time::timeout(Duration::from_secs(5), rejected).await {
        say(format!("\nREJECTED     bad input (quantity -1): {reason}"));
    }
    say(String::new());
    say(stack.trace_hint(matches!(links, Links::Nowhere(_))));
    Ok(if all_as_expected {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The link of each saga just sent, while it runs: its trace is whole from its start.
async fn say_running<E>(links: &Links, followed: &[(&Scenario, String, E)], say: &impl Fn(String)) {
    let Links::Otelite(otelite) = links else {
        return;
    };
    say(format!(
        "\nsent {} checkouts; their traces are whole while they run, in {}/#traces:",
        followed.len(),
        otelite.base()
    ));
    for (scenario, trace_id, _) in followed {
        let at = match links.link_running(trace_id).await {
            Ok(_) => otelite.trace_url(trace_id),
            Err(why) => format!("none: {why}"),
        };
        say(format!(
            "  running    {:<14} trace {trace_id}  {at}",
            scenario.name
        ));
    }
}

/// An otelite span as the harness's, for the tree printout.
fn received(span: &checkout_cli::otelite::Span) -> ReceivedSpan {
    ReceivedSpan {
        trace_id: span.trace_id.clone(),
        span_id: span.span_id.clone(),
        parent_span_id: span.parent().map(str::to_owned),
        name: span.name.clone(),
        kind: SpanKind::Unspecified,
        service_name: span.service().to_owned(),
        attributes: span.attributes.clone().into_iter().collect(),
        error: false,
        status_message: String::new(),
        start_unix_nanos: u64::try_from(span.start_time).unwrap_or(0),
        end_unix_nanos: u64::try_from(span.end_time).unwrap_or(0),
        links: vec![],
        events: vec![],
    }
}
