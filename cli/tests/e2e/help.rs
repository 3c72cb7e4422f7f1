//! Every `--help` names only the options of its own command: an option named in a description
//! but missing from the command (another command's, or one that went) sends the reader to
//! something that is not there.

use std::collections::BTreeSet;

fn help(args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_checkout"))
        .args(args)
        .arg("--help")
        .output()
        .expect("checkout ran");
    assert!(output.status.success(), "checkout {args:?} --help");
    String::from_utf8(output.stdout).expect("UTF-8 help")
}

/// Every `--word` in `text`.
fn named_options(text: &str) -> BTreeSet<String> {
    text.match_indices("--")
        .filter(|(at, _)| !text[..*at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '-'))
        .map(|(at, _)| {
            let rest = &text[at + 2..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .unwrap_or(rest.len());
            rest[..end].trim_end_matches('-').to_owned()
        })
        .filter(|name| !name.is_empty())
        .collect()
}

/// The options the help lists as the command's own: the lines that begin with one, indented
/// as clap indents them (`  -h, --help`, `      --nats-url <NATS_URL>`; descriptions sit
/// further in).
fn own_options(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| {
            let body = line.trim_start();
            if line.len() - body.len() > 6 {
                return None;
            }
            let body = match body.as_bytes() {
                [b'-', short, b',', ..] if *short != b'-' => body[3..].trim_start(),
                _ => body,
            };
            let name = body.split_whitespace().next()?.strip_prefix("--")?;
            Some(name.trim_end_matches(|c: char| !(c.is_ascii_alphanumeric() || c == '-')))
        })
        .map(str::to_owned)
        .collect()
}

fn subcommands(text: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn each_help_names_only_its_own_options() {
    let top = help(&[]);
    let commands = subcommands(&top);
    assert!(commands.len() >= 9, "{top}");
    let mut checked = vec![(String::from("checkout"), top)];
    for command in &commands {
        checked.push((format!("checkout {command}"), help(&[command.as_str()])));
    }
    for (command, text) in &checked {
        let own = own_options(text);
        assert!(own.contains("help"), "{command}: {own:?}\n{text}");
        let strangers: Vec<_> = named_options(text).difference(&own).cloned().collect();
        assert!(
            strangers.is_empty(),
            "`{command} --help` names options it does not have: {strangers:?}\n{text}"
        );
    }
    // The one the first hour tripped on.
    let stuck = &checked
        .iter()
        .find(|(c, _)| c == "checkout stuck")
        .unwrap()
        .1;
    assert!(!stuck.contains("stuck-after-secs"), "{stuck}");
}

#[test]
fn the_option_finders_read_clap_help_as_it_prints() {
    let text = "Sends a saga again at --max-step-timeout-secs.\n\nOptions:\n  -h, --help  Print help\n      --nats-url <NATS_URL>  NATS server URL\n";
    assert_eq!(
        own_options(text),
        BTreeSet::from(["help".to_owned(), "nats-url".to_owned()])
    );
    assert_eq!(
        named_options(text),
        BTreeSet::from([
            "help".to_owned(),
            "max-step-timeout-secs".to_owned(),
            "nats-url".to_owned()
        ])
    );
}
