//! The shape of a checkout's trace, read from the spans that really went out over OTLP.

use crate::support::{Options, Stack, request, trace_with};
use checkout_harness::trace_check::check_tree;
use checkout_harness::{ReceivedSpan, SpanKind};
use std::collections::BTreeSet;

fn named<'a>(spans: &'a [ReceivedSpan], name: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn assert_whole(spans: &[ReceivedSpan], saga_id: &str, services: &[&str]) {
    let problems = check_tree(spans);
    assert!(problems.is_empty(), "trace is not whole: {problems:#?}");
    let everywhere: BTreeSet<_> = crate::support::receiver()
        .spans()
        .into_iter()
        .filter(|s| s.attr("saga.id") == Some(saga_id))
        .map(|s| s.trace_id)
        .collect();
    assert_eq!(
        everywhere.len(),
        1,
        "the saga's spans span several traces: {everywhere:?}"
    );
    let seen: BTreeSet<_> = spans.iter().map(|s| s.service_name.as_str()).collect();
    for service in services {
        assert!(
            seen.contains(service),
            "no span from {service}; saw {seen:?}"
        );
    }
    let sagas = named(spans, "saga checkout");
    assert_eq!(sagas.len(), 1, "one saga-level span");
    for span in spans.iter().filter(|s| s.kind == SpanKind::Producer) {
        assert!(span.name.starts_with("publish checkout."), "{}", span.name);
        assert_eq!(span.attr("messaging.system"), Some("nats"));
        assert!(span.attr("messaging.destination.name").is_some());
        assert!(span.attr("messaging.message.id").is_some());
    }
    let consumers: Vec<_> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Consumer)
        .collect();
    assert!(!consumers.is_empty());
    for span in consumers {
        assert!(span.name.starts_with("process checkout."), "{}", span.name);
        assert_eq!(span.attr("messaging.system"), Some("nats"));
        assert_eq!(span.attr("messaging.operation.type"), Some("process"));
        assert!(span.attr("messaging.consumer.group.name").is_some());
        // From the JetStream metadata: the stream that held it and how long it waited there.
        assert!(
            span.attr("messaging.nats.stream").is_some(),
            "{}",
            span.name
        );
        let waited: f64 = span
            .attr("messaging.nats.stream_wait_ms")
            .unwrap()
            .parse()
            .unwrap();
        assert!(waited >= 0.0, "{}: {waited}", span.name);
        let parent = spans
            .iter()
            .find(|p| Some(&p.span_id) == span.parent_span_id.as_ref());
        assert_eq!(
            parent.map(|p| p.kind),
            Some(SpanKind::Producer),
            "{} is a child of its producer",
            span.name
        );
    }
    let roots: Vec<_> = spans
        .iter()
        .filter(|s| s.parent_span_id.is_none())
        .collect();
    assert_eq!(
        roots[0].service_name, "checkout-client",
        "the client's publish is the root"
    );
    for worker in checkout_shared::steps::worker_kinds().filter(|w| services.contains(w)) {
        let process: Vec<_> = spans
            .iter()
            .filter(|s| s.service_name == worker && s.kind == SpanKind::Consumer)
            .collect();
        let has_db_child = process.iter().any(|p| {
            spans.iter().any(|c| {
                c.parent_span_id.as_ref() == Some(&p.span_id)
                    && c.attr("db.system.name") == Some("postgresql")
            })
        });
        assert!(
            has_db_child,
            "{worker}'s database work is a child of its process span"
        );
    }
}

/// Runs one checkout of one `(sku, amount)` on a fresh stack, checks it ends as `expected`
/// and that its trace is whole; returns the stack and the trace.
async fn whole_trace_of(
    customer: &str,
    (sku, amount): (&str, i64),
    expected: &str,
) -> (Stack, Vec<ReceivedSpan>) {
    let stack = Stack::start(Options::default()).await;
    let client = stack.client().await;
    let checkout = request(customer, "tok_visa", &[(sku, 1)], amount);
    let (outcome, trace_id) = stack.checkout(&client, &checkout).await;
    assert_eq!(outcome, expected);
    // A completed checkout's confirmation follows it: its step span ends the trace.
    let (last, services): (_, &[&str]) = if expected == "completed" {
        (
            "step notification.send",
            &[
                "checkout-client",
                "orchestrator",
                "inventory",
                "payment",
                "order",
                "notification",
            ],
        )
    } else {
        (
            "saga checkout",
            &[
                "checkout-client",
                "orchestrator",
                "inventory",
                "payment",
                "order",
            ],
        )
    };
    let spans = trace_with(&trace_id, last).await;
    assert_whole(&spans, &checkout.checkout_id.to_string(), services);
    (stack, spans)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_checkout_is_one_whole_trace() {
    let (stack, spans) = whole_trace_of("cust-t", ("SKU-MUG", 700), "completed").await;
    for step in [
        "step inventory.reserve",
        "step payment.charge",
        "step order.create",
    ] {
        let step = named(&spans, step);
        assert_eq!(step.len(), 1);
        assert!(!step[0].error);
        assert_eq!(step[0].attr("saga.outcome"), Some("succeeded"));
    }
    assert!(spans.iter().all(|s| !s.name.starts_with("compensate")));
    let saga = named(&spans, "saga checkout")[0];
    assert_eq!(saga.attr("saga.outcome"), Some("completed"));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compensated_checkout_is_one_whole_trace_with_a_span_per_compensation() {
    let (stack, spans) = whole_trace_of("order-fails-t", ("SKU-TEE", 800), "compensated").await;
    let failed = named(&spans, "step order.create");
    assert_eq!(failed.len(), 1);
    assert!(failed[0].error, "the failing step has error status");
    assert!(
        failed[0].status_message.contains("order refused"),
        "{}",
        failed[0].status_message
    );
    for undo in ["compensate payment.charge", "compensate inventory.reserve"] {
        let spans = named(&spans, undo);
        assert_eq!(spans.len(), 1, "{undo} is its own span");
        assert_eq!(spans[0].attr("saga.phase"), Some("undo"));
        assert!(
            spans[0]
                .links
                .iter()
                .any(|(_, span_id)| span_id == &failed[0].span_id),
            "{undo} is linked to the failure that caused it"
        );
    }
    assert!(
        named(&spans, "compensate order.create").is_empty(),
        "a step that said no is not undone"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_waited_in_its_stream_says_so_on_its_process_span() {
    let mut stack = Stack::start(Options::default()).await;
    // No payment worker for a while: the charge waits in the command stream.
    stack.service("payment").kill();
    let client = stack.client().await;
    let checkout = request("cust-wait", "tok_visa", &[("SKU-MUG", 1)], 0);
    let events = client.follow(checkout.checkout_id);
    let trace_id = client.publish(&checkout).await.unwrap();
    let mut charging = false;
    for _ in 0..200 {
        let step: Option<String> =
            sqlx::query_scalar("SELECT state->>'step' FROM saga.sagas WHERE saga_id = $1")
                .bind(checkout.checkout_id)
                .fetch_optional(&stack.pool)
                .await
                .unwrap();
        if step.as_deref() == Some("payment") {
            charging = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(charging, "the saga never sent its charge");
    // At least this long in the stream, by construction: a lower bound, not a timing.
    let held = std::time::Duration::from_secs(2);
    tokio::time::sleep(held).await;
    stack.service("payment").restart().unwrap();
    let last = client
        .wait(
            checkout.checkout_id,
            events,
            std::time::Duration::from_secs(60),
            |_| {},
        )
        .await;
    assert_eq!(
        last.map(|e| e.kind.as_str().to_owned()).as_deref(),
        Some("completed")
    );
    let spans = trace_with(&trace_id, "step notification.send").await;
    let charge = named(&spans, "process checkout.cmd.payment.charge");
    assert_eq!(charge.len(), 1, "{charge:#?}");
    assert_eq!(
        charge[0].attr("messaging.nats.stream"),
        Some("CHECKOUT_COMMANDS")
    );
    let waited: f64 = charge[0]
        .attr("messaging.nats.stream_wait_ms")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        waited >= held.as_secs_f64() * 1e3 - 500.0,
        "waited {waited} ms in the stream, held {held:?}"
    );
    let reserve = named(&spans, "process checkout.cmd.inventory.reserve");
    let quick: f64 = reserve[0]
        .attr("messaging.nats.stream_wait_ms")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        quick < waited,
        "the reservation did not wait as the charge did: {quick} ms"
    );
    stack.stop().await;
}
