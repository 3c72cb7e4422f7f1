//! Signals and reaping for child processes, shared by [`crate::NatsServer`] and
//! [`crate::Service`].
//!
//! Signals are only ever sent to a [`Child`] that has not been reaped yet: until `wait` collects
//! it, the kernel keeps the pid reserved (as a zombie at worst), so the signal cannot hit an
//! unrelated process that reused the pid.

use std::process::{Child, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How often exit is polled while waiting with a deadline; short enough that a graceful
/// shutdown is noticed promptly, long enough not to burn a core on a shared 2-core machine.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Sends SIGTERM to `child`, treating "already gone" as success because a process that exited
/// on its own has done what SIGTERM asks for.
pub(crate) fn send_sigterm(child: &Child) -> anyhow::Result<()> {
    let pid = i32::try_from(child.id()).context("child pid does not fit in pid_t")?;
    match kill(Pid::from_raw(pid), Signal::SIGTERM) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(errno) => Err(errno).with_context(|| format!("sending SIGTERM to pid {pid}")),
    }
}

/// Sends SIGKILL and reaps the child so no zombie is left behind.
///
/// Returns the exit status, or `None` if the child had already been reaped elsewhere.
pub(crate) fn kill_and_reap(child: &mut Child) -> Option<ExitStatus> {
    // `kill` only fails when the child was already reaped, in which case `wait` below returns
    // the remembered status; either way there is nothing left to clean up.
    let _ = child.kill();
    child.wait().ok()
}

/// Waits until `child` exits or `timeout` passes; returns the exit status if it exited.
pub(crate) fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(POLL_INTERVAL),
            // An error here means the child was reaped already; nothing more to wait for.
            Ok(None) | Err(_) => return None,
        }
    }
}
