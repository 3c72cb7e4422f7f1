//! docker-compose.yml runs with authentication on, checked against nats/auth/users.conf and
//! the node configs (no Docker engine here): every nats-server includes the shipped users
//! file and takes each password from the environment (compose's `.env`, never a literal);
//! every service of ours connects as its own identity, without provisioning, after a one-shot
//! administrator's `provision` of its own broker has succeeded.

use crate::compose::{compose, env, root, strings};
use serde_yaml::Value;
use std::collections::BTreeSet;

/// Where compose mounts the users file: next to the config, which includes it relatively.
const USERS_MOUNT: &str = "./nats/auth/users.conf:/etc/nats/auth/users.conf:ro";

/// The `$<ID>_PASSWORD` variables `users.conf` reads.
pub(crate) fn password_variables() -> BTreeSet<String> {
    let users = std::fs::read_to_string(root().join("nats/auth/users.conf")).expect("users");
    users
        .split('$')
        .skip(1)
        .filter_map(|rest| {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                .collect();
            name.ends_with("_PASSWORD").then_some(name)
        })
        .collect()
}

/// Whether `value` is compose's interpolation of `variable` that refuses to start without it.
fn from_env(value: &str, variable: &str) -> bool {
    value.starts_with(&format!("${{{variable}:?")) && value.ends_with('}')
}

fn is_broker(service: &Value) -> bool {
    strings(service.get("volumes"))
        .iter()
        .any(|m| m.ends_with(":/etc/nats/nats-server.conf:ro"))
}

#[test]
fn every_compose_broker_requires_the_shipped_identities_with_passwords_from_env() {
    let variables = password_variables();
    assert_eq!(variables.len(), 9, "{variables:?}");
    let brokers: Vec<(String, Value)> = compose()
        .into_iter()
        .filter(|(_, s)| is_broker(s))
        .collect();
    assert_eq!(brokers.len(), 4, "nats and the cluster's three nodes");
    for (name, service) in &brokers {
        let mounts = strings(service.get("volumes"));
        assert!(
            mounts.iter().any(|m| m == USERS_MOUNT),
            "{name}: {mounts:?}"
        );
        let config = mounts
            .iter()
            .find(|m| m.ends_with(":/etc/nats/nats-server.conf:ro"))
            .and_then(|m| m.split(':').next())
            .expect("config");
        let text = std::fs::read_to_string(root().join(config)).expect("config file");
        assert!(
            text.lines()
                .any(|l| l.trim() == "include \"auth/users.conf\""),
            "{config} does not include the users file"
        );
        let env = env(service);
        for variable in &variables {
            let value = env.get(variable).map(String::as_str).unwrap_or_default();
            assert!(from_env(value, variable), "{name}: {variable}={value:?}");
        }
    }
    let ignored = std::fs::read_to_string(root().join(".gitignore")).expect(".gitignore");
    assert!(
        ignored.lines().any(|l| l == "/.env"),
        "the passwords file is committed"
    );
}

/// The identities `users.conf` declares (`{ user: <id>, ...`).
pub(crate) fn identities() -> BTreeSet<String> {
    let users = std::fs::read_to_string(root().join("nats/auth/users.conf")).expect("users");
    users
        .lines()
        .filter_map(|line| line.trim().strip_prefix("{ user: "))
        .filter_map(|rest| rest.split(',').next())
        .map(str::to_owned)
        .collect()
}

/// The identity a service of ours must connect as, by its command (compose's and Kubernetes').
pub(crate) fn identity(command: &[String]) -> &'static str {
    match command.first().map(String::as_str) {
        Some("provision") => "admin",
        Some("orchestrator") => "orchestrator",
        Some("gateway") => "gateway",
        Some("load" | "publish") => "client",
        Some("worker") => match command.get(1).map(String::as_str) {
            Some("inventory") => "inventory",
            Some("payment") => "payment",
            Some("order") => "order",
            Some("notification") => "notification",
            other => panic!("a worker of no known kind: {other:?}"),
        },
        other => panic!("a compose command with no identity: {other:?}"),
    }
}

#[test]
fn every_compose_service_is_itself_and_waits_for_the_administrator_s_provisioning() {
    let services = compose();
    let ours: Vec<(&String, &Value)> = services
        .iter()
        .filter(|(_, s)| s.get("build").is_some())
        .collect();
    let provisions: Vec<&String> = ours
        .iter()
        .filter(|(_, s)| strings(s.get("command")) == ["provision"])
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(provisions.len(), 2, "one per broker: {provisions:?}");
    for (name, service) in &ours {
        let command = strings(service.get("command"));
        let env = env(service);
        let user = identity(&command);
        assert_eq!(
            env.get("NATS_USER").map(String::as_str),
            Some(user),
            "{name}"
        );
        let password = env
            .get("NATS_PASSWORD")
            .map(String::as_str)
            .unwrap_or_default();
        let variable = format!("{}_PASSWORD", user.to_uppercase());
        assert!(
            from_env(password, &variable),
            "{name}: NATS_PASSWORD={password:?}"
        );
        if user == "admin" {
            continue;
        }
        assert_eq!(
            env.get("NATS_PROVISION").map(String::as_str),
            Some("false"),
            "{name} would provision, which its identity may not"
        );
        // It waits for the provisioning of its own broker to have succeeded.
        let waits: Vec<&String> = provisions
            .iter()
            .copied()
            .filter(|p| {
                service["depends_on"][p.as_str()]["condition"].as_str()
                    == Some("service_completed_successfully")
            })
            .collect();
        assert_eq!(waits.len(), 1, "{name} waits for {waits:?}");
        let provision_env = crate::compose::env(&services[waits[0].as_str()]);
        assert_eq!(provision_env.get("NATS_URL"), env.get("NATS_URL"), "{name}");
    }
}
