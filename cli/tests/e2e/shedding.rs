//! Backpressure at the door, with the real gateway: a full gateway answers 429 and a system
//! that is behind 503, both with Retry-After and at once, instead of queuing; a flood of valid
//! and garbage requests never takes it down, and good checkouts are served again after.

use crate::gateway::cart;
use crate::http;
use crate::support::{Options, Stack};
use futures::StreamExt as _;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

async fn post(addr: SocketAddr, body: &[u8]) -> http::Response {
    let headers = [("Content-Type", "application/json")];
    http::request(addr, "POST", "/checkout", &headers, body).await
}

fn good() -> Vec<u8> {
    cart(1, 2100).to_string().into_bytes()
}

/// A checkout whose body never finishes: it holds its slot until the connection closes.
async fn stalled(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /checkout HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: 1000\r\n\r\n{{\"customer_id\": "
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// Posts `body` until the answer has `status` (at most `tries`); returns that answer and how
/// many answers came before it, by status.
async fn until_status(
    addr: SocketAddr,
    body: &[u8],
    status: u16,
    tries: usize,
) -> (http::Response, BTreeMap<u16, usize>) {
    let mut before = BTreeMap::new();
    for _ in 0..tries {
        let response = post(addr, body).await;
        if response.status == status {
            return (response, before);
        }
        *before.entry(response.status).or_default() += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no {status} in {tries} requests: {before:?}");
}

/// Holds `slots` stalled checkouts and posts until one is refused 429; returns that answer.
///
/// A stalled checkout takes its slot only when the gateway gets to its head, which on a busy
/// machine can be after a probe's: the probe then holds the last slot for a moment, the
/// stalled one is refused, and every later probe finds that slot free. Such a stalled
/// connection (answered, or closed) is replaced before the next probe, so the slots fill.
async fn fill_slots(addr: SocketAddr, slots: usize) -> http::Response {
    let mut held = Vec::new();
    for _ in 0..slots {
        held.push(stalled(addr).await);
    }
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for _ in 0..100 {
        // Probes are refused as not a cart (422) until the slots are full: nothing starts.
        let response = post(addr, b"{}").await;
        if response.status == 429 {
            return response;
        }
        *statuses.entry(response.status).or_default() += 1;
        for stream in &mut held {
            let mut byte = [0u8; 1];
            match stream.try_read(&mut byte) {
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                _ => *stream = stalled(addr).await,
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no 429 in 100 requests with {slots} slots held: {statuses:?}");
}

fn assert_shed(response: &http::Response, status: u16, reason: &str) {
    assert_eq!(response.status, status);
    assert_eq!(response.header("retry-after"), Some("2"), "{reason}");
    assert_eq!(response.json()["reason"], reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_sheds_with_retry_after_survives_a_flood_and_serves_again() {
    let mut stack = Stack::start(Options::default()).await;
    let limits = [
        ("GATEWAY_MAX_CONCURRENT", "4"),
        ("GATEWAY_MAX_BACKLOG", "5"),
    ];
    let addr = stack.spawn_gateway_with("gateway", &limits).await;

    // Every slot held by a checkout whose body does not come: the next is refused at once.
    let full = fill_slots(addr, 4).await;
    assert_shed(&full, 429, "too_many_requests");
    let (accepted, _) = until_status(addr, &good(), 202, 100).await;
    assert_eq!(accepted.json()["replayed"], false);

    // The orchestrator stops taking checkouts up: they wait in the broker, past the limit.
    let code = stack
        .service("orchestrator")
        .terminate(Duration::from_secs(20))
        .unwrap();
    assert_eq!(code, Some(0));
    let (behind, before) = until_status(addr, &good(), 503, 200).await;
    assert_shed(&behind, 503, "overloaded");
    // Shed on the backlog's account: what waits (these checkouts, and whatever the first
    // saga left in the queues when the orchestrator stopped) is over the limit of 5.
    assert!(before.get(&202).copied().unwrap_or(0) >= 1, "{before:?}");
    let detail = behind.json()["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let waiting: u64 = detail
        .split("behind: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no backlog in {detail:?}"));
    assert!(waiting > 5, "{detail}");
    stack.service("orchestrator").restart().unwrap();
    until_status(addr, &good(), 202, 600).await;

    // A flood: valid carts and garbage, 64 at a time, bounded in count and in time.
    let bodies: [Vec<u8>; 4] = [
        good(),
        b"\x00\xffnot json at all".to_vec(),
        br#"{"customer_id": 7, "items": "many"}"#.to_vec(),
        vec![b'{'; 70 * 1024],
    ];
    let gateway_pid = stack.service("gateway").pid().unwrap();
    let rss = || {
        let status = std::fs::read_to_string(format!("/proc/{gateway_pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    let rss_before = rss();
    let started = Instant::now();
    let total = 3_000;
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut requests = futures::stream::iter(0..total)
        .map(|i| {
            let body = bodies[i % bodies.len()].clone();
            async move { post(addr, &body).await.status }
        })
        .buffer_unordered(64);
    let flood = async {
        while let Some(status) = requests.next().await {
            *statuses.entry(status).or_default() += 1;
        }
    };
    tokio::time::timeout(Duration::from_secs(300), flood)
        .await
        .expect("the flood ended within 5 minutes");
    let took = started.elapsed();
    eprintln!(
        "flood of {total}: {statuses:?} in {took:?} ({:.0} requests/s); gateway RSS {rss_before} \
         before, {} after",
        total as f64 / took.as_secs_f64(),
        rss()
    );
    assert_eq!(
        statuses.values().sum::<usize>(),
        total,
        "every request answered"
    );
    assert!(
        statuses
            .keys()
            .all(|s| [202, 400, 413, 422, 429, 503].contains(s)),
        "{statuses:?}"
    );
    assert!(
        stack.service("gateway").is_running(),
        "the gateway is still up"
    );
    let ready = http::request(addr, "GET", "/readyz", &[], b"").await;
    assert_eq!(ready.status, 200);
    let (served, _) = until_status(addr, &good(), 202, 600).await;
    assert!(served.json()["saga_id"].is_string());
    stack.stop().await;
}
