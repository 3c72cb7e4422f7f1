//! The observability stack of docker-compose.yml (collector, Jaeger, Prometheus, Loki,
//! Grafana, load generator) cannot run here, so its configuration under deploy/ is checked
//! against the code and against compose: pipelines name defined components, endpoints name
//! services and ports that exist, every dashboard query asks for a metric the code emits
//! (under its Prometheus name) by labels it carries, and every image is pinned.

use crate::compose::{compose, env, host_port, published_ports, root, strings};
use crate::promql::{self, prometheus_label, prometheus_names};
use checkout_shared::SagaStatus;
use checkout_shared::metrics::{self as m, INSTRUMENTS};
use serde_yaml::Value;
use std::collections::BTreeSet;

fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(root().join(path)).expect(path);
    serde_yaml::from_str(&text).expect(path)
}

fn text(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).expect(path)
}

fn get<'a>(value: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(value, |v, key| {
        v.get(key).unwrap_or_else(|| panic!("no {path}"))
    })
}

fn str_at<'a>(value: &'a Value, path: &str) -> &'a str {
    get(value, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path} is not a string"))
}

/// `host:port` (no scheme) → port.
fn port_of(endpoint: &str) -> u16 {
    endpoint.rsplit(':').next().unwrap().parse().unwrap()
}

/// The container path a compose service mounts `host_path` at.
fn mount(service: &Value, host_path: &str) -> String {
    strings(service.get("volumes"))
        .iter()
        .find_map(|v| v.strip_prefix(&format!("{host_path}:")).map(str::to_owned))
        .map(|v| v.trim_end_matches(":ro").to_owned())
        .unwrap_or_else(|| panic!("{host_path} is not mounted"))
}

#[test]
fn every_image_is_pinned_and_the_stack_has_its_services() {
    let services = compose();
    for name in [
        "otel-collector",
        "jaeger",
        "prometheus",
        "loki",
        "grafana",
        "load",
    ] {
        assert!(services.contains_key(name), "no service {name}");
    }
    for (name, service) in &services {
        if service.get("build").is_some() {
            continue;
        }
        let image = str_at(service, "image");
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or_default();
        assert!(
            tag != "latest" && tag.chars().any(|c| c.is_ascii_digit()),
            "{name}: image {image} is not pinned to a version"
        );
    }
    assert!(str_at(&services["jaeger"], "image").starts_with("jaegertracing/jaeger:2."));
    assert!(str_at(&services["loki"], "image").starts_with("grafana/loki:3."));
    let load = strings(services["load"].get("command"));
    assert_eq!(load[0], "load");
    assert!(load.iter().any(|a| a.ends_with("-rate")), "a failure mix");
}

#[test]
fn collector_pipelines_use_defined_components_and_reach_the_backends() {
    let services = compose();
    let config = yaml("deploy/otel-collector.yaml");
    let collector = &services["otel-collector"];
    let path = mount(collector, "./deploy/otel-collector.yaml");
    let command = strings(collector.get("command"));
    assert!(command.contains(&format!("--config={path}")), "{command:?}");

    for (name, pipeline) in get(&config, "service.pipelines").as_mapping().unwrap() {
        for kind in ["receivers", "processors", "exporters"] {
            for component in strings(pipeline.get(kind)) {
                assert!(
                    config.get(kind).and_then(|k| k.get(&component)).is_some(),
                    "pipeline {name:?} names {kind} {component}, which is not defined"
                );
            }
        }
    }
    let traces = strings(get(&config, "service.pipelines.traces").get("processors"));
    for needed in ["memory_limiter", "resource", "tail_sampling", "batch"] {
        assert!(traces.iter().any(|p| p == needed), "traces lack {needed}");
    }
    assert_eq!(traces.first().map(String::as_str), Some("memory_limiter"));
    assert_eq!(traces.last().map(String::as_str), Some("batch"));

    // Receivers: the services' OTLP endpoint (gRPC) and HTTP, both published.
    let grpc = port_of(str_at(&config, "receivers.otlp.protocols.grpc.endpoint"));
    let http = port_of(str_at(&config, "receivers.otlp.protocols.http.endpoint"));
    let app = env(&services["orchestrator"]);
    assert_eq!(
        host_port(&app["OTEL_EXPORTER_OTLP_ENDPOINT"]),
        ("otel-collector".to_owned(), grpc)
    );
    assert!(
        published_ports(collector).contains(&grpc) && published_ports(collector).contains(&http)
    );

    // Traces to Jaeger over OTLP gRPC, on the port Jaeger's receiver is set to.
    let jaeger = str_at(&config, "exporters.otlp/jaeger.endpoint");
    let (host, port) = jaeger.split_once(':').unwrap();
    assert_eq!(host, "jaeger");
    let jaeger_args = strings(services["jaeger"].get("command"));
    let grpc_set = format!("--set=receivers.otlp.protocols.grpc.endpoint=0.0.0.0:{port}");
    assert!(jaeger_args.contains(&grpc_set), "{jaeger_args:?}");

    // Logs to Loki's native OTLP endpoint, on the port Loki listens on.
    let loki = str_at(&config, "exporters.otlphttp/loki.endpoint");
    assert_eq!(host_port(loki), ("loki".to_owned(), loki_port()));
    assert!(loki.ends_with("/otlp"), "{loki}");

    // Metrics: Prometheus scrapes the exporter's port on the collector.
    let exporter_port = port_of(str_at(&config, "exporters.prometheus.endpoint"));
    let prometheus = yaml("deploy/prometheus.yml");
    let jobs = get(&prometheus, "scrape_configs").as_sequence().unwrap();
    let targets: Vec<String> = jobs
        .iter()
        .flat_map(|job| {
            job.get("static_configs")
                .and_then(Value::as_sequence)
                .cloned()
        })
        .flatten()
        .flat_map(|sc| strings(sc.get("targets")))
        .collect();
    assert!(
        targets.contains(&format!("otel-collector:{exporter_port}")),
        "{targets:?}"
    );
    let prom_service = &services["prometheus"];
    let prom_path = mount(prom_service, "./deploy/prometheus.yml");
    let prom_command = strings(prom_service.get("command"));
    assert!(prom_command.contains(&format!("--config.file={prom_path}")));
}

#[test]
fn tail_sampling_keeps_errors_compensations_slow_traces_and_a_share_with_env_thresholds() {
    let config = yaml("deploy/otel-collector.yaml");
    let policies = get(&config, "processors.tail_sampling.policies")
        .as_sequence()
        .unwrap();
    let of_type = |kind: &str| {
        policies
            .iter()
            .find(|p| p.get("type").and_then(Value::as_str) == Some(kind))
            .unwrap_or_else(|| panic!("no {kind} policy"))
    };
    assert_eq!(
        strings(get(of_type("status_code"), "status_code").get("status_codes")),
        ["ERROR"]
    );
    let compensated = get(of_type("string_attribute"), "string_attribute");
    // The attribute and value the orchestrator puts on saga and compensation spans.
    assert_eq!(str_at(compensated, "key"), "saga.outcome");
    assert_eq!(
        strings(compensated.get("values")),
        [SagaStatus::Compensated.as_str()]
    );
    let raw = text("deploy/otel-collector.yaml");
    let collector_env = env(&compose()["otel-collector"]);
    let thresholds = [
        ("latency.threshold_ms", of_type("latency")),
        (
            "probabilistic.sampling_percentage",
            of_type("probabilistic"),
        ),
    ];
    for (path, policy) in thresholds {
        let value = get(policy, path);
        let value = value
            .as_str()
            .unwrap_or_else(|| panic!("{path} is fixed, not ${{env:..}}"));
        assert!(value.starts_with("${env:"), "{path}: {value}");
    }
    // Every variable the config reads is set by compose, so each threshold is one edit there.
    for reference in raw.split("${env:").skip(1) {
        let name = reference.split([':', '}']).next().unwrap();
        assert!(
            collector_env.contains_key(name),
            "compose does not set {name}"
        );
    }
}

fn loki_port() -> u16 {
    let loki = yaml("deploy/loki.yaml");
    get(&loki, "server.http_listen_port").as_u64().unwrap() as u16
}

#[test]
fn loki_takes_otlp_and_grafana_links_traces_and_logs_both_ways() {
    let services = compose();
    let loki = yaml("deploy/loki.yaml");
    assert_eq!(
        get(&loki, "limits_config.allow_structured_metadata").as_bool(),
        Some(true)
    );
    let schema = &get(&loki, "schema_config.configs").as_sequence().unwrap()[0];
    assert_eq!(
        str_at(schema, "schema"),
        "v13",
        "structured metadata needs v13"
    );
    let loki_path = mount(&services["loki"], "./deploy/loki.yaml");
    assert!(
        strings(services["loki"].get("command")).contains(&format!("-config.file={loki_path}"))
    );

    let grafana = &services["grafana"];
    let provisioning = mount(grafana, "./deploy/grafana/provisioning");
    assert_eq!(provisioning, "/etc/grafana/provisioning");
    let dashboards = mount(grafana, "./deploy/grafana/dashboards");
    let provider = yaml("deploy/grafana/provisioning/dashboards/dashboards.yaml");
    let provider = &get(&provider, "providers").as_sequence().unwrap()[0];
    assert_eq!(str_at(provider, "options.path"), dashboards);

    let sources = yaml("deploy/grafana/provisioning/datasources/datasources.yaml");
    let sources = get(&sources, "datasources").as_sequence().unwrap();
    let by_type = |kind: &str| {
        sources
            .iter()
            .find(|s| s.get("type").and_then(Value::as_str) == Some(kind))
            .unwrap_or_else(|| panic!("no {kind} data source"))
    };
    let prometheus_port = 9090; // Prometheus's default listen address, published by compose.
    let expected = [
        ("prometheus", "prometheus", prometheus_port),
        ("loki", "loki", loki_port()),
        ("jaeger", "jaeger", 16686),
    ];
    for (kind, host, port) in expected {
        let url = str_at(by_type(kind), "url");
        assert_eq!(host_port(url), (host.to_owned(), port), "{kind}: {url}");
        assert!(
            published_ports(&services[host]).contains(&port),
            "{host} publishes {port}"
        );
    }
    let uid = |kind: &str| str_at(by_type(kind), "uid").to_owned();
    // Trace → logs: the Jaeger data source queries Loki by the trace id in structured metadata,
    // among the logs of our service namespace (a resource attribute Loki makes a label).
    let jaeger = by_type("jaeger");
    assert_eq!(
        str_at(jaeger, "jsonData.tracesToLogsV2.datasourceUid"),
        uid("loki")
    );
    let query = str_at(jaeger, "jsonData.tracesToLogsV2.query");
    assert!(
        query.contains(r#"trace_id="$${__trace.traceId}""#),
        "{query}"
    );
    assert!(
        query.contains(r#"service_namespace="checkout-saga""#),
        "{query}"
    );
    // Log line → trace: a derived field on the trace_id metadata opens it in Jaeger.
    let fields = get(by_type("loki"), "jsonData.derivedFields")
        .as_sequence()
        .unwrap();
    assert!(
        fields
            .iter()
            .any(|f| str_at(f, "datasourceUid") == uid("jaeger")
                && str_at(f, "matcherRegex") == "trace_id")
    );
    let resource = text("shared/src/telemetry.rs");
    assert!(resource.contains(r#"KeyValue::new("service.namespace", "checkout-saga")"#));
}

#[test]
fn every_dashboard_query_asks_for_a_metric_the_code_emits_by_labels_it_carries() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&text("deploy/grafana/dashboards/checkout.json")).unwrap();
    let sources = yaml("deploy/grafana/provisioning/datasources/datasources.yaml");
    let uids: BTreeSet<String> = get(&sources, "datasources")
        .as_sequence()
        .unwrap()
        .iter()
        .map(|s| str_at(s, "uid").to_owned())
        .collect();
    let mut used = BTreeSet::new();
    let panels = dashboard["panels"].as_array().unwrap();
    for panel in panels {
        let title = panel["title"].as_str().unwrap();
        for target in panel["targets"].as_array().unwrap() {
            let source = target["datasource"]["uid"].as_str().unwrap();
            assert!(
                uids.contains(source),
                "{title}: unknown data source {source}"
            );
            if source != "prometheus" {
                continue;
            }
            let expr = target["expr"].as_str().unwrap();
            let (metrics, labels) = promql::read(expr);
            assert!(!metrics.is_empty(), "{title}: no metric in {expr}");
            for metric in &metrics {
                let def = INSTRUMENTS
                    .iter()
                    .find(|i| prometheus_names(i).contains(metric))
                    .unwrap_or_else(|| panic!("{title}: {metric} is not emitted by the code"));
                let mut allowed: BTreeSet<String> =
                    def.attributes.iter().map(|a| prometheus_label(a)).collect();
                allowed.extend(["le", "job", "instance", "service_name"].map(String::from));
                for label in &labels {
                    assert!(
                        allowed.contains(label),
                        "{title}: {metric} has no label {label}"
                    );
                }
                used.insert(def.name);
            }
        }
    }
    let wanted = [
        m::SAGAS,
        m::DURATION,
        m::STEP_DURATION,
        m::VALUE,
        m::IN_FLIGHT,
        m::ABANDONED,
        m::REDELIVERIES,
        m::DEAD_LETTERS,
        m::REJECTIONS,
        m::NOTIFICATIONS,
    ];
    for def in wanted {
        assert!(used.contains(def.name), "no panel shows {}", def.name);
    }
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for topic in [
        "Completion",
        "compensation",
        "order value",
        "Abandonment",
        "p50",
        "step and phase",
        "flight",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(topic)),
            "no panel about {topic}: {titles:?}"
        );
    }
}
