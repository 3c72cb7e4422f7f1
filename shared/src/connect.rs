//! One way to connect to NATS: retry the first connection, reconnect forever after, and name
//! the connection so that `nats-server` monitoring shows who is who.
//!
//! `NATS_URL` may list several servers, comma-separated (`nats://n1:4222,nats://n2:4222`): the
//! nodes of one cluster. The client connects to one of them and, when that node dies, reconnects
//! to another; each entry is checked up front, so a typo names itself instead of surfacing as
//! the client library's bare "invalid port number".
//!
//! An entry may carry `user:password@` (the form other NATS clients take): a process without
//! an identity of its own ([`crate::access`]) then logs in with it, which async-nats alone
//! would not do (it parses the credentials and ignores them). Errors quote the list with every
//! password replaced ([`redacted`]).

use crate::access::Identity;
use async_nats::{Client, ConnectOptions, ServerAddr, jetstream};
use std::time::Duration;

/// Why NATS could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectFailed {
    /// An entry of the URL list is not a NATS server address.
    #[error(
        "NATS URL list {list:?}: entry {position} ({entry:?}) is not a server address: {reason}"
    )]
    BadUrl {
        /// The whole list as given.
        list: String,
        /// The 1-based position of the bad entry.
        position: usize,
        /// The bad entry, trimmed.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The credentials could not be read.
    #[error(transparent)]
    Access(#[from] crate::access::AccessError),
    /// No server of the list answered.
    #[error("connecting to NATS at {url}: {source}")]
    Unreachable {
        /// The URL list tried.
        url: String,
        /// Why.
        source: async_nats::ConnectError,
    },
}

/// Parses a comma-separated list of server URLs (one URL is a list of one). Spaces around
/// entries are ignored; an empty entry (`a,,b`, a trailing comma) is refused, since it is more
/// likely a mistake than a wish.
pub fn server_addrs(list: &str) -> Result<Vec<ServerAddr>, ConnectFailed> {
    let bad = |position: usize, entry: &str, reason: String| ConnectFailed::BadUrl {
        list: redacted(list),
        position,
        entry: redacted(entry),
        reason,
    };
    list.split(',')
        .enumerate()
        .map(|(index, entry)| {
            let entry = entry.trim();
            if entry.is_empty() {
                return Err(bad(index + 1, entry, String::from("empty entry")));
            }
            entry
                .parse::<ServerAddr>()
                .map_err(|err| bad(index + 1, entry, err.to_string()))
        })
        .collect()
}

/// Connects to the server list `url` as `name`. With `wait`, a broker that is down at start-up
/// is waited for (a service should outlive a broker restart); without it, the first failure is
/// returned (a command-line client should say so at once).
pub async fn connect(url: &str, name: &str, wait: bool) -> Result<Client, ConnectFailed> {
    let addrs = server_addrs(url)?;
    let mut options = ConnectOptions::new()
        .name(name)
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(2));
    if wait {
        options = options.retry_on_initial_connect();
    }
    // Who this process is, and TLS, as its binary set them (crate::access); else the URL's
    // credentials, if it has any.
    let anonymous = matches!(crate::access::get().identity, Identity::Anonymous);
    let in_url = addrs
        .iter()
        .find_map(|addr| Some((addr.username()?, addr.password()?)));
    if let (true, Some((user, password))) = (anonymous, in_url) {
        // The identity's own inbox, as `access::apply` gives a user of the environment.
        options = options
            .user_and_password(user.to_owned(), password.to_owned())
            .custom_inbox_prefix(format!("_INBOX_{user}"));
    }
    crate::access::apply(options)
        .await?
        .connect(addrs.as_slice())
        .await
        .map_err(|source| ConnectFailed::Unreachable {
            url: redacted(url),
            source,
        })
}

/// `list` with the password of every entry that has one replaced by `***`, fit to print.
pub fn redacted(list: &str) -> String {
    let entries: Vec<String> = list
        .split(',')
        .map(|entry| {
            let Some((scheme, rest)) = entry.split_once("://") else {
                return entry.to_owned();
            };
            match rest.rsplit_once('@') {
                Some((userinfo, host)) => {
                    let user = userinfo.split(':').next().unwrap_or_default();
                    format!("{scheme}://{user}:***@{host}")
                }
                None => entry.to_owned(),
            }
        })
        .collect();
    entries.join(",")
}

/// The JetStream context of a client, with a publish-ack timeout that outlasts a broker
/// restart's election of a new stream leader.
pub fn jetstream(client: Client) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(5))
        .build(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_url_is_a_list_of_one() {
        let addrs = server_addrs("nats://127.0.0.1:4222").expect("one URL");
        assert_eq!(addrs.len(), 1);
        assert_eq!(addrs[0].port(), 4222);
    }

    #[test]
    fn a_comma_separated_list_gives_every_node_in_order() {
        let addrs = server_addrs("nats://127.0.0.1:4222, nats://127.0.0.1:4223,nats://n3:4224")
            .expect("three URLs");
        let ports: Vec<u16> = addrs.iter().map(ServerAddr::port).collect();
        assert_eq!(ports, [4222, 4223, 4224]);
        assert_eq!(addrs[2].host(), "n3");
    }

    #[test]
    fn a_bad_entry_is_named_with_its_position() {
        let err = server_addrs("nats://127.0.0.1:4222,nats://127.0.0.1:notaport")
            .expect_err("a port that is not a number");
        let text = err.to_string();
        assert!(
            matches!(&err, ConnectFailed::BadUrl { position: 2, entry, .. }
                if entry == "nats://127.0.0.1:notaport"),
            "{text}"
        );
        assert!(text.contains("entry 2"), "{text}");
    }

    #[test]
    fn an_empty_entry_is_refused() {
        let err = server_addrs("nats://127.0.0.1:4222,").expect_err("a trailing comma");
        assert!(err.to_string().contains("entry 2 (\"\")"), "{err}");
    }

    #[test]
    fn passwords_in_a_list_are_redacted_and_nothing_else_is() {
        assert_eq!(
            redacted("nats://admin:s3cret@127.0.0.1:4222, nats://n2:4222,tls://u@h:1"),
            "nats://admin:***@127.0.0.1:4222, nats://n2:4222,tls://u:***@h:1"
        );
        let err = server_addrs("nats://admin:s3cret@127.0.0.1:42x2").expect_err("bad port");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[tokio::test]
    async fn connect_refuses_a_bad_list_before_dialling() {
        let err = connect("nats://127.0.0.1:4222,nats://x:1:2", "test", true)
            .await
            .expect_err("a malformed entry");
        assert!(
            matches!(err, ConnectFailed::BadUrl { position: 2, .. }),
            "{err}"
        );
    }
}
