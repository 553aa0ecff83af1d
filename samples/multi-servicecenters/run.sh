#!/usr/bin/env bash
# The multi-servicecenters demo on one machine: a Eureka site and a service-center site,
# bridged by two syncers; hello-server (service-center side) calls account-server (Eureka
# side). Run from anywhere; it builds (debug) and starts everything on 127.0.0.1.
#
#   samples/multi-servicecenters/run.sh          # succeed (exit 0) once login works, stop all
#   samples/multi-servicecenters/run.sh --keep   # ...and keep everything running until Ctrl-C
#
# Environment: DEADLINE_SECS (default 120) bounds the wait for `welcome Jack`;
# SKIP_BUILD=1 skips `cargo build`; BIN_DIR picks the binaries (default target/debug); SYNCER_LOG / RUST_LOG set the log filter of every process.
set -euo pipefail

KEEP=0
for arg in "$@"; do
    case "$arg" in
        --keep) KEEP=1 ;;
        -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done

DEADLINE_SECS="${DEADLINE_SECS:-120}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    echo "==> building syncer and the demo apps (debug)"
    cargo build -p syncer -p multi-servicecenters
fi
BIN="${BIN_DIR:-$ROOT/target/debug}"
for bin in syncer account-server hello-server; do
    [[ -x "$BIN/$bin" ]] || { echo "missing $BIN/$bin" >&2; exit 1; }
done

LOGS="$(mktemp -d "${TMPDIR:-/tmp}/multi-servicecenters.XXXXXX")"
echo "==> logs in $LOGS"

# name -> pid, in start order
NAMES=()
PIDS=()

# A child that exited stays a zombie until waited for, so `kill -0` is not enough.
alive() {
    local stat
    stat="$(ps -o stat= -p "$1" 2>/dev/null)" || return 1
    [[ -n "$stat" && "$stat" != Z* ]]
}

start() {
    local name="$1"; shift
    "$@" >"$LOGS/$name.log" 2>&1 &
    NAMES+=("$name")
    PIDS+=("$!")
    echo "    started $name (pid $!): $*"
}

tails() {
    for name in "${NAMES[@]}"; do
        echo "----- $LOGS/$name.log (last 20 lines)"
        tail -n 20 "$LOGS/$name.log" 2>/dev/null || true
    done
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if ((${#PIDS[@]})); then
        echo "==> stopping"
        # Newest first, one at a time: the apps unregister while the registries are still up,
        # then the syncers leave, then the registries stop. 5 s each before a SIGKILL.
        local i watchdog
        for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
            alive "${PIDS[i]}" || { wait "${PIDS[i]}" 2>/dev/null || true; continue; }
            kill -TERM "${PIDS[i]}" 2>/dev/null || true
            (sleep 5; kill -KILL "${PIDS[i]}" 2>/dev/null) &
            watchdog=$!
            wait "${PIDS[i]}" 2>/dev/null || true
            kill "$watchdog" 2>/dev/null || true
            wait "$watchdog" 2>/dev/null || true
        done
    fi
    echo "==> logs kept in $LOGS"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Fails (with the log tails) if any child has died.
check_alive() {
    for i in "${!PIDS[@]}"; do
        if ! alive "${PIDS[i]}"; then
            echo "!! ${NAMES[i]} exited early" >&2
            tails >&2
            exit 1
        fi
    done
}

# Waits until a URL answers any HTTP status.
wait_http() {
    local name="$1" url="$2" deadline=$((SECONDS + 30))
    until [[ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$url" || true)" != 000 ]]; do
        check_alive
        if ((SECONDS >= deadline)); then
            echo "!! $name did not answer at $url within 30 s" >&2
            tails >&2
            exit 1
        fi
        sleep 0.2
    done
    echo "    $name is up at $url"
}

echo "==> registries (built-in core)"
start eureka-registry "$BIN/syncer" servicecenter --listen 127.0.0.1:8761 --data-dir "$LOGS/eureka-registry.data"
start sc-registry "$BIN/syncer" servicecenter --listen 127.0.0.1:30100 --data-dir "$LOGS/sc-registry.data"
wait_http eureka-registry http://127.0.0.1:8761/eureka/apps
wait_http sc-registry http://127.0.0.1:30100/v4/default/registry/version

echo "==> syncers"
start eureka-syncer "$BIN/syncer" daemon --sc-plugin eureka --sc-addr http://127.0.0.1:8761/eureka \
    --cluster-name eureka-site --node eureka-1 \
    --bind-addr 127.0.0.1:30190 --rpc-addr 127.0.0.1:30191 --http-addr 127.0.0.1:30192 \
    --ticker-interval 3
start sc-syncer "$BIN/syncer" daemon --sc-plugin servicecenter --sc-addr http://127.0.0.1:30100 \
    --cluster-name sc-site --node sc-1 \
    --bind-addr 127.0.0.1:30290 --rpc-addr 127.0.0.1:30291 --http-addr 127.0.0.1:30292 \
    --join-addr 127.0.0.1:30190 --ticker-interval 3

echo "==> apps"
start account-server "$BIN/account-server" --listen 127.0.0.1:8090 \
    --eureka http://127.0.0.1:8761/eureka --host 127.0.0.1
start hello-server "$BIN/hello-server" --listen 127.0.0.1:8091 --registry http://127.0.0.1:30100

CURL=(curl -s -m 5 -X POST http://127.0.0.1:8091/login
      -H 'Content-Type: application/json' -d '{"user":"Jack","password":"123456"}')
echo "==> waiting up to $DEADLINE_SECS s for hello-server to reach account-server"
deadline=$((SECONDS + DEADLINE_SECS))
answer=""
while :; do
    check_alive
    answer="$("${CURL[@]}" 2>/dev/null || true)"
    [[ "$answer" == "welcome Jack" ]] && break
    if ((SECONDS >= deadline)); then
        echo "!! no 'welcome Jack' within $DEADLINE_SECS s (last answer: '${answer}')" >&2
        tails >&2
        exit 1
    fi
    sleep 1
done

echo
echo "\$ curl -X POST http://127.0.0.1:8091/login -H 'Content-Type: application/json' -d '{\"user\":\"Jack\",\"password\":\"123456\"}'"
echo "$answer"
echo
echo "==> demo succeeded after $SECONDS s"

if ((KEEP)); then
    echo "==> everything keeps running (logs in $LOGS); press Ctrl-C to stop"
    trap 'exit 0' INT TERM
    while :; do
        check_alive
        sleep 2
    done
fi
