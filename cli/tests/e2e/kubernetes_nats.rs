//! deploy/kubernetes/, the rest of the check (kubernetes.rs has the services): the NATS Helm
//! values give the cluster the services expect (nodes, replicas, file storage, the pinned
//! release, the pods NATS_URL lists), and every manifest is applied by the kustomization.

use crate::compose::compose;
use crate::kubernetes::{dir, documents, kustomization, objects, str_of};
use std::collections::BTreeSet;

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
