//! The README's ```` ```console ```` examples of `checkout` and of the gateway (`curl`), run
//! in order against a stack started as the README's reader has it (the services' default
//! catalog, a gateway), their output compared with what the README shows
//! ([`checkout_harness::readme`]: ids, times and figures are placeholders there).
//! `checkout-tools` examples run in the tools' tests.

use crate::support::{Options, Stack};
use checkout_harness::readme::{compare, console_examples, run};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The inventory worker's default `SEED_STOCK`, which the README's prices are.
const DEFAULT_STOCK: &str =
    "SKU-MUG=100000@1299,SKU-TEE=100000@2499,SKU-CAP=100000@1799,SKU-RARE=3@9999";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_console_examples_print_what_the_readme_shows() {
    let readme = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = std::fs::read_to_string(readme).unwrap();
    let examples: Vec<_> = console_examples(&text)
        .into_iter()
        .filter(|e| !e.command.starts_with("checkout-tools"))
        .collect();
    assert!(
        examples.len() >= 8,
        "the README lost its examples: {examples:#?}"
    );
    let options = Options {
        seed_stock: DEFAULT_STOCK.into(),
        gateway: true,
        ..Options::default()
    };
    let stack = Stack::start(options).await;
    let gateway = stack.gateway.unwrap().to_string();
    let envs = vec![
        ("NATS_URL".to_owned(), stack.nats.url()),
        ("DATABASE_URL".to_owned(), stack.db_url()),
        ("TRACE_UI".to_owned(), "none".to_owned()),
        ("OTEL_TRACES_EXPORTER".to_owned(), "none".to_owned()),
        ("OTEL_METRICS_EXPORTER".to_owned(), "none".to_owned()),
        ("OTEL_LOGS_EXPORTER".to_owned(), "none".to_owned()),
    ];
    // The README's commands are an operator's: the administrator's.
    let envs = [envs, stack.nats.passwords().admin_env()].concat();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_checkout"))
        .parent()
        .unwrap()
        .to_owned();
    let mut failures = Vec::new();
    for mut example in examples {
        // The README's gateway listens on its default address; the test's on a free port.
        example.command = example.command.replace("127.0.0.1:8080", &gateway);
        let (bin_dir, envs) = (bin_dir.clone(), envs.clone());
        let ran = tokio::task::spawn_blocking(move || {
            let ran = run(&example, &bin_dir, &envs, Duration::from_secs(90));
            (example, ran)
        })
        .await
        .unwrap();
        match ran {
            (example, Ok(ran)) => {
                if let Err(why) = compare(&example, &ran.stdout) {
                    failures.push(why);
                }
            }
            (_, Err(err)) => failures.push(err.to_string()),
        }
    }
    stack.stop().await;
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
