//! `checkout-tools demo` as users run it (`./scripts/demo`): with no broker at the configured
//! URL it starts a private one, runs the services from the product binary `checkout`, and every
//! scenario ends as it should. Its spans go to the test's receiver, not to port 4317.

use crate::product::{checkout_bin, tools_bin};
use checkout_harness::{OtlpReceiver, TestDb};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_runs_the_product_and_every_scenario_ends_as_expected() {
    let checkout = checkout_bin();
    let db = TestDb::create().await.unwrap();
    let receiver = OtlpReceiver::start().await.unwrap();
    let output = tokio::process::Command::new(tools_bin())
        .args(["demo", "--json", "--trace-ui", "none"])
        .env("CHECKOUT_BIN", checkout)
        // Nothing answers there: the demo starts a private nats-server.
        .env("NATS_URL", "nats://127.0.0.1:1")
        .env("DATABASE_URL", db.url())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        .kill_on_drop(true)
        .output()
        .await
        .expect("run checkout-tools demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed:\n{stdout}\n{stderr}");
    let outcomes: Vec<(String, String)> = stdout
        .lines()
        .map(|line| {
            let saga: serde_json::Value = serde_json::from_str(line).unwrap();
            let field = |name: &str| saga[name].as_str().unwrap_or_default().to_owned();
            (field("scenario"), field("outcome"))
        })
        .collect();
    let expected = [
        ("happy path", "completed"),
        ("card declined", "compensated"),
        ("order refused", "compensated"),
        ("out of stock", "failed"),
        ("happy path", "completed"),
    ]
    .map(|(scenario, outcome)| (scenario.to_owned(), outcome.to_owned()));
    assert_eq!(outcomes, expected, "{stderr}");
    // The services it started exported to the endpoint it was given: the orchestrator's spans
    // of every saga are here.
    let traced = receiver
        .wait_for(Duration::from_secs(10), |spans| {
            spans
                .iter()
                .filter(|s| s.service_name == "orchestrator" && s.name == "saga checkout")
                .count()
                >= expected.len()
        })
        .await;
    assert!(
        traced,
        "the orchestrator's saga spans did not arrive:\n{stderr}"
    );
    receiver.shutdown().await;
    db.drop_db().await.unwrap();
}

/// With nothing at the OTLP endpoint, the demo starts otelite there (its UI where the links
/// look), every signal goes to it, the links open on it, and it is left running with the
/// command that stops it.
#[tokio::test(flavor = "multi_thread")]
async fn with_nothing_at_the_otlp_endpoint_the_demo_starts_otelite_and_leaves_it_up() {
    use checkout_cli::otelite::Otelite;
    use checkout_harness::{free_port, trace_check};
    let db = TestDb::create().await.unwrap();
    let (grpc, ui) = (free_port(), free_port());
    let ui_url = format!("http://127.0.0.1:{ui}");
    let output = tokio::process::Command::new(tools_bin())
        .args(["demo", "--json"])
        .env("CHECKOUT_BIN", checkout_bin())
        .env("NATS_URL", "nats://127.0.0.1:1")
        .env("DATABASE_URL", db.url())
        // Nothing listens on either: the demo starts otelite on both.
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{grpc}"),
        )
        .env("OTELITE_URL", &ui_url)
        .env("TRACE_UI", "auto")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run checkout-tools demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(stderr.contains("started otelite (pid "), "{stderr}");
    let stop = stderr
        .lines()
        .find_map(|l| l.strip_prefix("stop it with: "))
        .unwrap_or_else(|| panic!("no stop command:\n{stderr}"))
        .to_owned();
    // Every saga linked to it, while it ran and once it ended.
    let sagas: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(sagas.len(), 5, "{stdout}");
    for saga in &sagas {
        assert_eq!(saga["trace_url"], format!("{ui_url}/#traces"), "{saga}");
        let trace_id = saga["trace_id"].as_str().unwrap();
        assert!(
            stderr.contains(&format!("trace {trace_id}  {ui_url}/api/traces/{trace_id}")),
            "no link while it ran:\n{stderr}"
        );
    }

    // Still up after the demo: every trace is whole in it, the services' logs and metrics too.
    let otelite = Otelite::new(&ui_url).unwrap();
    otelite.health().await.expect("otelite left running");
    for saga in &sagas {
        let trace_id = saga["trace_id"].as_str().unwrap();
        let spans = otelite.trace(trace_id).await.unwrap().unwrap_or_default();
        let spans: Vec<_> = spans
            .iter()
            .map(|s| checkout_harness::ReceivedSpan {
                trace_id: s.trace_id.clone(),
                span_id: s.span_id.clone(),
                parent_span_id: s.parent().map(str::to_owned),
                name: s.name.clone(),
                kind: checkout_harness::SpanKind::Unspecified,
                service_name: s.service().to_owned(),
                attributes: Default::default(),
                error: false,
                status_message: String::new(),
                start_unix_nanos: 0,
                end_unix_nanos: 0,
                links: vec![],
                events: vec![],
            })
            .collect();
        let problems = trace_check::check_tree(&spans);
        assert!(problems.is_empty(), "{trace_id}: {problems:#?}");
        assert!(spans.iter().any(|s| s.service_name == "orchestrator"));
        // The broker's hops too: the demo traces every message, and bridges the events.
        assert!(
            spans.iter().any(|s| s.service_name == "nats-server"),
            "{trace_id}: no nats-server span"
        );
    }
    assert!(
        !otelite.metric_names().await.unwrap().is_empty(),
        "metrics reach it"
    );
    // The printed command stops it and removes its storage.
    let stopped = std::process::Command::new("sh")
        .args(["-c", &stop])
        .status()
        .unwrap();
    assert!(stopped.success(), "{stop}");
    let mut gone = false;
    for _ in 0..50 {
        if otelite.health().await.is_err() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(gone, "otelite still answers after `{stop}`");
    db.drop_db().await.unwrap();
}
