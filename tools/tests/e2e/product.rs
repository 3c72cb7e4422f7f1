//! The two binaries a test runs: `checkout-tools`, which cargo builds for this package's tests,
//! and the product binary `checkout`, which it does not (it is another package's). The first
//! test that needs `checkout` builds it into the same target directory, next to
//! `checkout-tools`, where the tools look for it: a no-op when it is up to date, as after the
//! `cargo test --workspace` of `scripts/test`, which builds every binary first.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The tools binary under test.
pub fn tools_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_checkout-tools"))
}

/// The product binary, built if need be: `$CHECKOUT_BIN` when set, else `checkout` next to
/// [`tools_bin`].
pub fn checkout_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("CHECKOUT_BIN") {
        Some(path) => PathBuf::from(path),
        None => build_checkout(),
    })
}

/// `cargo build -p checkout-cli --bin checkout` in the profile `checkout-tools` was built in.
fn build_checkout() -> PathBuf {
    let dir = tools_bin().parent().expect("the target directory");
    let profile = match dir.file_name().and_then(|name| name.to_str()) {
        Some("debug") | None => "dev",
        Some(name) => name,
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "--profile", profile])
        .args(["-p", "checkout-cli", "--bin", "checkout"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo");
    assert!(
        status.success(),
        "`cargo build --profile {profile} -p checkout-cli` failed"
    );
    let bin = dir.join(format!("checkout{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "cargo built `checkout` but not at {} (a --target build? set CHECKOUT_BIN)",
        bin.display()
    );
    bin
}
