//! A JetStream cluster on loopback: replicated streams outlive the death of their leader, a
//! node restarts on its store, and a node cut off from the others through the route proxies
//! really is alone until healed.

use super::*;
use checkout_harness::{ClusterOptions, NatsCluster};

/// Attempts (each up to the JetStream context's ack timeout) to get a publish acknowledged
/// across an election.
const PUBLISH_ATTEMPTS: usize = 40;

async fn publish_until_acked(js: &jetstream::Context, subject: &str, msg_id: &str) -> bool {
    for _ in 0..PUBLISH_ATTEMPTS {
        let sent = jetstream::message::PublishMessage::build()
            .payload("x".into())
            .message_id(msg_id);
        if let Ok(ack) = js.send_publish(subject.to_owned(), sent).await
            && ack.await.is_ok()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

fn stream_config() -> jetstream::stream::Config {
    jetstream::stream::Config {
        name: "T".to_owned(),
        subjects: vec!["t.>".to_owned()],
        storage: jetstream::stream::StorageType::File,
        num_replicas: 3,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_stream_outlives_its_leader_and_a_node_restarts_on_its_store() {
    let mut cluster = NatsCluster::start(ClusterOptions::default())
        .await
        .expect("start a 3-node cluster");
    assert_eq!(cluster.len(), 3);
    assert_eq!(cluster.urls().split(',').count(), 3);
    let urls: Vec<String> = cluster.nodes().iter().map(|n| n.url()).collect();
    let client = cluster
        .passwords()
        .admin_options()
        .max_reconnects(None)
        .connect(urls.as_slice())
        .await
        .expect("connect to the cluster");
    let js = jetstream::new(client);
    js.create_stream(stream_config())
        .await
        .expect("create an R3 stream");
    for i in 0..10 {
        assert!(publish_until_acked(&js, "t.a", &format!("a{i}")).await);
    }
    let leaders = cluster.leaders().await.expect("leaders");
    assert_eq!(leaders.values().sum::<usize>(), 1, "{leaders:?}");
    let victim = cluster.busiest_leader().await.expect("the stream's leader");
    let store = cluster.node(victim).unwrap().store_dir().to_path_buf();
    cluster.kill(victim);
    // Sent while the stream elects another leader; a re-send under the same id counts once.
    for i in 0..10 {
        assert!(publish_until_acked(&js, "t.b", &format!("b{i}")).await);
        assert!(publish_until_acked(&js, "t.b", &format!("b{i}")).await);
    }
    cluster
        .restart(victim)
        .await
        .expect("restart the killed node");
    let restarted = cluster.node(victim).unwrap();
    assert!(
        restarted.pid().is_some(),
        "the killed node is not running again"
    );
    assert_eq!(restarted.store_dir(), store, "restarted on another store");
    // The restarted node still requires the identities, with the same passwords.
    assert!(
        async_nats::connect(restarted.url()).await.is_err(),
        "the restarted node lets an unauthenticated client in"
    );
    restarted
        .admin_client()
        .await
        .expect("the administrator logs in to the restarted node");
    let mut stream = js.get_stream("T").await.expect("the stream");
    let info = stream.info().await.expect("stream info").clone();
    assert_eq!(info.state.messages, 20, "{info:?}");
    let leader = info.cluster.and_then(|c| c.leader).expect("a leader");
    assert_ne!(
        cluster.index_of(&leader),
        Some(victim),
        "the killed node still leads"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_its_routes_is_alone_until_healed() {
    let mut cluster = NatsCluster::start(ClusterOptions {
        nodes: 3,
        route_proxies: true,
    })
    .await
    .expect("start a 3-node cluster with route proxies");
    let all = jetstream::new(
        cluster
            .node(0)
            .unwrap()
            .admin_client()
            .await
            .expect("connect to node 1"),
    );
    let mut config = stream_config();
    // On one node: another node reaches it only over the routes.
    config.num_replicas = 1;
    all.create_stream(config).await.expect("create a stream");
    assert!(publish_until_acked(&all, "t.a", "before").await);
    let leader = cluster.busiest_leader().await.expect("the stream's node");
    let cut = (leader + 1) % cluster.len();
    let lonely = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(1))
        .build(
            cluster
                .node(cut)
                .unwrap()
                .admin_client()
                .await
                .expect("connect to the node to cut"),
        );
    assert_eq!(
        cluster.cut_off(cut, Duration::from_secs(120)).expect("cut"),
        4,
        "two routes each way"
    );
    // Cut off, the node cannot reach the stream's leader: nothing it is sent is stored.
    let sent = jetstream::message::PublishMessage::build()
        .payload("x".into())
        .message_id("during");
    let acked = match lonely.send_publish("t.a".to_owned(), sent).await {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    };
    assert!(
        !acked,
        "a node cut off from the stream's leader stored a message"
    );
    cluster.heal(cut);
    assert!(
        publish_until_acked(&lonely, "t.a", "after").await,
        "the healed node never reached the stream again"
    );
}
