//! Running the `checkout-tools` binary as users do and reading the JSON report it ends with.

use crate::product::{checkout_bin, tools_bin};

/// Runs the `checkout-tools` binary with `args` (ending in `--json`), the services being the
/// product binary `checkout`, and returns whether it succeeded, its standard output and
/// standard error, and the JSON report on its last line.
pub fn run_json_report(args: &[&str]) -> (bool, String, String, serde_json::Value) {
    let output = std::process::Command::new(tools_bin())
        .args(args)
        .env("CHECKOUT_BIN", checkout_bin())
        .output()
        .expect("run checkout-tools");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let last = stdout.lines().last().unwrap_or_default();
    let report = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("no JSON report ({e}); stdout:\n{stdout}\nstderr:\n{stderr}"));
    (output.status.success(), stdout, stderr, report)
}
