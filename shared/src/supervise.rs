//! A service's long-running tasks, joined so that none fails in silence: a task that panics,
//! returns an error, or simply ends while the service is meant to be running stops the whole
//! service, and its reason becomes the service's error (and a non-zero exit).

use futures::future::select_all;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Why a supervised task stopped the service.
#[derive(Debug, thiserror::Error)]
#[error("task {task} {reason}")]
pub struct TaskFailed {
    /// The task's name.
    pub task: &'static str,
    /// What happened to it.
    pub reason: String,
}

/// A named task whose result says why it ended.
pub type Task = (&'static str, JoinHandle<Result<(), String>>);

/// Waits for every task. Until `shutdown` is cancelled no task should end; the first that
/// does (or fails) cancels `shutdown` so the others stop, and is reported once all have
/// ended. After a shutdown, only failures count.
pub async fn join_all(tasks: Vec<Task>, shutdown: &CancellationToken) -> Result<(), TaskFailed> {
    let (mut names, mut handles): (Vec<_>, Vec<_>) = tasks.into_iter().unzip();
    let mut first_failure = None;
    while !handles.is_empty() {
        let (result, index, rest) = select_all(handles).await;
        let task = names.remove(index);
        handles = rest;
        let reason = match result {
            Ok(Ok(())) if shutdown.is_cancelled() => None,
            Ok(Ok(())) => Some("ended while the service was running".to_owned()),
            Ok(Err(reason)) => Some(format!("failed: {reason}")),
            Err(join) if join.is_panic() => Some(format!("panicked: {}", panic_message(join))),
            Err(join) => Some(format!("was cancelled: {join}")),
        };
        if let Some(reason) = reason {
            tracing::error!(task, %reason, "a service task stopped; shutting the service down");
            shutdown.cancel();
            first_failure.get_or_insert(TaskFailed { task, reason });
        }
    }
    first_failure.map_or(Ok(()), Err)
}

fn panic_message(join: tokio::task::JoinError) -> String {
    let payload = join.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "with a non-text payload".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_panics_or_ends_early_stops_the_others_and_is_reported() {
        let shutdown = CancellationToken::new();
        let waiter = shutdown.clone();
        let patient: Task = (
            "patient",
            tokio::spawn(async move {
                waiter.cancelled().await;
                Ok(())
            }),
        );
        let panicking: Task = ("boom", tokio::spawn(async { panic!("kaboom") }));
        let failed = join_all(vec![patient, panicking], &shutdown).await;
        let failed = failed.expect_err("a panic is a failure");
        assert_eq!(failed.task, "boom");
        assert!(failed.reason.contains("kaboom"), "{}", failed.reason);
        assert!(shutdown.is_cancelled(), "the others were told to stop");

        let shutdown = CancellationToken::new();
        let early: Task = ("early", tokio::spawn(async { Ok(()) }));
        let failed = join_all(vec![early], &shutdown)
            .await
            .expect_err("early end");
        assert!(failed.reason.contains("ended while"), "{}", failed.reason);
    }

    #[tokio::test]
    async fn tasks_that_end_after_a_shutdown_are_fine() {
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let done: Task = ("done", tokio::spawn(async { Ok(()) }));
        assert!(join_all(vec![done], &shutdown).await.is_ok());
    }
}
