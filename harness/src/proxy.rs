//! A TCP proxy on loopback whose faults the caller controls.
//!
//! The chaos runner puts one in front of the broker and one in front of the database, and the
//! services connect through them, so that "the network" between a service and its dependency
//! can fail while both ends keep running: every open connection cut at once, new connections
//! refused for a while, latency added to every chunk for a while.
//!
//! ```text
//!  service ──▶ 127.0.0.1:proxy ──(cut / refuse / delay)──▶ 127.0.0.1:upstream
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Open connections at most; more are closed at once (the services need a few dozen).
const MAX_CONNECTIONS: usize = 1_024;

/// Bytes copied per read.
const CHUNK: usize = 16 * 1024;

/// What the proxy is told to do, read by the accept loop and every copy.
#[derive(Debug, Default)]
struct Faults {
    refuse_until: Option<Instant>,
    latency_until: Option<Instant>,
    latency: Duration,
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    faults: Mutex<Faults>,
    /// Bumped by [`TcpProxy::cut`]; every connection task ends when it changes.
    generation: watch::Sender<u64>,
    slots: Arc<Semaphore>,
}

impl Shared {
    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        // Faults are plain values: a panic elsewhere cannot leave them inconsistent.
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn refusing(&self) -> bool {
        self.faults()
            .refuse_until
            .is_some_and(|t| Instant::now() < t)
    }

    fn delay(&self) -> Option<Duration> {
        let faults = self.faults();
        faults
            .latency_until
            .filter(|t| Instant::now() < *t)
            .map(|_| faults.latency)
    }
}

/// A running proxy; dropping it stops accepting and cuts every connection.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a free port of 127.0.0.1 and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<TcpProxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .context("binding a proxy on 127.0.0.1")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            faults: Mutex::new(Faults::default()),
            generation: watch::Sender::new(0),
            slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(TcpProxy {
            addr,
            shared,
            accept,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Closes every open connection now (both sides see the connection end).
    pub fn cut(&self) {
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// Closes every new connection at once for `period` (open ones are untouched).
    pub fn refuse_for(&self, period: Duration) {
        self.shared.faults().refuse_until = Some(Instant::now() + period);
    }

    /// Delays every chunk, both ways, by `latency` for `period`.
    pub fn add_latency(&self, latency: Duration, period: Duration) {
        let mut faults = self.shared.faults();
        faults.latency = latency;
        faults.latency_until = Some(Instant::now() + period);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of descriptors or similar: back off rather than spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if shared.refusing() {
            drop(client);
            continue;
        }
        let Ok(permit) = shared.slots.clone().try_acquire_owned() else {
            drop(client);
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _permit = permit;
            connection(client, &shared).await;
        });
    }
}

/// Copies both ways until either side closes or the connections are cut.
async fn connection(client: TcpStream, shared: &Shared) {
    let mut cut = shared.generation.subscribe();
    let Ok(Ok(upstream)) =
        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(shared.upstream)).await
    else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    tokio::select! {
        _ = pump(client_read, upstream_write, shared) => {}
        _ = pump(upstream_read, client_write, shared) => {}
        _ = cut.changed() => {}
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    shared: &Shared,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if let Some(delay) = shared.delay() {
            tokio::time::sleep(delay).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = socket.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream) -> std::io::Result<Duration> {
        let started = Instant::now();
        stream.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"ping");
        Ok(started.elapsed())
    }

    #[tokio::test]
    async fn forwards_cuts_refuses_and_delays() {
        let proxy = TcpProxy::start(echo_server().await).await.unwrap();
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        round_trip(&mut open).await.unwrap();

        proxy.cut();
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(2), open.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0) | Err(_))),
            "a cut leaves the connection open"
        );

        proxy.refuse_for(Duration::from_millis(500));
        let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(round_trip(&mut refused).await.is_err(), "not refused");
        tokio::time::sleep(Duration::from_millis(600)).await;

        let mut slow = TcpStream::connect(proxy.addr()).await.unwrap();
        proxy.add_latency(Duration::from_millis(100), Duration::from_secs(5));
        assert!(round_trip(&mut slow).await.unwrap() >= Duration::from_millis(200));
        proxy.add_latency(Duration::from_millis(100), Duration::ZERO);
        assert!(round_trip(&mut slow).await.unwrap() < Duration::from_millis(100));
    }
}
