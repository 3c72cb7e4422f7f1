//! Group commit: many callers' writes, one statement and one commit.
//!
//! Every message a service handles used to cost its own statement, its own commit and its own
//! wake-ups of the database (docs/performance.md). A [`GroupCommit`] queues each caller's
//! request; one task takes whatever has queued (up to `max_batch`) and runs it as one batch
//! while the next requests queue. Under light load a batch is one request and nothing waits
//! longer than it did; under heavy load batches grow and the per-statement costs are shared.
//! Each caller still gets its own result, so its message is settled exactly as before.
//!
//! One batch is in flight at a time: batches of one process never contend with each other
//! for the same rows, and the queue is what makes batches grow. Batches of different
//! processes (several instances of a worker) do contend: the caller's statement must take its
//! locks in one global order (the workers' do: `workers/src/calls.rs`), or two batches that
//! share rows can deadlock.

use std::future::Future;
use tokio::sync::{mpsc, oneshot};

/// Requests queued at most before callers wait to submit.
const QUEUE: usize = 8_192;

/// A queue of requests run in batches by one task; see the module's documentation.
#[derive(Debug)]
pub struct GroupCommit<Req, Res> {
    queue: mpsc::Sender<(Req, oneshot::Sender<Res>)>,
}

impl<Req, Res> Clone for GroupCommit<Req, Res> {
    fn clone(&self) -> Self {
        GroupCommit {
            queue: self.queue.clone(),
        }
    }
}

/// The batch task is gone (its runtime is shutting down): the request was not run.
#[derive(Debug, thiserror::Error)]
#[error("the group-commit task has stopped")]
pub struct Stopped;

impl<Req: Send + 'static, Res: Send + 'static> GroupCommit<Req, Res> {
    /// Spawns the batch task. `run` gets the requests in the order they were submitted and
    /// must return one result per request, in the same order (a result missing at the end
    /// drops its caller's answer, which the caller sees as [`Stopped`]).
    pub fn start<F, Fut>(max_batch: usize, run: F) -> Self
    where
        F: Fn(Vec<Req>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<Res>> + Send,
    {
        let (queue, mut queued) = mpsc::channel::<(Req, oneshot::Sender<Res>)>(QUEUE);
        let max_batch = max_batch.max(1);
        tokio::spawn(async move {
            while let Some(first) = queued.recv().await {
                let mut requests = Vec::with_capacity(max_batch.min(64));
                let mut answers = Vec::with_capacity(max_batch.min(64));
                requests.push(first.0);
                answers.push(first.1);
                while requests.len() < max_batch {
                    let Ok((request, answer)) = queued.try_recv() else {
                        break;
                    };
                    requests.push(request);
                    answers.push(answer);
                }
                let results = run(requests).await;
                for (answer, result) in answers.into_iter().zip(results) {
                    // A caller that gave up (its task was cancelled) needs no answer.
                    let _ = answer.send(result);
                }
            }
        });
        GroupCommit { queue }
    }

    /// Queues `request` and waits for its own result.
    pub async fn submit(&self, request: Req) -> Result<Res, Stopped> {
        let (answer, result) = oneshot::channel();
        self.queue
            .send((request, answer))
            .await
            .map_err(|_| Stopped)?;
        result.await.map_err(|_| Stopped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[tokio::test]
    async fn each_caller_gets_its_own_result_and_queued_requests_share_a_batch() {
        let batches = Arc::new(Mutex::new(Vec::<Vec<u32>>::new()));
        let seen = batches.clone();
        let group = GroupCommit::start(16, move |requests: Vec<u32>| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(requests.clone());
                // Slow enough that the other callers queue behind the first batch.
                tokio::time::sleep(Duration::from_millis(20)).await;
                requests.into_iter().map(|n| n * 10).collect::<Vec<_>>()
            }
        });
        let calls = (1..=20).map(|n| {
            let group = group.clone();
            tokio::spawn(async move { group.submit(n).await.unwrap() })
        });
        let results = futures::future::join_all(calls).await;
        let results: Vec<u32> = results.into_iter().map(Result::unwrap).collect();
        assert_eq!(results, (1..=20).map(|n| n * 10).collect::<Vec<_>>());
        let batches = batches.lock().unwrap();
        assert!(
            batches.len() < 20,
            "queued requests share batches: {batches:?}"
        );
        assert!(
            batches.iter().all(|b| b.len() <= 16),
            "bounded: {batches:?}"
        );
        let mut all: Vec<u32> = batches.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (1..=20).collect::<Vec<_>>(), "each request run once");
    }

    #[tokio::test]
    async fn a_result_the_batch_did_not_return_is_an_error_not_a_hang() {
        let group = GroupCommit::start(4, |_: Vec<u32>| async { Vec::<u32>::new() });
        assert!(group.submit(1).await.is_err());
    }
}
