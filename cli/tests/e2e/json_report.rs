//! Running the `checkout` binary as users do and reading the JSON report it ends with.

/// Runs the `checkout` binary with `args` (ending in `--json`) and returns whether it
/// succeeded, its standard output and standard error, and the JSON report on its last line.
pub fn run_json_report(args: &[&str]) -> (bool, String, String, serde_json::Value) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_checkout"))
        .args(args)
        .output()
        .expect("run checkout");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let last = stdout.lines().last().unwrap_or_default();
    let report = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("no JSON report ({e}); stdout:\n{stdout}\nstderr:\n{stderr}"));
    (output.status.success(), stdout, stderr, report)
}
