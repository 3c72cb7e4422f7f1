//! deploy/kubernetes/ cannot be applied here (no cluster), so it is checked against the code:
//! every service runs a real subcommand with variables that subcommand reads, each takes its
//! own database URL (and only it) from a Secret the example defines, connects to NATS as its
//! own identity (kubernetes_nats.rs), probes name the routes the code serves on the port it is
//! told to listen on, the grace period outlasts the drain, and the NATS Helm values give the
//! cluster the services expect.

use crate::compose::root;
use crate::kubernetes_nats::service_identity;
use checkout_cli::databases::worker_url_var;
use checkout_cli::databases::{GATEWAY_URL_VAR, SAGA_URL_VAR, SHARED_URL_VAR, owner_url_vars};
use checkout_cli::health;
use checkout_shared::Step;
use serde::Deserialize as _;
use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Variables the OpenTelemetry SDK reads itself, not the `checkout` command line.
const SDK_VARIABLES: [&str; 3] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_SAMPLER",
];

pub(crate) fn dir() -> std::path::PathBuf {
    root().join("deploy/kubernetes")
}

/// Every document of a YAML file.
pub(crate) fn documents(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{file}: {e}")))
        .filter(|doc| !doc.is_null())
        .collect()
}

pub(crate) fn kustomization() -> Value {
    documents("kustomization.yaml").remove(0)
}

/// The objects `kubectl apply -k` creates, by (kind, name).
pub(crate) fn objects() -> BTreeMap<(String, String), Value> {
    let resources = kustomization()["resources"]
        .as_sequence()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().expect("file name").to_owned())
        .collect::<Vec<_>>();
    resources
        .iter()
        .flat_map(|file| documents(file))
        .map(|doc| {
            let kind = doc["kind"].as_str().expect("kind").to_owned();
            let name = doc["metadata"]["name"].as_str().expect("name").to_owned();
            ((kind, name), doc)
        })
        .collect()
}

pub(crate) fn str_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// Whether a `--help` text names `variable` as one its command reads (a secret's, such as
/// `NATS_PASSWORD`, is listed without its value: `[env: NATS_PASSWORD]`).
pub(crate) fn reads(help: &str, variable: &str) -> bool {
    help.contains(&format!("[env: {variable}=")) || help.contains(&format!("[env: {variable}]"))
}

pub(crate) fn help(args: &[String]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_checkout"))
        .args(args)
        .arg("--help")
        .output()
        .expect("run checkout");
    assert!(
        output.status.success(),
        "`checkout {args:?}` is not a command"
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The one container of a Deployment's (or a Job's) pod.
pub(crate) fn container(workload: &Value) -> &Value {
    let containers = workload["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .expect("containers");
    assert_eq!(containers.len(), 1, "one container per service");
    &containers[0]
}

/// What the services expect of each Deployment: the command and its own database variable.
fn expected_services() -> Vec<(String, Vec<String>, &'static str)> {
    let workers = Step::ALL.iter().map(|kind| {
        (
            format!("worker-{kind}"),
            vec!["worker".to_owned(), kind.to_string()],
            worker_url_var(*kind),
        )
    });
    [
        (
            "orchestrator".to_owned(),
            vec!["orchestrator".to_owned()],
            SAGA_URL_VAR,
        ),
        (
            "gateway".to_owned(),
            vec!["gateway".to_owned()],
            GATEWAY_URL_VAR,
        ),
    ]
    .into_iter()
    .chain(workers)
    .collect()
}

/// The Secrets of the example file: name → keys.
fn example_secrets() -> BTreeMap<String, BTreeSet<String>> {
    documents("database-secrets.example.yaml")
        .into_iter()
        .map(|doc| {
            assert_eq!(doc["kind"].as_str(), Some("Secret"));
            let keys = doc["stringData"]
                .as_mapping()
                .expect("stringData")
                .keys()
                .map(|k| k.as_str().expect("key").to_owned())
                .collect();
            (
                doc["metadata"]["name"].as_str().expect("name").to_owned(),
                keys,
            )
        })
        .collect()
}

#[test]
fn kubernetes_services_run_real_commands_each_with_its_own_database_secret() {
    let objects = objects();
    let config = &objects[&("ConfigMap".to_owned(), "checkout-config".to_owned())];
    let shared: BTreeMap<String, String> = config["data"]
        .as_mapping()
        .expect("data")
        .iter()
        .map(|(k, v)| (k.as_str().expect("key").to_owned(), str_of(v)))
        .collect();
    let secrets = example_secrets();
    let owner_vars: BTreeSet<&str> = owner_url_vars().into_iter().map(|(_, v)| v).collect();
    let deployments: Vec<&String> = objects
        .keys()
        .filter(|(kind, _)| kind == "Deployment")
        .map(|(_, name)| name)
        .collect();
    let expected = expected_services();
    assert_eq!(
        deployments
            .iter()
            .map(|n| n.as_str())
            .collect::<BTreeSet<_>>(),
        expected.iter().map(|(n, _, _)| n.as_str()).collect(),
        "one Deployment per service: the orchestrator, the gateway, a worker per step"
    );
    for (name, args, own_db) in expected {
        let deployment = &objects[&("Deployment".to_owned(), name.clone())];
        let container = container(deployment);
        assert_eq!(container["image"].as_str(), Some("checkout-saga"), "{name}");
        let command: Vec<String> = container["args"]
            .as_sequence()
            .expect("args")
            .iter()
            .map(str_of)
            .collect();
        assert_eq!(command, args, "{name} runs `checkout {}`", args.join(" "));
        let help = help(&command);
        let mut env: BTreeMap<String, &Value> = BTreeMap::new();
        for var in container["env"].as_sequence().expect("env") {
            env.insert(var["name"].as_str().expect("name").to_owned(), var);
        }
        let from_config = container["envFrom"]
            .as_sequence()
            .map(|s| {
                s.iter()
                    .any(|e| e["configMapRef"]["name"] == "checkout-config")
            })
            .unwrap_or(false);
        assert!(from_config, "{name} takes the shared settings");
        for key in env.keys().chain(shared.keys()) {
            assert!(
                SDK_VARIABLES.contains(&key.as_str()) || reads(&help, key),
                "{name}: `checkout {}` does not read {key}",
                command.join(" ")
            );
        }
        let service = name.strip_prefix("worker-").unwrap_or(&name);
        assert_eq!(
            env.get("OTEL_SERVICE_NAME")
                .map(|v| str_of(&v["value"]))
                .as_deref(),
            Some(service)
        );
        // Its own database, from a Secret, and no other owner's nor the shared one.
        let secret = &env
            .get(own_db)
            .unwrap_or_else(|| panic!("{name} lacks {own_db}"))["valueFrom"]["secretKeyRef"];
        let (secret_name, key) = (str_of(&secret["name"]), str_of(&secret["key"]));
        assert!(
            secrets
                .get(&secret_name)
                .is_some_and(|keys| keys.contains(&key)),
            "{name}: Secret {secret_name} with key {key} is not in the example"
        );
        for other in owner_vars.iter().chain([&SHARED_URL_VAR]) {
            let set = env.contains_key(*other) || shared.contains_key(*other);
            assert!(*other == own_db || !set, "{name} is given {other}");
        }
        // Its own identity on the broker, its password from the NATS Secret, no provisioning.
        service_identity(&name, &command, &env, &shared);
    }
}

/// The longest a message in hand can keep a draining service: its ack wait, after which
/// JetStream redelivers it to another instance anyway.
fn longest_ack_wait_secs() -> u64 {
    let text = std::fs::read_to_string(root().join("nats/jetstream.json")).expect("topology");
    let topology: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let mut waits: Vec<u64> = topology["consumers"]
        .as_array()
        .expect("consumers")
        .iter()
        .chain([&topology["worker_consumer"]])
        .map(|c| c["ack_wait_secs"].as_u64().expect("ack_wait_secs"))
        .collect();
    waits.sort_unstable();
    *waits.last().expect("a consumer")
}

#[test]
fn kubernetes_probes_ports_and_termination_match_what_the_services_serve() {
    let objects = objects();
    let routes = checkout_gateway::openapi::document()["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .cloned()
        .collect::<BTreeSet<_>>();
    // The drain: the messages in hand (each at most its ack wait), then a database wait
    // (the pools' 10 s acquire timeout) and the span flush (the exporter's 10 s timeout).
    let drain = longest_ack_wait_secs() + 10 + 10;
    for (name, _, _) in expected_services() {
        let deployment = &objects[&("Deployment".to_owned(), name.clone())];
        let pod = &deployment["spec"]["template"]["spec"];
        let container = container(deployment);
        let pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_u64()
            .unwrap_or(0);
        let grace = pod["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("grace");
        assert!(
            grace > drain + pause,
            "{name}: {grace} s of grace for a drain of up to {drain} s after {pause} s"
        );
        assert_eq!(
            pod["securityContext"]["runAsUser"].as_u64(),
            dockerfile_uid(),
            "{name} runs as the image's user"
        );
        let env: BTreeMap<String, String> = container["env"]
            .as_sequence()
            .expect("env")
            .iter()
            .filter(|v| !v["value"].is_null())
            .map(|v| (str_of(&v["name"]), str_of(&v["value"])))
            .collect();
        // The gateway serves its probes on its own port; the orchestrator and the workers
        // on --health-listen's, which they serve only when it is set.
        let (listen_var, ready, alive) = if name == "gateway" {
            ("GATEWAY_LISTEN", "/readyz", "/healthz")
        } else {
            ("HEALTH_LISTEN", health::READYZ, health::HEALTHZ)
        };
        let listen = env
            .get(listen_var)
            .unwrap_or_else(|| panic!("{name} serves no port without {listen_var}"));
        assert!(
            listen.starts_with("0.0.0.0:"),
            "{name}: reachable from outside the pod"
        );
        let port: u64 = listen.rsplit(':').next().unwrap().parse().unwrap();
        let ports: BTreeMap<String, u64> = container["ports"]
            .as_sequence()
            .expect("ports")
            .iter()
            .map(|p| (str_of(&p["name"]), p["containerPort"].as_u64().unwrap()))
            .collect();
        assert_eq!(
            ports.values().copied().collect::<Vec<_>>(),
            vec![port],
            "{name}"
        );
        for (probe, path) in [("readinessProbe", ready), ("livenessProbe", alive)] {
            let get = &container[probe]["httpGet"];
            assert_eq!(get["path"].as_str(), Some(path), "{name} {probe}");
            assert_eq!(
                ports.get(&str_of(&get["port"])),
                Some(&port),
                "{name} {probe} port"
            );
        }
        if name != "gateway" {
            continue;
        }
        for path in [ready, alive] {
            assert!(routes.contains(path), "the gateway serves no {path}");
        }
        let service = &objects[&("Service".to_owned(), "gateway".to_owned())];
        assert_eq!(
            service["spec"]["selector"],
            deployment["spec"]["selector"]["matchLabels"]
        );
        for p in service["spec"]["ports"].as_sequence().expect("ports") {
            assert!(
                ports.contains_key(&str_of(&p["targetPort"])),
                "Service targets {p:?}"
            );
        }
    }
}

/// The uid of the Dockerfile's `USER uid:gid`.
fn dockerfile_uid() -> Option<u64> {
    let text = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    text.lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .and_then(|user| user.split(':').next()?.trim().parse().ok())
}
