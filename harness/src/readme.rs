//! The README as a test: its ```` ```console ```` blocks are run and their output compared.
//!
//! ```text
//!  README.md ─ console_blocks ─▶ [$ command, expected output]... ─ run (sh -c, the stack's
//!                                                                  environment) ─▶ snapbox
//! ```
//!
//! A `console` block is a sequence of `$ command` lines, each followed by the output the reader
//! should see. Ids, times and figures that change from run to run are written as placeholders
//! (`[SAGA_ID]`, `[TRACE_ID]`, `[TIME]`) or with snapbox's wildcards (`[..]` within a line,
//! `...` for any lines), so the page stays readable and the comparison stays exact elsewhere.
//! Commands in ```` ```sh ```` blocks are for the reader only (installers, the quick start's
//! scripts) and are not run here.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// One `$ command` of a console block, with the output the README shows for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// The README line of the command (1-based), for messages.
    pub line: usize,
    /// The command, as the shell reads it (continuation lines joined).
    pub command: String,
    /// The output shown under it.
    pub expected: String,
}

/// Every command of every ```` ```console ```` block, in order.
pub fn console_examples(markdown: &str) -> Vec<Example> {
    let mut examples: Vec<Example> = Vec::new();
    let mut in_console = false;
    let mut continuing = false;
    for (i, line) in markdown.lines().enumerate() {
        let fence = line.trim_start().starts_with("```");
        if fence {
            in_console = !in_console && line.trim_start() == "```console";
            continuing = false;
            continue;
        }
        if !in_console {
            continue;
        }
        if let Some(command) = line.strip_prefix("$ ") {
            examples.push(Example {
                line: i + 1,
                command: command.trim_end_matches('\\').trim().to_owned(),
                expected: String::new(),
            });
            continuing = continues(line, command);
        } else if let Some(last) = examples.last_mut() {
            if continuing {
                last.command.push(' ');
                last.command.push_str(line.trim_end_matches('\\').trim());
                continuing = continues(line, &last.command);
            } else {
                last.expected.push_str(line);
                last.expected.push('\n');
            }
        }
    }
    examples
}

/// Whether a command goes on after `line`: it ends with a backslash, or a single quote is
/// still open (a JSON body over several lines).
fn continues(line: &str, command_so_far: &str) -> bool {
    line.ends_with('\\') || command_so_far.matches('\'').count() % 2 == 1
}

/// The placeholders a README example may use for what changes from run to run.
pub fn redactions() -> anyhow::Result<snapbox::Redactions> {
    let mut r = snapbox::Redactions::new();
    let uuid = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}";
    r.insert("[SAGA_ID]", regex::Regex::new(uuid)?)?;
    r.insert("[TRACE_ID]", regex::Regex::new(r"\b[0-9a-f]{32}\b")?)?;
    r.insert(
        "[TIME]",
        regex::Regex::new(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d+)?( UTC|Z)?")?,
    )?;
    Ok(r)
}

/// What running an example gave.
#[derive(Debug)]
pub struct Ran {
    /// Its standard output.
    pub stdout: String,
    /// Whether it exited 0.
    pub success: bool,
}

/// Runs `example` with `sh -c`, `bin_dir` first on the `PATH` and `envs` added, within
/// `limit` (the command is killed past it).
pub fn run(
    example: &Example,
    bin_dir: &Path,
    envs: &[(String, String)],
    limit: Duration,
) -> anyhow::Result<Ran> {
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(&example.command)
        .env("PATH", path)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()?;
    let started = Instant::now();
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            anyhow::bail!(
                "README line {}: `{}` ran past {limit:?}",
                example.line,
                example.command
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output()?;
    Ok(Ran {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        success: out.status.success(),
    })
}

/// Whether `actual` reads as `expected` (placeholders and wildcards allowed); on a mismatch,
/// the message names the README line and shows both.
pub fn compare(example: &Example, actual: &str) -> Result<(), String> {
    let assert = match redactions() {
        Ok(r) => snapbox::Assert::new().redact_with(r),
        Err(err) => return Err(format!("redactions: {err}")),
    };
    // A body without a final newline (curl's) reads as the README writes it, on its line.
    let expected = snapbox::Data::text(example.expected.trim_end().to_owned());
    let actual = snapbox::Data::text(actual.trim_end().to_owned());
    assert
        .try_eq(Some(&"what it printed"), actual, expected)
        .map_err(|why| {
            format!(
                "README line {}: `{}` printed something else:\n{why}",
                example.line, example.command
            )
        })
}

/// Relative links of a Markdown file (`[text](path)` not starting with a scheme or `#`), with
/// their line, and whether each names a file or folder that exists next to it.
pub fn broken_links(markdown_path: &Path) -> anyhow::Result<Vec<(usize, String)>> {
    let text = std::fs::read_to_string(markdown_path)?;
    let dir = markdown_path.parent().unwrap_or(Path::new("."));
    let link = regex::Regex::new(r"\]\(([^)\s]+)\)")?;
    let mut broken = Vec::new();
    for (i, line) in text.lines().enumerate() {
        for cap in link.captures_iter(line) {
            let target = &cap[1];
            if target.contains("://") || target.starts_with('#') || target.starts_with("mailto:") {
                continue;
            }
            let file = target.split('#').next().unwrap_or(target);
            if !dir.join(file).exists() {
                broken.push((i + 1, target.to_owned()));
            }
        }
    }
    Ok(broken)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "text\n```sh\n$ not run\n```\n```console\n$ checkout publish \\\n  --wait\nsaga [SAGA_ID]\noutcome: completed\n$ checkout show x\nstatus [..]\n$ curl -d '{\"a\":\n  1}'\nok\n```\n";

    #[test]
    fn console_blocks_are_split_into_commands_with_their_output() {
        let examples = console_examples(PAGE);
        assert_eq!(examples.len(), 3, "{examples:#?}");
        assert_eq!(examples[0].command, "checkout publish --wait");
        assert_eq!(examples[0].expected, "saga [SAGA_ID]\noutcome: completed\n");
        assert_eq!(examples[0].line, 6);
        assert_eq!(examples[1].expected, "status [..]\n");
        assert_eq!(examples[2].command, "curl -d '{\"a\": 1}'");
        assert_eq!(examples[2].expected, "ok\n");
    }

    #[test]
    fn placeholders_and_wildcards_match_what_changes_and_nothing_else() {
        let example = &console_examples(PAGE)[0];
        let id = "saga 3f2a1b4c-1111-4222-8333-444455556666\noutcome: completed\n";
        assert_eq!(compare(example, id), Ok(()));
        let other = "saga 3f2a1b4c-1111-4222-8333-444455556666\noutcome: compensated\n";
        assert!(compare(example, other).is_err());
    }
}
