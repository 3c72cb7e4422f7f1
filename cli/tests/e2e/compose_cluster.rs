//! docker-compose.yml's "cluster" profile, checked against the code and the node configs as
//! compose.rs checks the rest: three nats-server nodes whose routes name each other, two
//! orchestrators and two workers of every kind listing every node, streams at three replicas,
//! a database of the profile's own; and every image of the file pinned to a version.

use crate::compose::{compose, env, host_port, root, strings};
use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};

const PROFILE: &str = "cluster";

fn in_profile(service: &Value) -> bool {
    strings(service.get("profiles"))
        .iter()
        .any(|p| p == PROFILE)
}

fn profile() -> BTreeMap<String, Value> {
    compose()
        .into_iter()
        .filter(|(_, service)| in_profile(service))
        .collect()
}

/// A node's config as mounted: (its file's text, the container path of its JetStream store).
fn node_config(service: &Value) -> (String, Vec<String>) {
    let mounts = strings(service.get("volumes"));
    let config = mounts
        .iter()
        .find(|m| m.starts_with("./nats/cluster/"))
        .expect("a config from nats/cluster/");
    let host_path = config.split(':').next().expect("path");
    let text = std::fs::read_to_string(root().join(host_path)).expect("config exists");
    let in_container = config.split(':').nth(1).expect("container path");
    assert!(
        strings(service.get("command"))
            .iter()
            .any(|c| c == in_container),
        "nats-server is started with {host_path}"
    );
    (text, mounts)
}

/// The value of `key: value` on a line of a nats-server config.
fn setting<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}:")))
        .map(str::trim)
}

#[test]
fn compose_cluster_nodes_route_to_each_other_with_jetstream_on_a_volume() {
    let all = compose();
    let services = profile();
    let nodes: Vec<&String> = services
        .keys()
        .filter(|name| {
            strings(services[*name].get("volumes"))
                .iter()
                .any(|m| m.starts_with("./nats/"))
        })
        .collect();
    assert_eq!(nodes.len(), 3, "three nats-server nodes: {nodes:?}");
    let mut server_names = BTreeSet::new();
    for name in &nodes {
        let node = &services[*name];
        assert_eq!(
            node["image"], all["nats"]["image"],
            "{name} runs the pinned release"
        );
        let (text, mounts) = node_config(node);
        server_names.insert(
            setting(&text, "server_name")
                .expect("server_name")
                .to_owned(),
        );
        let store = setting(&text, "store_dir").expect("JetStream store_dir");
        assert!(
            mounts
                .iter()
                .any(|m| m.ends_with(&format!(":{store}")) && !m.starts_with('.')),
            "{name}: the JetStream store is a volume"
        );
        // The client port is 4222; the other `listen` is the cluster's.
        let cluster_port = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("listen:"))
            .filter_map(|l| l.trim().rsplit(':').next()?.parse::<u16>().ok())
            .find(|p| *p != 4222)
            .expect("a cluster listen port");
        let routes: BTreeSet<String> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("nats-route://"))
            .map(|r| {
                let (host, port) = r.split_once(':').expect("host:port");
                assert_eq!(port.parse::<u16>().ok(), Some(cluster_port), "{name}: {r}");
                host.to_owned()
            })
            .collect();
        assert_eq!(
            routes,
            nodes.iter().map(|n| (*n).clone()).collect(),
            "{name}'s routes name the three nodes"
        );
    }
    assert_eq!(server_names.len(), 3, "every node has its own server_name");
}

#[test]
fn compose_cluster_runs_two_orchestrators_and_two_workers_per_kind_on_every_node() {
    let all = compose();
    let services = profile();
    let apps: BTreeMap<&String, &Value> = services
        .iter()
        .filter(|(_, s)| s.get("build").is_some())
        .collect();
    let commands: Vec<Vec<String>> = apps.values().map(|s| strings(s.get("command"))).collect();
    let count = |command: &[&str]| commands.iter().filter(|c| *c == command).count();
    assert_eq!(count(&["orchestrator"]), 2, "two orchestrators");
    for kind in checkout_shared::steps::worker_kinds() {
        assert_eq!(count(&["worker", kind]), 2, "two {kind} workers");
    }
    let nodes: BTreeSet<String> = services
        .iter()
        .filter(|(_, s)| s["image"] == all["nats"]["image"])
        .map(|(n, _)| n.clone())
        .collect();
    for (name, service) in apps {
        let env = env(service);
        let urls: BTreeSet<(String, u16)> = env["NATS_URL"].split(',').map(host_port).collect();
        let expected: BTreeSet<(String, u16)> = nodes.iter().map(|n| (n.clone(), 4222)).collect();
        assert_eq!(urls, expected, "{name} lists every node");
        let command = strings(service.get("command"));
        if command.first().map(String::as_str) == Some("load") {
            continue;
        }
        assert_eq!(
            env.get("STREAM_REPLICAS").map(String::as_str),
            Some("3"),
            "{name}"
        );
        // The administrator's one shot needs no database.
        if command == ["provision"] {
            continue;
        }
        let (db_host, db_port) = host_port(&env["DATABASE_URL"]);
        let db = services
            .get(&db_host)
            .unwrap_or_else(|| panic!("{name}: {db_host} is not in the profile"));
        assert_eq!(db_port, 5432);
        let database = env["DATABASE_URL"].rsplit('/').next().map(str::to_owned);
        assert_eq!(
            crate::compose::env(db).get("POSTGRES_DB").cloned(),
            database
        );
        for dep in service["depends_on"]
            .as_mapping()
            .expect("depends_on")
            .keys()
        {
            let dep = dep.as_str().expect("name");
            assert!(all.contains_key(dep), "{name} depends on a missing {dep}");
        }
    }
}

#[test]
fn every_compose_image_is_pinned_to_a_version() {
    for (name, service) in compose() {
        if service.get("build").is_some() {
            continue; // built here from this commit
        }
        let image = service["image"].as_str().expect("image");
        let (repository, tag) = image.rsplit_once(':').unwrap_or((image, ""));
        let version = tag.split('-').next().unwrap_or("").trim_start_matches('v');
        // PostgreSQL numbers its releases major.minor since 10; the others major.minor.patch.
        let parts = if repository == "postgres" { 2 } else { 3 };
        let numeric = version.split('.').all(|p| p.parse::<u32>().is_ok());
        assert!(
            numeric && version.split('.').count() == parts,
            "{name}: {image} is not pinned to a release"
        );
    }
}
