//! A JetStream cluster of private `nats-server` processes on loopback.
//!
//! Each node has its own client port, route port, monitoring port and store directory; every
//! node lists every other as a route. With route proxies, node `i` reaches node `j` through a
//! [`TcpProxy`] of its own (one per ordered pair), so a node can be cut off from the others
//! while it and its clients keep running; the nodes then advertise a dead route address, or
//! they would gossip their real one and meet again around the proxies.
//!
//! ```text
//!  n1 ──[p12]──▶ n2 route port      services: NATS_URL=nats://n1,nats://n2,nats://n3
//!  n1 ──[p13]──▶ n3 route port      cut_off(n3): p13, p23, p31, p32 cut and refusing
//!  n2 ──[p21]──▶ n1 ...
//! ```

use super::config::ClusterSpec;
use super::{AttemptError, NatsServer, Passwords};
use crate::{TcpProxy, free_port};
use anyhow::{Context as _, anyhow};
use bytes::Bytes;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// How a cluster is laid out.
#[derive(Debug, Clone, Copy)]
pub struct ClusterOptions {
    /// Nodes (3 for streams at 3 replicas).
    pub nodes: usize,
    /// Route the nodes to each other through proxies, so that [`NatsCluster::cut_off`] works.
    pub route_proxies: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: 3,
            route_proxies: false,
        }
    }
}

/// The proxy on the route from one node to another.
#[derive(Debug)]
struct RouteLink {
    from: usize,
    to: usize,
    proxy: TcpProxy,
}

/// A running cluster; dropping it kills every node and deletes every store.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
    links: Vec<RouteLink>,
    /// The identities every node requires (the same passwords on each: a client that fails
    /// over logs in to the next node as itself).
    passwords: Passwords,
}

/// How long one JetStream API request may take before the node is taken for unable to answer.
const API_TIMEOUT: Duration = Duration::from_secs(2);

impl NatsCluster {
    /// Starts the nodes together and waits until each one's JetStream answers (which needs a
    /// meta leader, so a quorum of the nodes). A route port taken by another process between
    /// choosing it and binding it (tests run side by side; seen in CI) starts the whole
    /// cluster again on fresh ports, a few times at most.
    pub async fn start(options: ClusterOptions) -> anyhow::Result<NatsCluster> {
        let mut attempt = 1;
        loop {
            match Self::start_once(&options).await {
                Err(err)
                    if attempt < 3 && format!("{err:#}").contains("address already in use") =>
                {
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn start_once(options: &ClusterOptions) -> anyhow::Result<NatsCluster> {
        anyhow::ensure!(options.nodes >= 1, "a cluster needs at least one node");
        let n = options.nodes;
        let name = format!(
            "checkout-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let route_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut links = Vec::new();
        let mut routes: Vec<Vec<SocketAddr>> = vec![Vec::new(); n];
        for (from, node_routes) in routes.iter_mut().enumerate() {
            for (to, &port) in route_ports.iter().enumerate().filter(|(to, _)| *to != from) {
                let upstream = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
                if options.route_proxies {
                    let proxy = TcpProxy::start(upstream).await?;
                    node_routes.push(proxy.addr());
                    links.push(RouteLink { from, to, proxy });
                } else {
                    node_routes.push(upstream);
                }
            }
        }
        let passwords = Passwords::generate();
        let mut nodes = Vec::with_capacity(n);
        for (i, node_routes) in routes.into_iter().enumerate() {
            let spec = ClusterSpec {
                name: name.clone(),
                port: route_ports[i],
                routes: node_routes,
                hide_route_address: options.route_proxies,
            };
            nodes.push(NatsServer::prepare(
                &format!("{name}-n{}", i + 1),
                free_port(),
                Some(spec),
                passwords.clone(),
            )?);
        }
        // Every node first, then the waits: none is ready before a quorum runs.
        for node in &mut nodes {
            node.spawn()?;
        }
        for node in &mut nodes {
            let mut attempt = 1;
            loop {
                match node.wait_ready().await {
                    Ok(()) => break,
                    // Its client or monitoring port was taken between choosing it and binding
                    // (tests run side by side; seen in CI): another pair, the routes as they were.
                    Err(AttemptError::Exited(_)) if attempt < super::START_ATTEMPTS => {
                        attempt += 1;
                        node.spec.port = free_port();
                        node.spec.http_port = free_port();
                        node.spawn()?;
                    }
                    Err(AttemptError::Exited(err) | AttemptError::Fatal(err)) => {
                        return Err(err.context("starting a cluster node"));
                    }
                }
            }
        }
        Ok(NatsCluster {
            nodes,
            links,
            passwords,
        })
    }

    /// Every node's client URL, comma-separated: what the services take as `NATS_URL`, with
    /// their identity beside it ([`NatsCluster::service_env`]).
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self.nodes.iter().map(NatsServer::url).collect();
        urls.join(",")
    }

    /// [`NatsCluster::urls`] with the administrator's credentials in each entry, for
    /// `checkout_shared::connect`. A password: never print it.
    pub fn admin_urls(&self) -> String {
        self.passwords.admin_url(&self.urls())
    }

    /// The identities' passwords every node requires.
    pub fn passwords(&self) -> &Passwords {
        &self.passwords
    }

    /// What a service needs to connect as `identity` without provisioning.
    pub fn service_env(&self, identity: &str) -> anyhow::Result<Vec<(String, String)>> {
        self.passwords.service_env(identity)
    }

    /// The nodes, in order.
    pub fn nodes(&self) -> &[NatsServer] {
        &self.nodes
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no node (never, once started).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> Option<&NatsServer> {
        self.nodes.get(i)
    }

    /// The index of the node named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name() == name)
    }

    /// SIGKILLs node `i` (its store stays).
    pub fn kill(&mut self, i: usize) {
        if let Some(node) = self.nodes.get_mut(i) {
            node.kill();
        }
    }

    /// Restarts node `i` on its ports and store and waits until its JetStream answers.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        let len = self.nodes.len();
        let node = self
            .nodes
            .get_mut(i)
            .ok_or_else(|| anyhow!("no node {i} in a cluster of {len}"))?;
        node.restart_async().await
    }

    /// Cuts node `i` off from the others for `period`: every route to or from it is closed
    /// and refused until then. Its clients stay connected to it. Returns the routes cut.
    pub fn cut_off(&self, i: usize, period: Duration) -> anyhow::Result<usize> {
        anyhow::ensure!(
            !self.links.is_empty(),
            "the cluster was started without route proxies; nothing can cut its routes"
        );
        let mut cut = 0;
        for link in self.links.iter().filter(|l| l.from == i || l.to == i) {
            link.proxy.refuse_for(period);
            link.proxy.cut();
            cut += 1;
        }
        Ok(cut)
    }

    /// Lets node `i`'s routes be dialled again now, before its cut's period ends (the nodes
    /// reconnect by themselves, within a second or so).
    pub fn heal(&self, i: usize) {
        for link in self.links.iter().filter(|l| l.from == i || l.to == i) {
            link.proxy.refuse_for(Duration::ZERO);
        }
    }

    /// How many streams and consumers each node leads, by node name, as a running node sees
    /// it (an asset without a leader, mid-election, is not counted).
    pub async fn leaders(&mut self) -> anyhow::Result<BTreeMap<String, usize>> {
        let url = self
            .nodes
            .iter_mut()
            .find_map(|n| n.is_running().then(|| n.url()))
            .ok_or_else(|| anyhow!("no node of the cluster is running"))?;
        let client = self
            .passwords
            .admin_options()
            .connection_timeout(API_TIMEOUT)
            .connect(&url)
            .await
            .with_context(|| format!("connecting to {url} to find the leaders"))?;
        let mut counts = BTreeMap::new();
        let streams = api(&client, "$JS.API.STREAM.NAMES".into()).await?;
        for stream in names(&streams, "streams") {
            let info = api(&client, format!("$JS.API.STREAM.INFO.{stream}")).await?;
            count_leader(&info, &mut counts);
            let consumers = api(&client, format!("$JS.API.CONSUMER.NAMES.{stream}")).await?;
            for consumer in names(&consumers, "consumers") {
                let info = api(
                    &client,
                    format!("$JS.API.CONSUMER.INFO.{stream}.{consumer}"),
                )
                .await?;
                count_leader(&info, &mut counts);
            }
        }
        Ok(counts)
    }

    /// The index of the node leading the most streams and consumers.
    pub async fn busiest_leader(&mut self) -> anyhow::Result<usize> {
        let counts = self.leaders().await?;
        counts
            .iter()
            .max_by_key(|(_, count)| **count)
            .and_then(|(name, _)| self.index_of(name))
            .ok_or_else(|| anyhow!("no stream or consumer has a leader yet"))
    }
}

/// One JetStream API request with an empty body; its JSON reply, or why there is none.
async fn api(client: &async_nats::Client, subject: String) -> anyhow::Result<Value> {
    let reply = tokio::time::timeout(API_TIMEOUT, client.request(subject.clone(), Bytes::new()))
        .await
        .map_err(|_| anyhow!("{subject}: no reply within {API_TIMEOUT:?}"))?
        .with_context(|| subject.clone())?;
    let body: Value = serde_json::from_slice(&reply.payload)
        .with_context(|| format!("{subject}: the reply is not JSON"))?;
    if let Some(error) = body.get("error") {
        anyhow::bail!("{subject}: {error}");
    }
    Ok(body)
}

/// The names listed under `key` of a `...NAMES` reply.
fn names(reply: &Value, key: &str) -> Vec<String> {
    reply
        .get(key)
        .and_then(Value::as_array)
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Counts the `cluster.leader` of a stream's or consumer's info.
fn count_leader(info: &Value, counts: &mut BTreeMap<String, usize>) {
    if let Some(leader) = info.pointer("/cluster/leader").and_then(Value::as_str) {
        *counts.entry(leader.to_owned()).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaders_are_counted_from_the_api_s_replies() {
        let mut counts = BTreeMap::new();
        let stream: Value = serde_json::json!({"cluster": {"name": "c", "leader": "n2"}});
        let consumer: Value = serde_json::json!({"cluster": {"leader": "n2"}});
        let electing: Value = serde_json::json!({"cluster": {"name": "c"}});
        for info in [&stream, &consumer, &electing] {
            count_leader(info, &mut counts);
        }
        assert_eq!(counts, BTreeMap::from([("n2".to_owned(), 2)]));
        let listed = serde_json::json!({"streams": ["A", "B"], "total": 2});
        assert_eq!(names(&listed, "streams"), ["A", "B"]);
        assert!(names(&serde_json::json!({"streams": null}), "streams").is_empty());
    }
}
