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
