//! The live gateway against its own OpenAPI document (`GET /openapi.json`), by schemathesis:
//! every check (the stateful ones included: a `202`'s links to the status and the event
//! stream are followed), each phase (examples, coverage, fuzzing, stateful), bounded in time.
//!
//! schemathesis is pinned and installed by `scripts/ensure-deps.sh` into a virtualenv in the
//! target directory (or named by `SCHEMATHESIS_BIN`).

use crate::gateway_status::README_STOCK;
use crate::support::{Options, Stack};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The version `scripts/ensure-deps.sh` installs.
const VERSION: &str = "4.32.5";

/// What one run may take: schemathesis's own budget (`--max-time`, which fuzzing and the
/// stateful phase fill) and the test's wall clock around the whole process.
const BUDGET_SECS: u64 = 60;
const WALL_CLOCK: Duration = Duration::from_secs(240);

/// Schema-valid carts the door still refuses (an unknown SKU, a price or a sum that is not
/// the catalog's: rules JSON Schema cannot state) are `422`, documented as such; every other
/// check keeps its defaults.
const CONFIG: &str = r#"
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "404", "409", "422"]
"#;

fn schemathesis() -> PathBuf {
    if let Ok(bin) = std::env::var("SCHEMATHESIS_BIN") {
        return bin.into();
    }
    // target/<profile>/checkout ─▶ target/schemathesis-<version>/bin/st
    let target = PathBuf::from(env!("CARGO_BIN_EXE_checkout"))
        .parent()
        .and_then(|profile| profile.parent())
        .map(PathBuf::from)
        .unwrap_or_default();
    target.join(format!("schemathesis-{VERSION}/bin/st"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_keeps_its_openapi_contract_under_schemathesis() {
    let st = schemathesis();
    let version = std::process::Command::new(&st).arg("--version").output();
    let version = version.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    assert!(
        version.as_deref().is_ok_and(|v| v.contains(VERSION)),
        "schemathesis {VERSION} not found at {} ({version:?}); install it with: \
         bash scripts/ensure-deps.sh",
        st.display()
    );
    let stack = Stack::start(Options {
        gateway: true,
        seed_stock: README_STOCK.into(),
        ..Options::default()
    })
    .await;
    let addr = stack.gateway.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("schemathesis.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let started = Instant::now();
    let run = tokio::process::Command::new(&st)
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(format!("http://{addr}/openapi.json"))
        .args([
            "--checks",
            "all",
            "--phases",
            "examples,coverage,fuzzing,stateful",
        ])
        .args([
            "--max-examples",
            "30",
            "--max-time",
            &BUDGET_SECS.to_string(),
        ])
        // An event stream lasts as long as its saga: a second or so here.
        .args(["--request-timeout", "20", "--workers", "1"])
        // Its example database and reports stay in the temporary directory.
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(WALL_CLOCK, run)
        .await
        .expect("schemathesis ended within its wall clock")
        .expect("schemathesis ran");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = format!(
        "schemathesis {VERSION} took {took:?}, {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("{report}");
    assert!(output.status.success(), "{report}");
    for phase in ["Examples", "Coverage", "Fuzzing", "Stateful"] {
        assert!(
            stdout.contains(&format!("✅ {phase}")),
            "{phase} did not pass: {report}"
        );
    }
    // The stateful phase followed the links of a 202 (to the status and the events).
    let links = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("API Links:"))
        .and_then(|l| l.split_whitespace().next()?.parse::<u32>().ok());
    assert!(links.is_some_and(|n| n >= 2), "no link followed: {report}");
    stack.stop().await;
}
