//! deploy/kubernetes/, the rest of the check (kubernetes.rs has the services): the NATS Helm
//! values give the cluster the services expect (nodes, replicas, file storage, the pinned
//! release, the pods NATS_URL lists) and require the identities of nats/auth/users.conf, with
//! every password it reads in the server's environment from the NATS Secret; every service
//! connects as the identity its command needs, with its password from that Secret and without
//! provisioning, which a Job does as the administrator; and every manifest is applied by the
//! kustomization.

use crate::compose::{compose, root};
use crate::compose_auth::{identities, identity, password_variables};
use crate::kubernetes::{container, dir, documents, help, kustomization, objects, reads, str_of};
use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};

/// The example's Secret of NATS passwords: its name and keys. It holds placeholders only.
fn nats_secret() -> (String, BTreeSet<String>) {
    let mut docs = documents("nats-secrets.example.yaml");
    assert_eq!(docs.len(), 1, "one Secret holds the NATS passwords");
    let secret = docs.remove(0);
    assert_eq!(secret["kind"].as_str(), Some("Secret"));
    let data = secret["stringData"].as_mapping().expect("stringData");
    for (key, value) in data {
        assert_eq!(value.as_str(), Some("CHANGE-ME"), "{key:?}: a placeholder");
    }
    let keys = data.keys().map(str_of).collect();
    (str_of(&secret["metadata"]["name"]), keys)
}

/// The variable users.conf reads `identity`'s password from, and the Secret's key holding it.
fn password_variable(identity: &str) -> String {
    format!("{}_PASSWORD", identity.to_uppercase())
}

/// `var` (an env entry) takes `key` of the NATS Secret the example defines, never a literal.
fn assert_from_nats_secret(who: &str, var: &Value, key: &str) {
    assert!(var.get("value").is_none(), "{who}: a literal password");
    let (secret, keys) = nats_secret();
    let reference = &var["valueFrom"]["secretKeyRef"];
    assert_eq!(reference["name"].as_str(), Some(secret.as_str()), "{who}");
    assert_eq!(reference["key"].as_str(), Some(key), "{who}");
    assert!(keys.contains(key), "{who}: the example Secret has no {key}");
}

/// A service's NATS access: `NATS_USER` the identity of users.conf its command needs,
/// `NATS_PASSWORD` from that identity's key of the Secret, and `NATS_PROVISION=false` (in its
/// own environment or the shared settings), since no service identity may provision.
pub(crate) fn service_identity(
    name: &str,
    command: &[String],
    env: &BTreeMap<String, &Value>,
    shared: &BTreeMap<String, String>,
) {
    let user = identity(command);
    assert!(
        identities().contains(user),
        "{name}: users.conf has no {user}"
    );
    let given = env.get("NATS_USER").map(|v| str_of(&v["value"]));
    assert_eq!(given.as_deref(), Some(user), "{name} connects as {user}");
    let password = env
        .get("NATS_PASSWORD")
        .unwrap_or_else(|| panic!("{name} has no NATS_PASSWORD"));
    assert_from_nats_secret(name, password, &password_variable(user));
    let provision = env
        .get("NATS_PROVISION")
        .map(|v| str_of(&v["value"]))
        .or_else(|| shared.get("NATS_PROVISION").cloned());
    assert_eq!(
        provision.as_deref(),
        Some("false"),
        "{name} would provision"
    );
}

#[test]
fn kubernetes_nats_values_give_the_cluster_the_services_expect() {
    let values = documents("nats-values.yaml").remove(0);
    let config = &values["config"];
    assert_eq!(config["cluster"]["enabled"].as_bool(), Some(true));
    let nodes = config["cluster"]["replicas"].as_u64().expect("replicas");
    assert_eq!(config["jetstream"]["enabled"].as_bool(), Some(true));
    let file = &config["jetstream"]["fileStore"];
    assert_eq!(
        file["enabled"].as_bool(),
        Some(true),
        "JetStream on file storage"
    );
    assert_eq!(
        file["pvc"]["enabled"].as_bool(),
        Some(true),
        "on a volume per node"
    );
    assert_ne!(
        config["jetstream"]["memoryStore"]["enabled"].as_bool(),
        Some(true)
    );
    // The same server release compose runs (and the tests pin).
    let compose_image = compose()["nats"]["image"]
        .as_str()
        .expect("image")
        .to_owned();
    let tag = values["container"]["image"]["tag"].as_str().expect("tag");
    assert_eq!(compose_image, format!("nats:{tag}"));

    let objects = objects();
    let shared = &objects[&("ConfigMap".to_owned(), "checkout-config".to_owned())]["data"];
    let replicas: u64 = str_of(&shared["STREAM_REPLICAS"]).parse().expect("number");
    assert_eq!(replicas, 3, "every stream on three nodes");
    assert!(replicas <= nodes, "{replicas} replicas on {nodes} nodes");
    // NATS_URL lists every pod of the chart's StatefulSet, on the client port.
    let name = values["fullnameOverride"]
        .as_str()
        .expect("fullnameOverride");
    let port = config["nats"]["port"].as_u64().expect("port");
    let expected: Vec<String> = (0..nodes)
        .map(|i| format!("nats://{name}-{i}.{name}-headless:{port}"))
        .collect();
    assert_eq!(str_of(&shared["NATS_URL"]), expected.join(","));
    // Pinned: the chart version the values are written for, and the services' image.
    let text = std::fs::read_to_string(dir().join("nats-values.yaml")).expect("values");
    assert!(
        text.contains("--version 2."),
        "the chart's version is named"
    );
    let images = kustomization()["images"]
        .as_sequence()
        .expect("images")
        .clone();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0]["name"].as_str(), Some("checkout-saga"));
    assert_eq!(
        str_of(&images[0]["newTag"]),
        env!("CARGO_PKG_VERSION"),
        "the image of this release"
    );
}

#[test]
fn every_kubernetes_manifest_is_applied_and_every_applied_file_exists() {
    let listed: BTreeSet<String> = kustomization()["resources"]
        .as_sequence()
        .expect("resources")
        .iter()
        .map(str_of)
        .collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(dir())
        .expect("deploy/kubernetes")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".yaml"))
        // Applied otherwise: by helm, by the user with their own URLs, or the list itself.
        .filter(|f| {
            !["kustomization.yaml", "nats-values.yaml"].contains(&f.as_str())
                && !f.ends_with(".example.yaml")
        })
        .collect();
    assert_eq!(listed, on_disk);
}

#[test]
fn kubernetes_nats_requires_the_shipped_identities_with_passwords_from_the_secret() {
    let values = documents("nats-values.yaml").remove(0);
    // users.conf is included: a key ending in `$include` in config.merge becomes the chart's
    // include directive, relative to nats.conf, where the chart mounts its own ConfigMap.
    let includes: Vec<String> = values["config"]["merge"]
        .as_mapping()
        .expect("config.merge")
        .iter()
        .filter(|(k, _)| str_of(k).ends_with("$include"))
        .map(|(_, v)| str_of(v).trim_start_matches("./").to_owned())
        .collect();
    assert_eq!(includes.len(), 1, "{includes:?}");
    let included = &includes[0];
    // That file is users.conf, as shipped: handed to the chart's ConfigMap under the same key
    // by the install command, never a copy (or an empty placeholder) in the values.
    let text = std::fs::read_to_string(dir().join("nats-values.yaml")).expect("values");
    let set_file = text
        .split("--set-file '")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .expect("the install command hands over the users file with --set-file");
    let (path, file) = set_file.split_once('=').expect("KEY=FILE");
    assert_eq!(
        path,
        format!("configMap.merge.data.{}", included.replace('.', "\\.")),
        "the file the config includes"
    );
    assert_eq!(file, "nats/auth/users.conf");
    assert!(root().join(file).is_file(), "{file}");
    assert!(
        values["configMap"]["merge"]["data"][included.as_str()].is_null(),
        "a second users file in the values"
    );
    // Every password users.conf reads is in the server's environment, from the Secret, and
    // the Secret holds those and nothing else.
    let variables = password_variables();
    assert_eq!(variables.len(), identities().len(), "{variables:?}");
    assert_eq!(nats_secret().1, variables, "the example Secret's keys");
    let env = values["container"]["env"]
        .as_mapping()
        .expect("container.env");
    for variable in &variables {
        let var = env
            .get(variable.as_str())
            .unwrap_or_else(|| panic!("nats-server lacks {variable}"));
        assert_from_nats_secret(&format!("nats-server {variable}"), var, variable);
    }
}

#[test]
fn kubernetes_provisioning_is_a_job_run_as_the_administrator() {
    let objects = objects();
    let jobs: Vec<(&String, &Value)> = objects
        .iter()
        .filter(|((kind, _), _)| kind == "Job")
        .map(|((_, name), job)| (name, job))
        .collect();
    assert_eq!(jobs.len(), 1, "one provisioning Job: {jobs:?}");
    let (name, job) = jobs[0];
    let restart = job["spec"]["template"]["spec"]["restartPolicy"].as_str();
    assert!(
        matches!(restart, Some("OnFailure" | "Never")),
        "{restart:?}"
    );
    let container = container(job);
    assert_eq!(container["image"].as_str(), Some("checkout-saga"), "{name}");
    let command: Vec<String> = container["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(str_of)
        .collect();
    assert_eq!(command, ["provision"], "{name} runs `checkout provision`");
    let help = help(&command);
    let env: BTreeMap<String, &Value> = container["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .map(|v| (str_of(&v["name"]), v))
        .collect();
    for key in env.keys() {
        assert!(
            reads(&help, key),
            "`checkout provision` does not read {key}"
        );
    }
    let user = identity(&command);
    assert_eq!(user, "admin");
    assert!(identities().contains(user), "users.conf has no {user}");
    let given = env.get("NATS_USER").map(|v| str_of(&v["value"]));
    assert_eq!(given.as_deref(), Some(user), "{name} provisions as {user}");
    let password = env.get("NATS_PASSWORD").expect("NATS_PASSWORD");
    assert_from_nats_secret(name, password, &password_variable(user));
    // The broker and the replicas the services are given: their shared settings.
    let shared = &objects[&("ConfigMap".to_owned(), "checkout-config".to_owned())];
    for key in ["NATS_URL", "STREAM_REPLICAS"] {
        let from = &env.get(key).unwrap_or_else(|| panic!("{name} lacks {key}"))["valueFrom"]["configMapKeyRef"];
        assert_eq!(from["name"].as_str(), Some("checkout-config"), "{key}");
        assert_eq!(from["key"].as_str(), Some(key), "{key}");
        assert!(
            !shared["data"][key].is_null(),
            "checkout-config has no {key}"
        );
    }
}
