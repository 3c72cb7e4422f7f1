//! The private stack's broker: one nats-server, or a JetStream cluster of them on loopback.
//!
//! The stack, the chaos runner and the benchmark see one [`Broker`] either way: its URL list
//! (what the services take as `NATS_URL`), the identities it requires (each service connects
//! as its own, the tools as the administrator), its nodes (to kill and restart, or to put
//! proxies in front of) and, on a cluster, which node leads the most streams and consumers.
//! A restarted node keeps its configuration, identities included.

use checkout_harness::{ClusterOptions, NatsCluster, NatsServer, Passwords};

/// One server or a cluster.
#[derive(Debug)]
pub enum Broker {
    /// A single nats-server (boxed: a server is far larger than a cluster's handle).
    Single(Box<NatsServer>),
    /// A cluster of nats-server processes, with proxies on its routes.
    Cluster(NatsCluster),
}

impl Broker {
    /// One server when `nodes` is 1, else a cluster of `nodes` with proxies on its routes
    /// (so the chaos runner can cut a node off).
    pub async fn start(nodes: usize) -> anyhow::Result<Broker> {
        Self::start_with(nodes, true).await
    }

    /// As [`Broker::start`], with the cluster's routes direct when not `route_proxies`: the
    /// benchmark measures the cluster, not the proxies it would otherwise run in its own
    /// process.
    pub async fn start_with(nodes: usize, route_proxies: bool) -> anyhow::Result<Broker> {
        Ok(match nodes {
            0 => anyhow::bail!("the broker needs at least one node"),
            1 => Broker::Single(Box::new(NatsServer::start_async().await?)),
            nodes => Broker::Cluster(
                NatsCluster::start(ClusterOptions {
                    nodes,
                    route_proxies,
                })
                .await?,
            ),
        })
    }

    /// Every node's client URL, comma-separated.
    pub fn url(&self) -> String {
        match self {
            Broker::Single(server) => server.url(),
            Broker::Cluster(cluster) => cluster.urls(),
        }
    }

    /// [`Broker::url`] with the administrator's credentials, for this process's own
    /// connections (`checkout_shared::connect` logs in with them). Never print it.
    pub fn admin_url(&self) -> String {
        match self {
            Broker::Single(server) => server.admin_url(),
            Broker::Cluster(cluster) => cluster.admin_urls(),
        }
    }

    /// The identities' passwords every node requires.
    pub fn passwords(&self) -> &Passwords {
        match self {
            Broker::Single(server) => server.passwords(),
            Broker::Cluster(cluster) => cluster.passwords(),
        }
    }

    /// The nodes.
    pub fn nodes(&self) -> Vec<&NatsServer> {
        match self {
            Broker::Single(server) => vec![&**server],
            Broker::Cluster(cluster) => cluster.nodes().iter().collect(),
        }
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        match self {
            Broker::Single(_) => 1,
            Broker::Cluster(cluster) => cluster.len(),
        }
    }

    /// Never empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The replicas of every stream: one per node, up to three.
    pub fn replicas(&self) -> usize {
        self.len().min(3)
    }

    /// The pid of the first node (the only one of a single server), e.g. for its CPU time.
    pub fn pid(&self) -> Option<u32> {
        self.nodes().first().and_then(|n| n.pid())
    }

    /// The pids of every running node.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes().iter().filter_map(|n| n.pid()).collect()
    }

    /// The name of node `i` (`nats` for a single server, `nats-n2` for a cluster's second).
    pub fn node_name(&self, i: usize) -> String {
        match self {
            Broker::Single(_) => "nats".into(),
            Broker::Cluster(_) => format!("nats-n{}", i + 1),
        }
    }

    /// SIGKILLs node `i` (its store stays).
    pub fn kill(&mut self, i: usize) {
        match self {
            Broker::Single(server) => server.kill(),
            Broker::Cluster(cluster) => cluster.kill(i),
        }
    }

    /// Restarts node `i` on its ports and store and waits until its JetStream answers.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        match self {
            Broker::Single(server) => server.restart_async().await,
            Broker::Cluster(cluster) => cluster.restart(i).await,
        }
    }

    /// The cluster, when the broker is one.
    pub fn cluster(&mut self) -> Option<&mut NatsCluster> {
        match self {
            Broker::Single(_) => None,
            Broker::Cluster(cluster) => Some(cluster),
        }
    }
}
