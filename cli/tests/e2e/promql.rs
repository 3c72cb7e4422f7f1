//! Just enough PromQL reading to check a dashboard against the code: the metric names and the
//! label names an expression uses, and the Prometheus names the collector's OTLP translation
//! gives each instrument of `checkout_shared::metrics`.

use checkout_shared::metrics::{Instrument, Kind};
use std::collections::BTreeSet;

/// The series names Prometheus shows for `def` after the collector's prometheus exporter:
/// dots become underscores, the unit becomes a suffix (`s` → `_seconds`; an annotation such
/// as `{saga}` adds nothing), counters end in `_total`, histograms are `_bucket`, `_sum` and
/// `_count`.
pub fn prometheus_names(def: &Instrument) -> Vec<String> {
    let mut base = def.name.replace('.', "_");
    match def.unit {
        "s" => base.push_str("_seconds"),
        "By" => base.push_str("_bytes"),
        unit if unit.starts_with('{') || unit.is_empty() => {}
        unit => panic!("no translation for unit {unit} of {}", def.name),
    }
    match def.kind {
        Kind::Counter => vec![format!("{base}_total")],
        Kind::UpDownCounter => vec![base],
        Kind::Histogram => ["_bucket", "_sum", "_count"]
            .iter()
            .map(|suffix| format!("{base}{suffix}"))
            .collect(),
    }
}

/// The label name an attribute becomes.
pub fn prometheus_label(attribute: &str) -> String {
    attribute.replace('.', "_")
}

/// Words that are never metric names: keywords, and aggregations (which may be followed by
/// `by (...)` rather than by their parenthesis).
const KEYWORDS: [&str; 21] = [
    "by",
    "without",
    "on",
    "ignoring",
    "bool",
    "and",
    "or",
    "unless",
    "group_left",
    "offset",
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
];

/// Splits `expr` into (metric names, label names).
pub fn read(expr: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut labels = BTreeSet::new();
    let mut rest = String::new();
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '{' => {
                let end = find(&chars, i, '}');
                let inner: String = chars[i + 1..end].iter().collect();
                for matcher in inner.split(',').filter(|m| !m.trim().is_empty()) {
                    let name = matcher.split(['=', '!']).next().unwrap_or_default();
                    labels.insert(name.trim().to_owned());
                }
                i = end + 1;
            }
            '[' => i = find(&chars, i, ']') + 1,
            '"' => i = find(&chars, i + 1, '"') + 1,
            c => {
                rest.push(c);
                i += 1;
            }
        }
    }
    // `by (a, b)` and `without (...)` list labels; every other word not followed by `(` is
    // a metric (or a keyword or a number).
    let mut metrics = BTreeSet::new();
    let words: Vec<(String, char)> = words(&rest);
    let mut k = 0;
    while k < words.len() {
        let (word, next) = &words[k];
        if (word == "by" || word == "without") && *next == '(' {
            k += 1;
            while k < words.len() {
                labels.insert(words[k].0.clone());
                if words[k].1 == ')' {
                    break;
                }
                k += 1;
            }
        } else if *next != '('
            && !KEYWORDS.contains(&word.as_str())
            && !word.starts_with(|c: char| c.is_ascii_digit())
        {
            metrics.insert(word.clone());
        }
        k += 1;
    }
    (metrics, labels)
}

fn find(chars: &[char], from: usize, close: char) -> usize {
    (from + 1..chars.len())
        .find(|&j| chars[j] == close)
        .unwrap_or_else(|| panic!("unclosed {close} in PromQL"))
}

/// Identifier-like words with the next non-space character after each.
fn words(text: &str) -> Vec<(String, char)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '.' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:.".contains(chars[i]))
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().copied().find(|c| !c.is_whitespace());
            out.push((word, next.unwrap_or(' ')));
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn promql_reader_separates_metrics_from_labels() {
    let expr = r#"histogram_quantile(0.99, sum by (le, checkout_step) (rate(checkout_step_duration_seconds_bucket{saga_phase="undo"}[$__rate_interval]))) / 100"#;
    let (metrics, labels) = read(expr);
    assert_eq!(
        metrics.into_iter().collect::<Vec<_>>(),
        vec!["checkout_step_duration_seconds_bucket"]
    );
    assert_eq!(
        labels.into_iter().collect::<Vec<_>>(),
        vec!["checkout_step", "le", "saga_phase"]
    );
}
