//! The broker as a hop of the trace, from a real nats-server (2.11 or later: the harness runs
//! the pinned one) with message tracing, through `checkout nats-trace-bridge`, read back from
//! a real otelite: a `nats-server <subject>` span under each traced message's producer span.

use crate::private_otelite::{PrivateOtelite, received};
use crate::support::{Options, Stack};
use checkout_harness::Service;
use checkout_harness::trace_check::check_tree;
use std::path::PathBuf;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_and_reply_has_its_broker_span_between_producer_and_consumer() {
    let otelite = PrivateOtelite::start().await;
    let endpoint = otelite.otlp_endpoint();
    let mut options = Options {
        otlp_endpoint: Some(endpoint.clone()),
        ..Options::default()
    };
    for service in [
        "inventory",
        "payment",
        "order",
        "notification",
        "orchestrator",
    ] {
        options.env.push((service, "NATS_TRACE_SHARE", "1".into()));
    }
    let stack = Stack::start(options).await;
    let logs = tempfile::tempdir().unwrap();
    let envs = vec![
        ("NATS_URL".to_owned(), stack.nats.url()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), endpoint.clone()),
        ("LOG_FORMAT".to_owned(), "json".to_owned()),
    ];
    let envs = [envs, stack.nats.service_env("tracebridge").unwrap()].concat();
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_checkout"));
    let args = vec!["nats-trace-bridge".to_owned()];
    let mut bridge = Service::spawn("bridge", &exe, &args, &envs, logs.path()).unwrap();
    // Its subscription is in place once it says so (bounded).
    let log = logs.path().join("bridge.log");
    let mut listening = false;
    for _ in 0..100 {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("turning nats-server trace events into spans") {
            listening = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        listening,
        "the bridge did not start: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    let client_env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
        ("NATS_TRACE_SHARE", "1".to_owned()),
    ];
    let out = stack
        .run_checkout(&["publish", "--wait", "--json"], &client_env)
        .await;
    let value: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(value["outcome"], "completed", "{out}");
    let trace_id = value["trace_id"].as_str().unwrap();

    let wanted = "nats-server checkout.evt.notification.sent";
    let found = otelite
        .api
        .wait_for_span(trace_id, wanted, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(
        found
            .as_ref()
            .is_some_and(|s| s.iter().any(|s| s.name == wanted)),
        "no {wanted} (is nats-server 2.11 or later?): {:?}\nbridge log:\n{}",
        found.map(|s| s.into_iter().map(|s| s.name).collect::<Vec<_>>()),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spans = otelite.api.trace(trace_id).await.unwrap().unwrap();
    let problems = check_tree(&received(&spans));
    assert!(problems.is_empty(), "not one tree: {problems:#?}");
    let hops: Vec<_> = spans
        .iter()
        .filter(|s| s.name.starts_with("nats-server "))
        .collect();
    // The request, four commands and four replies.
    assert_eq!(
        hops.len(),
        9,
        "{:#?}",
        hops.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    for hop in &hops {
        assert_eq!(hop.service(), "nats-server", "{}", hop.name);
        let parent = spans
            .iter()
            .find(|p| Some(p.span_id.as_str()) == hop.parent())
            .unwrap();
        let subject = hop.name.trim_start_matches("nats-server ");
        assert_eq!(
            parent.name,
            format!("publish {subject}"),
            "under its producer"
        );
        assert!(hop.attributes.contains_key("nats.server.name"), "{hop:?}");
        assert!(
            hop.attributes.contains_key("messaging.nats.stream"),
            "{hop:?}"
        );
        // Between the producer's start and its consumer's start.
        let consumer = spans
            .iter()
            .find(|c| c.name == format!("process {subject}") && c.parent() == hop.parent())
            .unwrap();
        assert!(
            parent.start_time <= hop.start_time && hop.end_time <= consumer.start_time + 5_000_000,
            "{} not between its producer and consumer",
            hop.name
        );
    }
    bridge.terminate(Duration::from_secs(10)).unwrap();
    let bridge_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        bridge_log.contains("\"spans\":9") && bridge_log.contains("\"refused\":0"),
        "{bridge_log}"
    );
    stack.stop().await;
    let mut service = otelite.service;
    tokio::task::spawn_blocking(move || service.terminate(Duration::from_secs(10)))
        .await
        .unwrap()
        .unwrap();
}
