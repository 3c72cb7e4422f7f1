//! Where the product binary is. The tools start the services as the product runs them, by
//! running `checkout orchestrator`, `checkout worker <kind>` (never their own binary, which has
//! no service in it): `checkout` is looked for next to this executable (`cargo build` puts both
//! in the same target directory), unless `CHECKOUT_BIN` names it.

use std::path::{Path, PathBuf};

/// The variable that names the product binary, when it is not next to this executable.
pub const CHECKOUT_BIN: &str = "CHECKOUT_BIN";

/// The path of the product binary `checkout`: `$CHECKOUT_BIN`, or `checkout` in this
/// executable's directory. Fails, naming the command that builds it, when there is none.
pub fn checkout_bin() -> anyhow::Result<PathBuf> {
    // The tools are not the product: reading one variable here keeps the override out of every
    // subcommand's options.
    if let Some(path) = std::env::var_os(CHECKOUT_BIN) {
        let path = PathBuf::from(path);
        anyhow::ensure!(
            path.is_file(),
            "{CHECKOUT_BIN} is {} but there is no file there",
            path.display()
        );
        return Ok(path);
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let path = sibling(dir);
    anyhow::ensure!(path.is_file(), "{}", missing(dir, &path));
    Ok(path)
}

/// `checkout` in `dir`.
fn sibling(dir: &Path) -> PathBuf {
    dir.join(format!("checkout{}", std::env::consts::EXE_SUFFIX))
}

/// Why `path` will not do, and the command that builds it (for the profile `dir` is of).
fn missing(dir: &Path, path: &Path) -> String {
    let profile = if dir.ends_with("debug") {
        ""
    } else {
        " --release"
    };
    format!(
        "the product binary `checkout` is not at {}: build it with `cargo build{profile} -p \
         checkout-cli`, or set {CHECKOUT_BIN} to its path",
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_product_is_looked_for_next_to_the_tools() {
        let dir = Path::new("/work/target/release");
        let path = sibling(dir);
        assert_eq!(path.parent(), Some(dir));
        assert!(path.ends_with(format!("checkout{}", std::env::consts::EXE_SUFFIX)));
    }

    #[test]
    fn a_missing_product_names_the_command_that_builds_it() {
        let release = Path::new("/work/target/release");
        let message = missing(release, &sibling(release));
        assert!(
            message.contains("`cargo build --release -p checkout-cli`"),
            "{message}"
        );
        assert!(message.contains(CHECKOUT_BIN), "{message}");
        let debug = Path::new("/work/target/debug");
        let message = missing(debug, &sibling(debug));
        assert!(
            message.contains("`cargo build -p checkout-cli`"),
            "{message}"
        );
    }
}
