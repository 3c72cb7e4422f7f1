//! The configuration file each private `nats-server` runs with: a single node, or one node of
//! a cluster on loopback.
//!
//! A file rather than flags because a cluster, the monitoring port and JetStream's
//! `sync_interval` have no command-line flag.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

/// One node's membership of a cluster.
#[derive(Debug, Clone)]
pub(crate) struct ClusterSpec {
    /// The cluster's name (the same on every node).
    pub name: String,
    /// Where this node listens for routes from the others.
    pub port: u16,
    /// Where this node dials the others: their route ports, or proxies in front of them.
    pub routes: Vec<SocketAddr>,
    /// With proxies on the routes, the node must not tell the others its real route address:
    /// they would dial it directly, around the proxies, and a cut would not isolate it. It
    /// advertises an address that refuses connections instead, so every route is the
    /// configured one. Its client address is not gossiped to clients either (`no_advertise`):
    /// a client would add it to its server list and come back from a reconnect around the
    /// proxy in front of it, out of reach of the faults put on that proxy.
    pub hide_route_address: bool,
}

/// Everything a node's file says.
#[derive(Debug, Clone)]
pub(crate) struct NodeSpec {
    /// `server_name`, unique in a cluster (JetStream's leaders are reported by it).
    pub name: String,
    /// The client port on 127.0.0.1.
    pub port: u16,
    /// The monitoring (HTTP) port on 127.0.0.1.
    pub http_port: u16,
    /// The JetStream store.
    pub store_dir: PathBuf,
    /// Write every message to disk before acknowledging it (`sync_interval: always`), on the
    /// servers that know the setting (2.11 and later): a SIGKILLed node then loses nothing it
    /// acked. Older servers sync every two minutes, so a kill can lose acked messages.
    pub sync_always: bool,
    /// The cluster, when the node is one of several.
    pub cluster: Option<ClusterSpec>,
    /// More configuration, appended as is (a `tls` block); boxed, as it is
    /// rare and the spec is held in enums.
    pub extra: Option<Box<str>>,
}

/// A port nothing listens on (tcpmux, reserved and unused on loopback).
const DEAD_ADDRESS: &str = "127.0.0.1:1";

impl NodeSpec {
    /// The configuration file's text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(out, "server_name: {:?}", self.name);
        let _ = writeln!(out, "listen: \"127.0.0.1:{}\"", self.port);
        let _ = writeln!(out, "http: \"127.0.0.1:{}\"", self.http_port);
        let _ = writeln!(out, "max_payload: 1MB");
        // Every private broker requires the shipped identities, as production does.
        let _ = writeln!(out, "include {:?}", super::auth::USERS_CONF_PATH);
        let _ = writeln!(out, "jetstream {{");
        let _ = writeln!(
            out,
            "  store_dir: {:?}",
            self.store_dir.display().to_string()
        );
        if self.sync_always {
            let _ = writeln!(out, "  sync_interval: always");
        }
        let _ = writeln!(out, "}}");
        if let Some(cluster) = &self.cluster {
            let _ = writeln!(out, "cluster {{");
            let _ = writeln!(out, "  name: {:?}", cluster.name);
            let _ = writeln!(out, "  listen: \"127.0.0.1:{}\"", cluster.port);
            if cluster.hide_route_address {
                let _ = writeln!(out, "  advertise: {DEAD_ADDRESS:?}");
                let _ = writeln!(out, "  no_advertise: true");
            }
            let routes: Vec<String> = cluster
                .routes
                .iter()
                .map(|addr| format!("\"nats-route://{addr}\""))
                .collect();
            let _ = writeln!(out, "  routes: [{}]", routes.join(", "));
            let _ = writeln!(out, "}}");
        }
        if let Some(extra) = &self.extra {
            out.push_str(extra);
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(cluster: Option<ClusterSpec>, sync_always: bool) -> NodeSpec {
        NodeSpec {
            name: "n1".into(),
            port: 4222,
            http_port: 8222,
            store_dir: PathBuf::from("/tmp/x y/js"),
            sync_always,
            cluster,
            extra: None,
        }
    }

    #[test]
    fn a_single_node_has_no_cluster_block() {
        let text = node(None, true).render();
        assert!(text.contains("listen: \"127.0.0.1:4222\""), "{text}");
        assert!(text.contains("store_dir: \"/tmp/x y/js\""), "{text}");
        assert!(text.contains("sync_interval: always"), "{text}");
        assert!(text.contains("include \"auth/users.conf\""), "{text}");
        assert!(!text.contains("cluster"), "{text}");
        assert!(!node(None, false).render().contains("sync_interval"));
    }

    #[test]
    fn a_cluster_node_lists_its_routes_and_hides_its_address_behind_proxies() {
        let spec = ClusterSpec {
            name: "c".into(),
            port: 6222,
            routes: vec![
                "127.0.0.1:7001".parse().unwrap(),
                "127.0.0.1:7002".parse().unwrap(),
            ],
            hide_route_address: true,
        };
        let text = node(Some(spec), true).render();
        assert!(text.contains("listen: \"127.0.0.1:6222\""), "{text}");
        assert!(
            text.contains(
                "routes: [\"nats-route://127.0.0.1:7001\", \"nats-route://127.0.0.1:7002\"]"
            ),
            "{text}"
        );
        assert!(text.contains("advertise: \"127.0.0.1:1\""), "{text}");
        assert!(text.contains("no_advertise: true"), "{text}");
    }
}
