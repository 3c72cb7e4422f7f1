//! Metrics and logs as they really leave the services over OTLP: a few checkouts of each
//! outcome, then the receiver's metric points (names, units, attributes, values) and the log
//! records of each saga's trace.

use crate::support::{Options, Stack, receiver, request, trace_with};
use bytes::Bytes;
use checkout_harness::{PointValue, ReceivedLog, ReceivedPoint};
use checkout_shared::metrics::{self as m, INSTRUMENTS, Kind};
use checkout_shared::{Phase, Step, subjects};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

const SERVICES: [&str; 4] = ["orchestrator", "inventory", "payment", "order"];

/// This test's points only: other tests share the receiver and run at the same time.
fn points(run: &str, name: &str) -> Vec<ReceivedPoint> {
    receiver()
        .metric(name)
        .into_iter()
        .filter(|p| p.resource.get("test.run").map(String::as_str) == Some(run))
        .collect()
}

/// The sum over this run's series of `name` whose attributes include `attrs`.
fn total(run: &str, name: &str, attrs: &[(&str, &str)]) -> f64 {
    points(run, name)
        .iter()
        .filter(|p| {
            attrs
                .iter()
                .all(|(k, v)| p.attributes.get(*k).map(String::as_str) == Some(*v))
        })
        .map(ReceivedPoint::number)
        .sum()
}

fn find<'a>(logs: &'a [ReceivedLog], service: &str, body: &str) -> Option<&'a ReceivedLog> {
    logs.iter()
        .find(|l| l.service == service && l.body.contains(body))
}

/// Waits until the trace has a log line `body` from `service`, and returns it.
async fn log_line(trace_id: &str, service: &str, body: &str) -> ReceivedLog {
    let found = receiver()
        .wait_until(Duration::from_secs(20), |r| {
            find(&r.logs_of_trace(trace_id), service, body).is_some()
        })
        .await;
    let logs = receiver().logs_of_trace(trace_id);
    assert!(
        found,
        "no log {body:?} from {service} in trace {trace_id}: {logs:#?}"
    );
    find(&logs, service, body).cloned().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_logs_go_out_over_otlp_with_units_attributes_and_trace_ids() {
    let run = uuid::Uuid::new_v4().to_string();
    let mut options = Options::default();
    for service in SERVICES {
        options
            .env
            .push((service, "OTEL_METRIC_EXPORT_INTERVAL", "300".into()));
        let resource = format!("test.run={run}");
        options
            .env
            .push((service, "OTEL_RESOURCE_ATTRIBUTES", resource));
    }
    let stack = Stack::start(options).await;
    let client = stack.client().await;

    // Priced from the test catalog: 2 x 2100 and 3 x 300.
    for cart in [[("SKU-MUG", 2)], [("SKU-TEE", 3)]] {
        let ok = request("cust-1", "tok_visa", &cart, 0);
        assert_eq!(stack.checkout(&client, &ok).await.0, "completed");
    }
    let declined = request("cust-2", "tok_decline", &[("SKU-MUG", 1)], 1_200);
    let (outcome, declined_trace) = stack.checkout(&client, &declined).await;
    assert_eq!(outcome, "compensated");

    let unknown = json!({
        "checkout_id": uuid::Uuid::new_v4(), "customer_id": "cust-3",
        "items": [{"sku": "SKU-NOPE", "quantity": 1, "unit_price_cents": 100}],
        "payment_token": "tok_visa", "amount_cents": 100, "currency": "EUR"
    });
    let body = Bytes::from(serde_json::to_vec(&unknown).unwrap());
    let rejected_trace = client.publish_raw("bad-sku".into(), body).await.unwrap();

    // A command without its Saga-* headers, in a trace of our own: dead-lettered unread.
    let dead_trace = format!("{:032x}", rand::random::<u128>());
    let mut headers = async_nats::HeaderMap::new();
    let traceparent = format!("00-{dead_trace}-{:016x}-01", rand::random::<u64>() | 1);
    headers.insert("traceparent", traceparent.as_str());
    headers.insert("Nats-Msg-Id", format!("garbage-{run}").as_str());
    let js = async_nats::jetstream::new(stack.admin_client().await);
    let subject = subjects::command(Step::Payment, Phase::Do);
    let ack = js
        .publish_with_headers(subject, headers, Bytes::from_static(b"{}"))
        .await
        .unwrap();
    ack.await.unwrap();

    // A forged reply, for a saga nobody started, in a trace of our own: refused, not applied.
    let forged_trace = format!("{:032x}", rand::random::<u128>());
    let forged_saga = uuid::Uuid::new_v4();
    let mut headers = async_nats::HeaderMap::new();
    let traceparent = format!("00-{forged_trace}-{:016x}-01", rand::random::<u64>() | 1);
    headers.insert("traceparent", traceparent.as_str());
    let envelope = checkout_shared::Envelope {
        saga_id: forged_saga,
        step: Step::Payment,
        phase: Phase::Do,
        msg_type: checkout_shared::MsgType::event(Step::Payment, "charged"),
    };
    envelope.write(&mut headers, &format!("forged-{run}"));
    headers.insert(
        checkout_shared::command_id::COMMAND_ID,
        format!("{forged_saga}.payment.do").as_str(),
    );
    let forged = json!({"saga_id": forged_saga, "step": "payment", "phase": "do",
                        "outcome": "step_succeeded", "reference": null});
    let ack = js
        .publish_with_headers(
            subjects::event(Step::Payment, "charged"),
            headers,
            Bytes::from(serde_json::to_vec(&forged).unwrap()),
        )
        .await
        .unwrap();
    ack.await.unwrap();
    let refused_reply = [(m::REASON, "reply_unknown_saga")];

    // Metrics: every count arrives with the next export after the last checkout.
    let release = subjects::command(Step::Inventory, Phase::Undo);
    let consumed = [("messaging.destination.name", release.as_str())];
    let done = receiver()
        .wait_until(Duration::from_secs(30), |_| {
            total(&run, m::SAGAS.name, &[(m::OUTCOME, "completed")]) == 2.0
                && total(&run, m::SAGAS.name, &[(m::OUTCOME, "rejected")]) == 1.0
                && total(&run, m::REJECTIONS.name, &refused_reply) == 1.0
                && total(&run, m::DEAD_LETTERS.name, &[]) == 1.0
                && total(&run, m::IN_FLIGHT.name, &[]) == 0.0
                && !points(&run, m::IN_FLIGHT.name).is_empty()
                && total(&run, m::CONSUMED.name, &consumed) == 1.0
        })
        .await;
    // The other services' last points come with their next export, a few intervals later.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let everything: Vec<_> = INSTRUMENTS
        .iter()
        .flat_map(|i| points(&run, i.name))
        .collect();
    assert!(done, "metrics did not arrive: {everything:#?}");

    let count = |name, attrs: &[(&str, &str)]| total(&run, name, attrs);
    assert_eq!(count(m::SAGAS.name, &[(m::OUTCOME, "compensated")]), 1.0);
    assert_eq!(count(m::SAGAS.name, &[(m::OUTCOME, "failed")]), 0.0);
    assert_eq!(count(m::DURATION.name, &[(m::OUTCOME, "completed")]), 2.0);
    assert_eq!(count(m::VALUE.name, &[(m::OUTCOME, "compensated")]), 1.0);
    let step = |step: &str, phase: &str, outcome: &str| {
        let attrs = [
            (m::STEP, step),
            (m::PHASE, phase),
            (m::STEP_OUTCOME, outcome),
        ];
        count(m::STEP_DURATION.name, &attrs)
    };
    assert_eq!(step("inventory", "do", "succeeded"), 3.0);
    assert_eq!(step("payment", "do", "succeeded"), 2.0);
    assert_eq!(step("payment", "do", "failed"), 1.0);
    assert_eq!(step("order", "do", "succeeded"), 2.0);
    assert_eq!(step("inventory", "undo", "compensated"), 1.0);
    assert_eq!(count(m::COMPENSATIONS.name, &[(m::STEP, "inventory")]), 1.0);
    assert_eq!(count(m::COMPENSATIONS.name, &[]), 1.0);
    assert_eq!(count(m::ABANDONED.name, &[(m::STEP, "payment")]), 1.0);
    assert_eq!(count(m::ABANDONED.name, &[]), 1.0);
    assert_eq!(
        count(m::REJECTIONS.name, &[(m::REASON, "unknown_sku")]),
        1.0
    );
    let dead = [(m::REASON, "unreadable_envelope")];
    assert_eq!(count(m::DEAD_LETTERS.name, &dead), 1.0);
    let reserve = subjects::command(Step::Inventory, Phase::Do);
    let sent = [("messaging.destination.name", reserve.as_str())];
    assert_eq!(count(m::SENT.name, &sent), 3.0, "three reserve commands");
    let release = subjects::command(Step::Inventory, Phase::Undo);
    let consumed = [("messaging.destination.name", release.as_str())];
    assert_eq!(
        count(m::CONSUMED.name, &consumed),
        1.0,
        "one release consumed"
    );
    assert_eq!(count(m::PROCESS_DURATION.name, &consumed), 1.0);

    // The amounts land in the buckets the issue asks for.
    let value = points(&run, m::VALUE.name);
    let completed = value
        .iter()
        .find(|p| p.attributes.get(m::OUTCOME).map(String::as_str) == Some("completed"))
        .unwrap();
    let PointValue::Histogram {
        sum,
        bounds,
        buckets,
        ..
    } = &completed.value
    else {
        panic!("checkout.value is a histogram: {completed:?}");
    };
    assert_eq!(*sum, 5_100.0);
    assert_eq!(bounds, &m::VALUE_BUCKETS.to_vec());
    assert_eq!(
        (buckets[1], buckets[3]),
        (1, 1),
        "900 and 4200: {buckets:?}"
    );

    // Every point: the unit, description and kind of its definition, attributes from the
    // declared (bounded) set only; no saga or customer ids anywhere.
    for point in &everything {
        let def = INSTRUMENTS.iter().find(|i| i.name == point.name).unwrap();
        assert_eq!(point.unit, def.unit, "{}", def.name);
        assert_eq!(point.description, def.description, "{}", def.name);
        let kind = match point.value {
            PointValue::Sum {
                monotonic: true, ..
            } => Kind::Counter,
            PointValue::Sum { .. } | PointValue::Gauge(_) => Kind::UpDownCounter,
            PointValue::Histogram { .. } => Kind::Histogram,
        };
        assert_eq!(kind, def.kind, "{}", def.name);
        for key in point.attributes.keys() {
            assert!(
                def.attributes.contains(&key.as_str()),
                "{}: {key}",
                def.name
            );
        }
    }
    let by_service: BTreeMap<&str, usize> =
        everything.iter().fold(BTreeMap::new(), |mut acc, p| {
            *acc.entry(p.service.as_str()).or_default() += 1;
            acc
        });
    for service in SERVICES {
        assert!(
            by_service.contains_key(service),
            "{service} sent no metrics"
        );
    }

    // Logs, each found by its saga's trace id, stamped with the span it is about.
    let spans = trace_with(&declined_trace, "compensate inventory.reserve").await;
    let span_id = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.span_id.clone())
            .unwrap()
    };
    // On the step's "started" span, which is out from the step's start.
    let failed = log_line(&declined_trace, "orchestrator", "step failed").await;
    assert_eq!(failed.span_id, span_id("step payment.charge started"));
    assert_eq!(failed.severity, "WARN");
    assert_eq!(
        failed.attributes.get("step").map(String::as_str),
        Some("payment")
    );
    let compensation = log_line(&declined_trace, "orchestrator", "compensation done").await;
    assert_eq!(
        compensation.span_id,
        span_id("compensate inventory.reserve started")
    );
    log_line(&declined_trace, "payment", "step refused").await;
    let rejection = log_line(&rejected_trace, "orchestrator", "checkout rejected").await;
    assert!(!rejection.span_id.is_empty());
    log_line(&dead_trace, "payment", "to the dead letters").await;
    let refusal = log_line(&forged_trace, "orchestrator", "reply refused, not applied").await;
    assert_eq!(refusal.severity, "WARN");
    assert_eq!(
        refusal.attributes.get("reason").map(String::as_str),
        Some("reply_unknown_saga")
    );
    assert_eq!(
        refusal.attributes.get("trace_id").map(String::as_str),
        Some(forged_trace.as_str())
    );
    stack.stop().await;
}
