//! The "without Docker" path, end to end: a real otelite on free loopback ports, the real
//! services and client exporting to it over OTLP/gRPC, one completed and one compensated
//! checkout, and everything read back through otelite's REST API, the logs' event times
//! included.

use crate::private_otelite::{PrivateOtelite, received};
use crate::support::{Options, Stack};
use checkout_cli::otelite::{Otelite, Span};
use checkout_harness::{free_port, trace_check};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// Reads a trace back from otelite once its saga span is in, and checks it is whole.
async fn whole_trace(otelite: &Otelite, trace_id: &str) -> Vec<Span> {
    let found = otelite
        .wait_for_span(trace_id, "saga checkout", Duration::from_secs(30))
        .await
        .expect("otelite API");
    assert!(
        found
            .as_ref()
            .is_some_and(|s| s.iter().any(|s| s.name == "saga checkout")),
        "otelite has no saga span for trace {trace_id}: {found:?}"
    );
    // Let the last batches of the other services land.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spans = otelite.trace(trace_id).await.expect("API").expect("trace");
    let problems = trace_check::check_tree(&received(&spans));
    assert!(
        problems.is_empty(),
        "trace {trace_id} is not whole: {problems:#?}"
    );
    let root: Vec<&Span> = spans.iter().filter(|s| s.parent().is_none()).collect();
    assert_eq!(
        root[0].name, "publish checkout.requested",
        "the client's span is the root"
    );
    spans
}

/// The log records of a compensated saga are findable by its trace id, the failing step's and
/// the compensations' among them.
async fn assert_logs_found_by_trace_id(otelite: &Otelite, trace_id: &str) {
    let logs = otelite.trace_logs(trace_id).await.expect("API");
    assert!(
        !logs.is_empty(),
        "no log record carries trace id {trace_id}"
    );
    assert!(
        logs.iter().all(|l| l["trace_id"] == trace_id),
        "otelite returned records of other traces: {logs:#?}"
    );
    let text = serde_json::to_string(&logs)
        .unwrap_or_default()
        .to_lowercase();
    for needle in ["order", "compensat"] {
        assert!(
            text.contains(needle),
            "no log mentions {needle:?} in trace {trace_id}: {text}"
        );
    }
}

/// Every log record of a trace is dated when it happened, inside the run: otelite's
/// `timestamp` is the record's OTLP `time_unix_nano` (its event time), which the log bridge
/// alone left at 0 (shown as 1970).
async fn assert_logs_dated_within(
    otelite: &Otelite,
    trace_id: &str,
    run: (SystemTime, SystemTime),
) {
    let nanos = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    };
    let (from, to) = (nanos(run.0), nanos(run.1));
    let logs = otelite.trace_logs(trace_id).await.expect("API");
    assert!(
        !logs.is_empty(),
        "no log record carries trace id {trace_id}"
    );
    let undated: Vec<_> = logs
        .iter()
        .filter(|l| {
            !l["timestamp"]
                .as_i64()
                .is_some_and(|t| (from..=to).contains(&t))
        })
        .map(|l| (l["timestamp"].clone(), l["body"].clone()))
        .collect();
    assert!(
        undated.is_empty(),
        "{} of {} log records of trace {trace_id} are not dated inside the run \
         ({from}..={to} ns): {undated:#?}",
        undated.len(),
        logs.len()
    );
}

/// The latest value of counter `name` for `outcome`, summed over the processes reporting it
/// (cumulative counters: each export adds a point; the largest per process is the latest).
async fn counter(otelite: &Otelite, name: &str, outcome: &str) -> f64 {
    let points = otelite.metric(name).await.expect("API");
    let mut latest: BTreeMap<String, f64> = BTreeMap::new();
    for point in points
        .iter()
        .filter(|p| p["attributes"]["checkout.outcome"] == outcome)
    {
        let process = point["resource"]["attributes"]["service.name"].to_string();
        let value = point["value"].as_f64().unwrap_or(0.0);
        let entry = latest.entry(process).or_insert(value);
        *entry = entry.max(value);
    }
    latest.values().sum()
}

/// The checkout metrics are received under their names and units, with one completed and one
/// compensated saga counted.
async fn assert_checkout_metrics_by_name(otelite: &Otelite) {
    // The services export every 300 ms: give them a few intervals, boundedly.
    let mut names = Vec::new();
    for _ in 0..50 {
        names = otelite.metric_names().await.expect("API");
        if names.iter().any(|n| n == "checkout.sagas")
            && counter(otelite, "checkout.sagas", "compensated").await >= 1.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for name in [
        "checkout.sagas",
        "checkout.duration",
        "checkout.step.duration",
    ] {
        assert!(
            names.iter().any(|n| n == name),
            "no metric {name} in {names:?}"
        );
    }
    let durations = otelite.metric("checkout.duration").await.expect("API");
    assert!(
        durations.iter().all(|p| p["unit"] == "s"),
        "checkout.duration is in seconds: {durations:#?}"
    );
    assert_eq!(counter(otelite, "checkout.sagas", "completed").await, 1.0);
    assert_eq!(counter(otelite, "checkout.sagas", "compensated").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otelite_receives_whole_traces_and_show_links_to_it() {
    let otelite = PrivateOtelite::start().await;
    let endpoint = otelite.otlp_endpoint();
    let mut options = Options {
        otlp_endpoint: Some(endpoint.clone()),
        ..Options::default()
    };
    // Metrics leave every 300 ms instead of every minute, so the test need not wait.
    for service in ["inventory", "payment", "order", "orchestrator"] {
        let interval = (service, "OTEL_METRIC_EXPORT_INTERVAL", "300".to_owned());
        options.env.push(interval);
    }
    let stack = Stack::start(options).await;
    let run_started = SystemTime::now();
    // The client is the real binary too, so the root span also goes to otelite.
    let client_env = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone())];
    let mut traces = Vec::new();
    for (customer, expect) in [("cust-ok", "completed"), ("order-fails-o", "compensated")] {
        let out = stack
            .run_checkout(
                &["publish", "--customer", customer, "--wait", "--json"],
                &client_env,
            )
            .await;
        let value: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
        assert_eq!(value["outcome"], expect, "{out}");
        let id = |k: &str| value[k].as_str().expect(k).to_owned();
        traces.push((id("saga_id"), id("trace_id")));
    }

    let completed = whole_trace(&otelite.api, &traces[0].1).await;
    let compensated = whole_trace(&otelite.api, &traces[1].1).await;
    assert!(!completed.iter().any(|s| s.name.starts_with("compensate ")));
    let undos: Vec<&str> = compensated
        .iter()
        .filter(|s| s.name.starts_with("compensate ") && !s.name.ends_with(" started"))
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(undos.len(), 2, "refund and release: {undos:?}");

    // `show` links to otelite, which holds the trace; with no UI answering, it links nowhere.
    let ui = otelite.api.base().to_owned();
    let (saga_id, trace_id) = &traces[1];
    let linked = [("TRACE_UI", "auto".to_owned()), ("OTELITE_URL", ui.clone())];
    let out = stack.run_checkout(&["show", saga_id], &linked).await;
    assert!(out.contains(&format!("open     {ui}/#traces")), "{out}");
    assert!(
        out.contains(&format!("json  {ui}/api/traces/{trace_id}")),
        "{out}"
    );
    let dead = format!("http://127.0.0.1:{}", free_port());
    let nowhere = [
        ("TRACE_UI", "auto".to_owned()),
        ("OTELITE_URL", dead.clone()),
        ("JAEGER_URL", dead),
    ];
    let out = stack.run_checkout(&["show", saga_id], &nowhere).await;
    assert!(out.contains("link     none: no trace UI answers"), "{out}");
    assert!(!out.contains("open "), "{out}");

    assert_logs_found_by_trace_id(&otelite.api, &traces[1].1).await;
    let run = (run_started, SystemTime::now());
    for (_, trace_id) in &traces {
        assert_logs_dated_within(&otelite.api, trace_id, run).await;
    }
    assert_checkout_metrics_by_name(&otelite.api).await;

    stack.stop().await;
    let mut service = otelite.service;
    let code = tokio::task::spawn_blocking(move || service.terminate(Duration::from_secs(10)))
        .await
        .expect("join")
        .expect("terminate");
    assert_eq!(code, Some(0), "otelite stops cleanly on SIGTERM");
}
