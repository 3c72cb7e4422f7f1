//! docker-compose.yml cannot run here (no Docker engine), so it is checked against the code:
//! every service runs a real subcommand, every variable it sets is one that subcommand (or the
//! OpenTelemetry SDK) reads, and every URL names a service and a port that service exposes.

use serde_yaml::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// Variables the OpenTelemetry SDK reads itself, not the `checkout` command line.
const SDK_VARIABLES: [&str; 4] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_SAMPLER",
    "OTEL_METRIC_EXPORT_INTERVAL",
];

pub(crate) fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
}

pub(crate) fn compose() -> BTreeMap<String, Value> {
    let text = std::fs::read_to_string(root().join("docker-compose.yml")).expect("compose file");
    let mut doc: Value = serde_yaml::from_str(&text).expect("valid YAML");
    doc.apply_merge().expect("merge keys");
    let services = doc
        .get_mut("services")
        .and_then(Value::as_mapping_mut)
        .expect("services");
    let mut out = BTreeMap::new();
    for (name, service) in services.iter_mut() {
        service.apply_merge().expect("merge keys");
        if let Some(env) = service.get_mut("environment") {
            env.apply_merge().expect("merge keys");
        }
        out.insert(name.as_str().expect("name").to_owned(), service.clone());
    }
    out
}

pub(crate) fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_sequence)
        .map(|seq| {
            seq.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn env(service: &Value) -> BTreeMap<String, String> {
    service
        .get("environment")
        .and_then(Value::as_mapping)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn published_ports(service: &Value) -> Vec<u16> {
    strings(service.get("ports"))
        .iter()
        .filter_map(|p| p.rsplit(':').next()?.parse().ok())
        .collect()
}

fn help(args: &[String]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_checkout"))
        .args(args)
        .arg("--help")
        .output()
        .expect("run checkout");
    assert!(
        output.status.success(),
        "`checkout {}` is not a command",
        args.join(" ")
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `scheme://[user@]host:port/...` → (host, port).
pub(crate) fn host_port(url: &str) -> (String, u16) {
    let rest = url.split("://").nth(1).expect("scheme");
    let authority = rest.split('/').next().expect("authority");
    let host_port = authority.rsplit('@').next().expect("host");
    let (host, port) = host_port.split_once(':').expect("explicit port");
    (host.to_owned(), port.parse().expect("port"))
}

#[test]
fn compose_services_run_real_commands_with_variables_the_code_reads() {
    let services = compose();
    // Every worker kind of the step table runs, as its own service.
    let workers: Vec<&str> = checkout_shared::steps::worker_kinds().collect();
    for name in ["nats", "postgres", "jaeger", "orchestrator", "gateway"]
        .into_iter()
        .chain(workers.iter().copied())
    {
        assert!(
            services.contains_key(name),
            "docker-compose.yml has no service {name}"
        );
    }
    for (name, service) in services.iter().filter(|(_, s)| s.get("build").is_some()) {
        let command = strings(service.get("command"));
        let help = help(&command);
        for key in env(service).into_keys() {
            if SDK_VARIABLES.contains(&key.as_str()) {
                continue;
            }
            // A secret's value is hidden: `[env: NATS_PASSWORD]`.
            assert!(
                help.contains(&format!("[env: {key}=")) || help.contains(&format!("[env: {key}]")),
                "{name}: `checkout {}` does not read {key}",
                command.join(" ")
            );
        }
        if name == "gateway" {
            assert_eq!(command, vec!["gateway".to_owned()]);
            assert_eq!(env(service).get("OTEL_SERVICE_NAME"), Some(name));
            let listen = &env(service)["GATEWAY_LISTEN"];
            let port: u16 = listen.rsplit(':').next().unwrap().parse().unwrap();
            assert!(
                listen.starts_with("0.0.0.0:"),
                "reachable from outside its container"
            );
            assert!(
                published_ports(service).contains(&port),
                "the gateway publishes the port it listens on"
            );
        }
        if workers.contains(&name.as_str()) {
            assert_eq!(command, vec!["worker".to_owned(), name.clone()]);
            assert_eq!(
                env(service).get("OTEL_SERVICE_NAME"),
                Some(name),
                "service.name matches"
            );
        }
    }
}

#[test]
fn compose_urls_point_at_services_and_ports_they_expose() {
    let services = compose();
    let expects = [
        ("NATS_URL", "nats", 4222),
        ("DATABASE_URL", "postgres", 5432),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "otel-collector", 4317),
    ];
    // The cluster profile's services reach their own nodes and database (compose_cluster.rs).
    let single = |s: &Value| !strings(s.get("profiles")).iter().any(|p| p == "cluster");
    for (name, service) in services
        .iter()
        .filter(|(_, s)| s.get("build").is_some() && single(s))
    {
        let env = env(service);
        for (key, host, port) in expects {
            let Some(url) = env.get(key) else {
                // The administrator's one shot (compose_auth.rs) neither stores nor traces.
                assert!(
                    (["client", "load"].contains(&name.as_str()) && key == "DATABASE_URL")
                        || name == "provision",
                    "{name} lacks {key}"
                );
                continue;
            };
            assert_eq!(
                host_port(url),
                (host.to_owned(), port),
                "{name}: {key}={url}"
            );
            assert!(
                published_ports(&services[host]).contains(&port),
                "{host} does not expose {port}"
            );
        }
    }
    assert!(
        published_ports(&services["jaeger"]).contains(&16686),
        "Jaeger's UI"
    );
    let database = env(&services["orchestrator"])["DATABASE_URL"]
        .rsplit('/')
        .next()
        .map(str::to_owned);
    assert_eq!(
        env(&services["postgres"]).get("POSTGRES_DB").cloned(),
        database
    );
}

#[test]
fn compose_nats_uses_the_config_from_nats_folder_with_jetstream() {
    let services = compose();
    let nats = &services["nats"];
    let mounts = strings(nats.get("volumes"));
    let config = mounts
        .iter()
        .find(|m| m.starts_with("./nats/"))
        .expect("config mounted from nats/");
    let host_path = config.split(':').next().expect("path");
    let text = std::fs::read_to_string(root().join(host_path)).expect("config exists");
    assert!(text.contains("jetstream"), "JetStream enabled");
    assert!(text.contains("listen: 0.0.0.0:4222"));
    let store = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("store_dir:"))
        .expect("store_dir")
        .trim();
    assert!(
        mounts.iter().any(|m| m.ends_with(&format!(":{store}"))),
        "the JetStream store is a volume"
    );
    let command = strings(nats.get("command"));
    let in_container = config.split(':').nth(1).expect("container path");
    assert!(
        command.iter().any(|c| c == in_container),
        "nats-server is started with that config"
    );
}
