#!/usr/bin/env bash
# Makes sure this machine has what the project needs, installing or starting what it can:
#   - a Rust toolchain (cargo);
#   - the nats-server binary (tests and the chaos runner start their own servers);
#   - PostgreSQL answering on 127.0.0.1:5432 (trust auth for user postgres).
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

if ! command -v nats-server >/dev/null && [ ! -x /usr/sbin/nats-server ] && [ -z "${NATS_SERVER_BIN:-}" ]; then
  apt_install nats-server
fi

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
if ! psql -h 127.0.0.1 -U postgres -d postgres -Atc 'select 1' >/dev/null 2>&1; then
  die "PostgreSQL answers but user postgres cannot log in over TCP without a password.
Allow it for local runs, e.g. add 'host all all 127.0.0.1/32 trust' to pg_hba.conf and reload,
or point DATABASE_ADMIN_URL / DATABASE_URL at a user that can create databases."
fi
