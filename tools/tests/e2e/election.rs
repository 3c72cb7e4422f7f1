//! The product's publish ([`checkout_shared::messaging::send`]) on a 3-node cluster whose
//! stream leader is SIGKILLed halfway through: every message is acknowledged (sent again
//! under its `Nats-Msg-Id` while the stream elects), and each is stored once, a second send
//! of the same ids included.

use checkout_harness::{ClusterOptions, NatsCluster};
use checkout_shared::messaging::{self, Outgoing};
use checkout_shared::streams::{self, LIFECYCLE_STREAM};
use checkout_shared::subjects;

/// Messages sent; the stream's leader dies after half of them.
const MESSAGES: usize = 120;

fn message(i: usize) -> Outgoing {
    let saga = uuid::Uuid::from_u128(i as u128);
    let msg_id = format!("election-{i}");
    Outgoing {
        subject: subjects::lifecycle(saga, "started"),
        msg_id,
        headers: async_nats::HeaderMap::new(),
        payload: bytes::Bytes::from_static(b"{}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_across_a_leader_s_death_are_neither_dropped_nor_doubled() {
    let mut cluster = NatsCluster::start(ClusterOptions::default())
        .await
        .expect("a 3-node cluster");
    let client = checkout_shared::connect::connect(&cluster.admin_urls(), "election-test", true)
        .await
        .expect("connect to every node");
    let js = checkout_shared::connect::jetstream(client);
    streams::provision(&js, 3)
        .await
        .expect("streams and consumers at 3 replicas");
    let mut stream = js.get_stream(LIFECYCLE_STREAM).await.expect("the stream");
    let mut failed = Vec::new();
    for i in 0..MESSAGES {
        if i == MESSAGES / 2 {
            let info = stream.info().await.expect("stream info");
            let leader = info.cluster.as_ref().and_then(|c| c.leader.clone());
            let victim = leader
                .and_then(|name| cluster.index_of(&name))
                .expect("the stream's leader is a node of the cluster");
            cluster.kill(victim);
        }
        if let Err(err) = messaging::send(&js, message(i)).await {
            failed.push(format!("{i}: {err}"));
        }
    }
    assert!(failed.is_empty(), "sends given up: {failed:?}");
    // The same ids again: the duplicate window keeps one of each.
    for i in (0..MESSAGES).step_by(10) {
        messaging::send(&js, message(i))
            .await
            .expect("a duplicate is acknowledged too");
    }
    let info = stream.info().await.expect("stream info");
    assert_eq!(
        info.state.messages, MESSAGES as u64,
        "stored messages: {:?}",
        info.state
    );
}
