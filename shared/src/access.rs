//! Who this process is to NATS, and whether it may provision: set once by the binary from its
//! settings (`NATS_USER`/`NATS_PASSWORD`, `NATS_CREDS`, `NATS_NKEY_SEED_FILE`, `NATS_TLS_CA`,
//! `NATS_PROVISION`), never from code; every connection of the process ([`crate::connect`])
//! uses it.
//!
//! ```text
//!  binary (clap, env) ─▶ access::set(Access) ─▶ connect(): credentials, TLS
//!                                          └─▶ streams::provision(): create, or only verify
//! ```
//!
//! With identities on (`nats/auth/`), a service's identity may not create streams or
//! consumers: the administrator provisions (`checkout provision`), and each service runs with
//! `NATS_PROVISION=false`, which binds to what exists and says what is missing.

use async_nats::ConnectOptions;
use std::path::PathBuf;
use std::sync::OnceLock;

/// How a process proves who it is.
#[derive(Clone, Default)]
pub enum Identity {
    /// No credentials (a broker without authorization).
    #[default]
    Anonymous,
    /// A user and password.
    UserPassword {
        /// The user.
        user: String,
        /// The password (never logged).
        password: String,
    },
    /// A `.creds` file (JWT and nkey seed).
    Creds(PathBuf),
    /// A file holding an nkey seed (`SU...`).
    NkeySeedFile(PathBuf),
}

impl std::fmt::Debug for Identity {
    // The password and seeds stay out of any debug print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Anonymous => f.write_str("Anonymous"),
            Identity::UserPassword { user, .. } => write!(f, "UserPassword({user})"),
            Identity::Creds(path) => write!(f, "Creds({})", path.display()),
            Identity::NkeySeedFile(path) => write!(f, "NkeySeedFile({})", path.display()),
        }
    }
}

/// The process's access to NATS.
#[derive(Debug, Clone)]
pub struct Access {
    /// Its identity.
    pub identity: Identity,
    /// Whether it creates and updates streams and consumers (the administrator's job when
    /// identities are on), or only binds to them.
    pub provisions: bool,
    /// A CA certificate (PEM) to verify the server's with; TLS is then required.
    pub tls_ca: Option<PathBuf>,
}

impl Default for Access {
    fn default() -> Self {
        Access {
            identity: Identity::Anonymous,
            provisions: true,
            tls_ca: None,
        }
    }
}

/// Why the access settings could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// A credentials or seed file could not be read.
    #[error("reading NATS credentials from {path}: {source}")]
    Unreadable {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

static ACCESS: OnceLock<Access> = OnceLock::new();

/// Sets the process's access; the first call wins (a binary calls it once, at start).
pub fn set(access: Access) {
    let _ = ACCESS.set(access);
}

/// The process's access (anonymous, provisioning, no TLS, until [`set`]).
pub fn get() -> &'static Access {
    ACCESS.get_or_init(Access::default)
}

/// `options` with the process's credentials and TLS.
pub async fn apply(mut options: ConnectOptions) -> Result<ConnectOptions, AccessError> {
    let access = get();
    let unreadable = |path: &PathBuf, source| AccessError::Unreadable {
        path: path.display().to_string(),
        source,
    };
    options = match &access.identity {
        Identity::Anonymous => options,
        // Replies come to an inbox of the identity's own (`_INBOX_<user>.>`), which the broker
        // lets no other identity read: with the shared `_INBOX.>`, any identity could read
        // the messages pulled by another (a charge command, say).
        Identity::UserPassword { user, password } => options
            .user_and_password(user.clone(), password.clone())
            .custom_inbox_prefix(format!("_INBOX_{user}")),
        Identity::Creds(path) => options
            .credentials_file(path)
            .await
            .map_err(|e| unreadable(path, e))?,
        Identity::NkeySeedFile(path) => {
            let seed = std::fs::read_to_string(path).map_err(|e| unreadable(path, e))?;
            options.nkey(seed.trim().to_owned())
        }
    };
    if let Some(ca) = &access.tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    Ok(options)
}
