//! Who may log in to a private broker: every [`super::NatsServer`] and [`super::NatsCluster`]
//! requires the identities of `nats/auth/users.conf`, as shipped, with fresh random passwords
//! per start, so that tests, the demo, chaos and the benchmark run the way production does
//! (each service as itself, the administrator provisioning) and an identity's missing
//! permission fails a test instead of a deployment.
//!
//! ```text
//!  Passwords::generate ─▶ store dir/auth/users.conf (the shipped file, byte for byte)
//!         │                nats-server.conf: include "auth/users.conf"
//!         └─▶ nats-server's environment: ADMIN_PASSWORD=..., PAYMENT_PASSWORD=...
//!  services: NATS_USER=payment NATS_PASSWORD=... NATS_PROVISION=false   (service_env)
//!  tests, tools: admin (admin_url, admin_env, admin_options)
//! ```
//!
//! The passwords reach the server through its environment, which `users.conf` reads its
//! `$<ID>_PASSWORD` variables from: nats-server does not resolve a variable defined in the
//! including file (or in another included file) inside an included file, so the environment
//! is the one way that works with the file unchanged, and it is how compose feeds it too.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;

/// The shipped file, compiled in so that the tools need no checkout of the repository.
const USERS_CONF: &str = include_str!("../../../nats/auth/users.conf");

/// Where the file goes, relative to the node's configuration file (which includes it).
pub(crate) const USERS_CONF_PATH: &str = "auth/users.conf";

/// The administrator: provisions streams and consumers, and is who tests and tools connect as.
pub const ADMIN: &str = "admin";

/// Every identity of `nats/auth/users.conf` (a unit test holds this list to the file).
pub const IDENTITIES: [&str; 9] = [
    ADMIN,
    "orchestrator",
    "gateway",
    "client",
    "inventory",
    "payment",
    "order",
    "notification",
    "tracebridge",
];

/// One random password per identity, for one broker (every node of a cluster shares them).
/// Cheap to clone; its debug form shows no password.
#[derive(Clone)]
pub struct Passwords(Arc<BTreeMap<&'static str, String>>);

impl fmt::Debug for Passwords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

impl Passwords {
    /// Fresh passwords: 128 random bits each (from v4 UUIDs, hex, so they need no escaping
    /// in a URL or a configuration file).
    pub fn generate() -> Self {
        Passwords(Arc::new(
            IDENTITIES
                .iter()
                .map(|id| (*id, uuid::Uuid::new_v4().simple().to_string()))
                .collect(),
        ))
    }

    /// The password of `identity`; an error names the identities there are.
    pub fn of(&self, identity: &str) -> anyhow::Result<&str> {
        self.0.get(identity).map(String::as_str).with_context(|| {
            format!("no NATS identity {identity:?}; users.conf has {IDENTITIES:?}")
        })
    }

    /// The administrator's password.
    pub fn admin(&self) -> &str {
        self.0.get(ADMIN).map_or("", String::as_str)
    }

    /// What a service needs to connect as `identity` (`NATS_USER`, `NATS_PASSWORD`) without
    /// provisioning (`NATS_PROVISION=false`), which its identity may not do.
    pub fn service_env(&self, identity: &str) -> anyhow::Result<Vec<(String, String)>> {
        Ok(vec![
            ("NATS_USER".into(), identity.to_owned()),
            ("NATS_PASSWORD".into(), self.of(identity)?.to_owned()),
            ("NATS_PROVISION".into(), "false".into()),
        ])
    }

    /// What a command needs to run as the administrator (`checkout provision`, operators'
    /// commands).
    pub fn admin_env(&self) -> Vec<(String, String)> {
        vec![
            ("NATS_USER".into(), ADMIN.to_owned()),
            ("NATS_PASSWORD".into(), self.admin().to_owned()),
        ]
    }

    /// `list` (comma-separated `nats://host:port` entries) with the administrator's
    /// credentials in each entry, for `checkout_shared::connect`, which logs in with them.
    /// Plain async-nats ignores credentials in a URL: use [`Passwords::admin_options`] there.
    pub fn admin_url(&self, list: &str) -> String {
        let entries: Vec<String> = list
            .split(',')
            .map(|entry| {
                let entry = entry.trim();
                let (scheme, rest) = entry.split_once("://").unwrap_or(("nats", entry));
                format!("{scheme}://{ADMIN}:{}@{rest}", self.admin())
            })
            .collect();
        entries.join(",")
    }

    /// Connection options that log in as the administrator.
    pub fn admin_options(&self) -> async_nats::ConnectOptions {
        async_nats::ConnectOptions::new().user_and_password(ADMIN.into(), self.admin().into())
    }

    /// The server process's environment: each password as the variable `users.conf` reads.
    pub(crate) fn server_env(&self) -> impl Iterator<Item = (String, &str)> {
        self.0
            .iter()
            .map(|(id, password)| (format!("{}_PASSWORD", id.to_uppercase()), password.as_str()))
    }

    /// Writes the shipped `users.conf` next to a node's configuration file in `dir`.
    pub(crate) fn write_users_conf(dir: &Path) -> anyhow::Result<()> {
        let path = dir.join(USERS_CONF_PATH);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, USERS_CONF).with_context(|| format!("writing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_identity_of_the_shipped_file_has_a_password_and_no_other() {
        let declared: Vec<&str> = USERS_CONF
            .lines()
            .filter_map(|line| line.trim().strip_prefix("{ user: "))
            .filter_map(|rest| rest.split(',').next())
            .collect();
        let mut expected = IDENTITIES.to_vec();
        expected.sort_unstable();
        let mut declared = declared;
        declared.sort_unstable();
        assert_eq!(declared, expected);
        let variables: Vec<String> = Passwords::generate()
            .server_env()
            .map(|(name, _)| format!("${name}"))
            .collect();
        for variable in &variables {
            assert!(USERS_CONF.contains(variable.as_str()), "{variable}");
        }
    }

    #[test]
    fn the_admin_url_carries_the_credentials_in_every_entry_and_debug_shows_none() {
        let passwords = Passwords::generate();
        let pw = passwords.admin().to_owned();
        assert_eq!(pw.len(), 32);
        assert_eq!(
            passwords.admin_url("nats://127.0.0.1:1,nats://127.0.0.1:2"),
            format!("nats://admin:{pw}@127.0.0.1:1,nats://admin:{pw}@127.0.0.1:2")
        );
        assert!(!format!("{passwords:?}").contains(&pw));
        assert!(passwords.service_env("payment").is_ok());
        assert!(passwords.service_env("nobody").is_err());
    }
}
