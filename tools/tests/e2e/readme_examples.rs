//! The README's ```` ```console ```` examples of `checkout-tools`, run as its reader runs them
//! and compared with what the README shows ([`checkout_harness::readme`]); the `checkout`
//! examples run in the product's tests.

use crate::product::{checkout_bin, tools_bin};
use checkout_harness::readme::{compare, console_examples, run};
use std::path::PathBuf;
use std::time::Duration;

#[test]
fn the_readme_console_examples_of_the_tools_print_what_the_readme_shows() {
    let readme = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = std::fs::read_to_string(readme).unwrap();
    let examples: Vec<_> = console_examples(&text)
        .into_iter()
        .filter(|e| e.command.starts_with("checkout-tools"))
        .collect();
    assert!(!examples.is_empty(), "the README lost its tools examples");
    let bin_dir = tools_bin().parent().unwrap();
    let envs = vec![(
        "CHECKOUT_BIN".to_owned(),
        checkout_bin().display().to_string(),
    )];
    let mut failures = Vec::new();
    for example in examples {
        match run(&example, bin_dir, &envs, Duration::from_secs(300)) {
            Ok(ran) => {
                if let Err(why) = compare(&example, &ran.stdout) {
                    failures.push(why);
                }
            }
            Err(err) => failures.push(err.to_string()),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
