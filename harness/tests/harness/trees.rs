//! Whole-trace checks and the rendered tree.

use super::*;

fn span(id: &str, parent: Option<&str>, trace: &str) -> ReceivedSpan {
    ReceivedSpan {
        trace_id: trace.to_owned(),
        span_id: id.to_owned(),
        parent_span_id: parent.map(str::to_owned),
        name: format!("op-{id}"),
        kind: SpanKind::Internal,
        service_name: "svc".to_owned(),
        attributes: BTreeMap::new(),
        error: false,
        status_message: String::new(),
        start_unix_nanos: 0,
        end_unix_nanos: 1_000_000,
        links: Vec::new(),
        events: Vec::new(),
    }
}

#[test]
fn check_tree_accepts_a_whole_tree() {
    let spans = [
        span("a", None, "t"),
        span("b", Some("a"), "t"),
        span("c", Some("b"), "t"),
    ];
    assert_eq!(check_tree(&spans), Vec::<String>::new());
}

#[test]
fn check_tree_finds_missing_parent() {
    let spans = [span("a", None, "t"), span("b", Some("lost"), "t")];
    let problems = check_tree(&spans);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("parent lost"), "{problems:?}");
}

#[test]
fn check_tree_finds_two_roots() {
    let spans = [span("a", None, "t"), span("b", None, "t")];
    let problems = check_tree(&spans);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("exactly one root span, found 2"),
        "{problems:?}"
    );
}

#[test]
fn check_tree_finds_duplicates_foreign_traces_and_no_root() {
    let spans = [
        span("a", Some("b"), "t1"),
        span("b", Some("a"), "t2"),
        span("b", Some("a"), "t1"),
    ];
    let problems = check_tree(&spans);
    assert!(
        problems.iter().any(|p| p.contains("2 traces")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("found 0")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("span id b appears 2 times")),
        "{problems:?}"
    );
    assert_eq!(check_tree(&[]), vec!["no spans to check".to_owned()]);
    // Cycles must not hang or lose spans in the rendering.
    assert_eq!(render_tree(&spans).lines().count(), 3);
}

#[test]
fn render_tree_orders_children_by_start_and_marks_orphans() {
    let mut late = span("late", Some("root"), "t");
    late.start_unix_nanos = 500_000;
    let mut early = span("early", Some("root"), "t");
    early.start_unix_nanos = 100_000;
    let root = span("root", None, "t");
    let orphan = span("orphan", Some("gone"), "t");
    let rendered = render_tree(&[late, orphan, early, root]);
    let lines: Vec<&str> = rendered.lines().collect();
    assert_eq!(lines.len(), 4, "{rendered}");
    assert!(lines[0].starts_with("op-orphan [svc]") || lines[0].starts_with("op-root [svc]"));
    assert!(rendered.contains("op-orphan [svc] +0.000 ms 1.000 ms (orphan: parent gone missing)"));
    let root_line = lines
        .iter()
        .position(|l| l.starts_with("op-root"))
        .expect("root line");
    assert!(
        lines[root_line + 1].starts_with("  op-early [svc] +0.100 ms"),
        "{rendered}"
    );
    assert!(
        lines[root_line + 2].starts_with("  op-late [svc] +0.500 ms"),
        "{rendered}"
    );
}

// ---------------------------------------------------------------------------------------------
// Service
