#!/usr/bin/env bash
# Runs the whole test suite. Installs what the tests need where it is missing:
#   - a Python venv with the third-party Eureka client py-eureka-client (target/test-venv)
#   - Node.js with the third-party Eureka client eureka-js-client (target/test-node)
#   - etcd and etcdctl (Debian packages etcd-server, etcd-client), iproute2 (ip), openssl
# then checks the habits (cargo fmt, clippy and rustdoc with warnings denied, no new import
# cycle: scripts/check-cycles.py) and runs every test of the workspace (cargo nextest when
# installed, else cargo test).
# Usage: scripts/test.sh [extra args for the test runner]
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[test.sh] %s\n' "$*" >&2; }

apt_install() {
  if command -v apt-get >/dev/null 2>&1; then
    log "installing $* with apt-get"
    if [ "$(id -u)" -eq 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
    else
      sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
    fi
  else
    log "cannot install $*: no apt-get; install it by hand"; exit 1
  fi
}

# Real etcd for the etcd storage adaptor and leader election, and etcdctl (a separate Debian
# package) to read what the core wrote; ip (iproute2) for the network namespaces of the
# partition tests; openssl for the certificates of docs/security.md's procedure (tests).
command -v etcd >/dev/null 2>&1 || apt_install etcd-server
command -v etcdctl >/dev/null 2>&1 || apt_install etcd-client
command -v ip >/dev/null 2>&1 || apt_install iproute2
command -v openssl >/dev/null 2>&1 || apt_install openssl
command -v curl >/dev/null 2>&1 || apt_install curl
command -v chromium >/dev/null 2>&1 || apt_install chromium

# Python 3 with venv, and py-eureka-client in a venv under target/.
command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv
VENV="$PWD/target/test-venv"
if [ ! -x "$VENV/bin/python" ]; then
  mkdir -p target
  python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv; rm -rf "$VENV"; python3 -m venv "$VENV"; }
fi
# prometheus_client's text parser reads /metrics in tests/metrics.rs and tests/servicecenter_metrics.rs.
if ! "$VENV/bin/python" -c 'import py_eureka_client, schemathesis, prometheus_client' 2>/dev/null; then
  log "installing py-eureka-client, schemathesis and prometheus-client into $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check 'py-eureka-client==0.13.3' 'schemathesis==4.32.5' 'prometheus-client==0.21.1'
fi
export SYNCER_TEST_PYTHON="$VENV/bin/python"

# Node.js and eureka-js-client under target/test-node (tests/eureka_clients.rs).
command -v node >/dev/null 2>&1 || apt_install nodejs
command -v npm >/dev/null 2>&1 || apt_install npm
NODE_DIR="$PWD/target/test-node"
if [ ! -f "$NODE_DIR/node_modules/eureka-js-client/package.json" ]; then
  log "installing eureka-js-client into $NODE_DIR"
  mkdir -p "$NODE_DIR"
  npm install --prefix "$NODE_DIR" --silent --no-audit --no-fund 'eureka-js-client@4.5.0'
fi
export SYNCER_TEST_NODE_MODULES="$NODE_DIR/node_modules"

# The habits, checked before the tests (issue 11): formatting, clippy's lints and rustdoc's
# warnings (e.g. a link to a private item) denied, no import cycle between modules beyond
# scripts/known-cycles.txt. Clippy goes before cargo doc, which reuses its check build of
# the dependencies; cargo doc --no-deps only documents the workspace's crates.
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
check() { # check NAME HINT COMMAND...
  local name=$1 hint=$2
  shift 2
  log "check: $name"
  if ! "$@"; then
    log "FAILED check: $name: $hint"
    exit 1
  fi
}
check "cargo fmt" "run 'cargo fmt --all' and commit the result" \
  cargo fmt --all --check
check "import cycles" "break the cycle named above (scripts/check-cycles.py says how it reads the tree)" \
  python3 scripts/check-cycles.py
check "cargo clippy" "fix the lints above (every warning is an error)" \
  cargo clippy --workspace --all-targets -- -D warnings
check "cargo doc" "fix rustdoc's warnings above (a link to a private item: write it as plain \`code\`)" \
  env RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace

# The demo test runs the sample apps' binaries, which test builds of the root package do not
# build.
cargo build --workspace --bins

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
  # nextest does not run doctests.
  cargo test --workspace --doc
else
  cargo test --workspace --no-fail-fast "$@"
fi
