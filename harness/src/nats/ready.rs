//! Waiting for a server: the readiness probe, and a blocking wrapper for callers that may or
//! may not be inside a Tokio runtime.

use super::{
    AttemptError, JS_ACCOUNT_INFO_SUBJECT, NatsServer, PROBE_INTERVAL, PROBE_TIMEOUT,
    READY_TIMEOUT, log_tail,
};
use anyhow::{Context as _, anyhow};
use bytes::Bytes;
use std::future::Future;
use std::process::Child;
use std::thread;
use std::time::Instant;

/// One readiness probe: TCP accept, NATS handshake, then a JetStream account-info request.
///
/// The request is sent raw instead of via `jetstream::Context::query_account` because
/// async-nats 0.51 requires account fields (`reserved_memory`, `reserved_storage`) that
/// nats-server 2.9 (Debian's package) does not send, so the typed call fails against a perfectly
/// ready server. A JSON reply without an `error` member means JetStream is serving requests.
pub(super) async fn probe(
    url: &str,
    options: async_nats::ConnectOptions,
    tls_ca: Option<&std::path::Path>,
) -> Result<(), String> {
    let work = async {
        let mut options = options.connection_timeout(PROBE_TIMEOUT);
        if let Some(ca) = tls_ca {
            options = options
                .add_root_certificates(ca.to_path_buf())
                .require_tls(true);
        }
        let client = options
            .connect(url)
            .await
            .map_err(|err| format!("connect: {err}"))?;
        let reply = client
            .request(JS_ACCOUNT_INFO_SUBJECT, Bytes::new())
            .await
            .map_err(|err| format!("JetStream account info request: {err}"))?;
        let body: serde_json::Value = serde_json::from_slice(&reply.payload)
            .map_err(|err| format!("JetStream account info reply is not JSON: {err}"))?;
        match body.get("error") {
            None => Ok(()),
            Some(error) => Err(format!("JetStream account info returned an error: {error}")),
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| Err(format!("probe timed out after {PROBE_TIMEOUT:?}")))
}

/// Runs `future` to completion on a helper thread with its own current-thread runtime.
///
/// A blocking API cannot call `Runtime::block_on` on a thread that is already inside a Tokio
/// runtime (Tokio panics), and the caller may or may not be in one; a fresh thread works in
/// both cases. Everything the future spawns dies with the helper runtime.
pub(super) fn block_on_helper<F>(future: F) -> anyhow::Result<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("building a helper Tokio runtime for the NATS readiness probe")?;
                Ok(runtime.block_on(future))
            })
            .join()
            .map_err(|_| anyhow!("the NATS readiness probe thread panicked"))?
    })
}

impl NatsServer {
    /// Polls until a client can connect and get JetStream account info, which is the point at
    /// which streams (including ones recovered from the store) are usable.
    pub(crate) async fn wait_ready(&mut self) -> Result<(), AttemptError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let url = self.url();
        loop {
            let exited = match self.child.as_mut().map(Child::try_wait) {
                Some(Ok(None)) => None,
                Some(Ok(Some(status))) => Some(status.to_string()),
                Some(Err(err)) => Some(err.to_string()),
                None => Some(String::from("process handle missing")),
            };
            if let Some(status) = exited {
                self.child = None;
                return Err(AttemptError::Exited(anyhow!(
                    "nats-server on port {} exited before it was ready ({status}); log tail:\n{}",
                    self.spec.port,
                    log_tail(&self.log_path)
                )));
            }
            let options = self.passwords.admin_options();
            let probe_error = match probe(&url, options, self.tls_ca.as_deref()).await {
                Ok(()) => return Ok(()),
                Err(err) => err,
            };
            if Instant::now() >= deadline {
                return Err(AttemptError::Fatal(anyhow!(
                    "nats-server on port {} did not get JetStream ready within {:?} (last probe: \
                     {probe_error}); log tail:\n{}",
                    self.spec.port,
                    READY_TIMEOUT,
                    log_tail(&self.log_path)
                )));
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }
}
