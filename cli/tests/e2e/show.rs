//! `checkout show <saga id>` against a real saga: its timeline, trace id and link.

use crate::support::{Options, Stack, request};

/// The timeline lines of `show`'s output, reduced to (phase, step, outcome, rest).
fn timeline(out: &str) -> Vec<(String, String, String, String)> {
    out.lines()
        .skip_while(|l| *l != "timeline:")
        .skip(1)
        .map(|l| {
            // "  +  12.3 ms  do   payment.charge   15.0 ms  ok  reason..."
            let fields: Vec<&str> = l.split_whitespace().collect();
            let rest = fields.get(7..).map(|f| f.join(" ")).unwrap_or_default();
            let field = |i: usize| fields.get(i).copied().unwrap_or_default().to_owned();
            (field(2), field(3), field(6), rest)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_prints_each_step_and_undo_with_its_outcome_and_the_trace() {
    let stack = Stack::start(Options::default()).await;
    let client = stack.client().await;
    let checkout = request("order-fails-show", "tok_visa", &[("SKU-MUG", 1)], 1_300);
    let (outcome, trace_id) = stack.checkout(&client, &checkout).await;
    assert_eq!(outcome, "compensated");
    let id = checkout.checkout_id.to_string();

    let out = stack
        .run_checkout(&["show", &id], &[("TRACE_UI", "none".into())])
        .await;
    assert!(out.contains(&format!("saga     {id}")), "{out}");
    assert!(out.contains("status   compensated"), "{out}");
    assert!(out.contains(&format!("trace    {trace_id}")), "{out}");
    assert!(
        out.contains("link     none: trace links are off"),
        "no UI asked for, no link: {out}"
    );
    let rows = timeline(&out);
    let reduced: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|(p, s, o, _)| (p.as_str(), s.as_str(), o.as_str()))
        .collect();
    assert_eq!(
        reduced,
        vec![
            ("do", "inventory", "ok"),
            ("do", "payment", "ok"),
            ("do", "order", "failed"),
            ("undo", "payment", "ok"),
            ("undo", "inventory", "ok"),
        ],
        "{out}"
    );
    assert!(
        rows[2].3.contains("failing test customer"),
        "the failed step carries its reason: {out}"
    );

    // The JSON form carries the same timeline, with start and end times.
    let json = stack
        .run_checkout(&["show", &id, "--json"], &[("TRACE_UI", "none".into())])
        .await;
    let value: serde_json::Value = serde_json::from_str(json.trim()).expect("one JSON object");
    assert_eq!(value["trace_id"], trace_id.as_str());
    assert_eq!(value["trace_url"], serde_json::Value::Null);
    let timeline = value["timeline"].as_array().expect("timeline");
    assert_eq!(timeline.len(), 5);
    assert!(timeline.iter().all(|e| !e["end"].is_null()), "{json}");
    stack.stop().await;
}
