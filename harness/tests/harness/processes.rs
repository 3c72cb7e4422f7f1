//! Managed processes: terminate, escalate to SIGKILL, restart, drop.

use super::*;

fn sh(script: &str) -> Vec<String> {
    vec!["-c".to_owned(), script.to_owned()]
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).expect("read log")
}

#[test]
fn service_terminate_restart_and_kill() {
    let logs = tempfile::tempdir().expect("tempdir");
    let script = "echo started $GREETING; trap 'echo bye; exit 7' TERM; \
                  while true; do sleep 0.05; done";
    let env = [("GREETING".to_owned(), "hi".to_owned())];
    let mut service = Service::spawn(
        "worker",
        Path::new("/bin/sh"),
        &sh(script),
        &env,
        logs.path(),
    )
    .expect("spawn");
    assert_eq!(service.name(), "worker");
    assert!(service.is_running());
    let first_pid = service.pid().expect("pid");
    // Let the shell install its trap before signalling it.
    wait_for_log(service.log_path(), "started hi", 1);

    let code = service
        .terminate(Duration::from_secs(5))
        .expect("terminate");
    assert_eq!(code, Some(7), "SIGTERM handler's exit code");
    assert!(!service.is_running());
    assert_eq!(service.pid(), None);

    service.restart().expect("restart");
    assert!(service.is_running());
    assert_ne!(service.pid(), Some(first_pid));
    wait_for_log(service.log_path(), "started hi", 2);
    let log = read(service.log_path());
    assert_eq!(
        log.matches("=== harness: starting worker").count(),
        2,
        "{log}"
    );
    assert!(log.contains("bye"), "{log}");

    service.kill();
    assert!(!service.is_running());
    assert!(process_gone(first_pid));
}

#[test]
fn service_terminate_escalates_to_sigkill() {
    let logs = tempfile::tempdir().expect("tempdir");
    let script = "trap '' TERM; echo ready; while true; do sleep 0.05; done";
    let mut service = Service::spawn(
        "stubborn",
        Path::new("/bin/sh"),
        &sh(script),
        &[],
        logs.path(),
    )
    .expect("spawn");
    wait_for_log(service.log_path(), "ready", 1);
    let pid = service.pid().expect("pid");
    let code = service
        .terminate(Duration::from_millis(300))
        .expect("terminate");
    assert_eq!(code, None, "killed by SIGKILL has no exit code");
    assert!(process_gone(pid));
}

#[test]
fn service_drop_kills_and_exit_is_noticed() {
    let logs = tempfile::tempdir().expect("tempdir");
    let service = Service::spawn(
        "sleeper",
        Path::new("/bin/sleep"),
        &["30".to_owned()],
        &[],
        logs.path(),
    )
    .expect("spawn");
    let pid = service.pid().expect("pid");
    drop(service);
    assert!(process_gone(pid));

    let mut quick =
        Service::spawn("quick", Path::new("/bin/true"), &[], &[], logs.path()).expect("spawn");
    let deadline = std::time::Instant::now() + WAIT;
    while quick.is_running() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!quick.is_running());

    let missing = Service::spawn(
        "missing",
        Path::new("/nonexistent/bin"),
        &[],
        &[],
        logs.path(),
    );
    let message = format!(
        "{:#}",
        missing.expect_err("spawning a missing binary must fail")
    );
    assert!(message.contains("/nonexistent/bin"), "{message}");
}

fn wait_for_log(path: &Path, needle: &str, count: usize) {
    let deadline = std::time::Instant::now() + WAIT;
    while read(path).matches(needle).count() < count {
        assert!(
            std::time::Instant::now() < deadline,
            "log never showed {needle:?} x{count}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// True when no process (not even a zombie) has this pid any more, i.e. it was reaped.
fn process_gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}
