#!/usr/bin/env bash
# Fuzzes the running server from its own OpenAPI document (docs/openapi.json) with
# schemathesis: examples, coverage and fuzzing phases, every generated request
# authenticated, against the real binary delivering over MQTT to a real Mosquitto.
# Passes only with zero 5xx answers and zero answers that violate the document (status
# code, content type, body schema, headers).
#
#   ./scripts/fuzz-api.sh                      # what CI runs
#   FUZZ_MAX_EXAMPLES=500 ./scripts/fuzz-api.sh   # a longer run
#   FUZZ_SEED=1234 ./scripts/fuzz-api.sh          # replay a run (the seed is printed)
#
# Variables: FUZZ_MAX_EXAMPLES (per operation, default 200), FUZZ_SEED (default random),
# CLOCK_SERVER_BIN (default: build target/debug/clock-server), MOSQUITTO (broker binary),
# FUZZ_VENV (where schemathesis is installed).
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
max_examples=${FUZZ_MAX_EXAMPLES:-200}
seed=${FUZZ_SEED:-$(od -An -tu4 -N4 /dev/urandom | tr -d ' ')}
venv=${FUZZ_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/clock-server/schemathesis-$SCHEMATHESIS_VERSION}

SCRIPT_NAME=fuzz-api
# shellcheck source=scripts/bench/lib.sh
. scripts/bench/lib.sh
log() { printf 'fuzz-api: %s\n' "$*" >&2; }

# --- schemathesis, pinned, in its own venv (installed once, quietly) -------------------
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -qF "$SCHEMATHESIS_VERSION"; then
    log "installing schemathesis $SCHEMATHESIS_VERSION into $venv"
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    if python3 -m venv "$venv" 2>/dev/null; then
        "$venv/bin/pip" install --quiet --disable-pip-version-check \
            "schemathesis==$SCHEMATHESIS_VERSION"
    else
        # No venv module (Debian's python3 without python3-venv): a private directory
        # on PYTHONPATH behind a small launcher does the same.
        rm -rf "$venv"
        PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check \
            --target "$venv/site" "schemathesis==$SCHEMATHESIS_VERSION"
        mkdir -p "$venv/bin"
        printf '#!/bin/sh\nPYTHONPATH="%s/site" exec python3 -m schemathesis.cli "$@"\n' "$venv" \
            >"$venv/bin/schemathesis"
        chmod +x "$venv/bin/schemathesis"
    fi
fi

# --- the server binary -----------------------------------------------------------------
bin=${CLOCK_SERVER_BIN:-}
if [ -z "$bin" ]; then
    "$CARGO" build --quiet --locked --bin clock-server
    bin="${CARGO_TARGET_DIR:-target}/debug/clock-server"
fi

[ -x "$MOSQUITTO" ] || die "mosquitto not found (./scripts/install-test-deps.sh installs it)"

# --- processes, cleaned up however the script ends --------------------------------------
scratch
server_pid=""
on_failure() {
    if [ -s "$TMP/server.log" ]; then
        log "server log (warnings and errors):"
        cat "$TMP/server.log" >&2
    fi
}

# Polls until `$@` succeeds, for at most $1 seconds (the rest is the command).
wait_for() {
    local limit=$1
    shift
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then return 1; fi
        sleep 0.1
    done
}

ready() {
    python3 - "$1" "$2" <<'EOF'
import sys, urllib.request
req = urllib.request.Request(sys.argv[1] + "/ready", headers={"Authorization": "Bearer " + sys.argv[2]})
sys.exit(0 if urllib.request.urlopen(req, timeout=2).status == 200 else 1)
EOF
}

# A broker on a free loopback port (never 1883: a developer's own broker may be there).
mqtt_port=$(free_port)
cat >"$TMP/mosquitto.conf" <<EOF
persistence false
log_dest stderr
log_type error
listener $mqtt_port 127.0.0.1
allow_anonymous true
EOF
chmod 644 "$TMP/mosquitto.conf"
"$MOSQUITTO" -c "$TMP/mosquitto.conf" 2>"$TMP/mosquitto.log" &
track $!
wait_port "$mqtt_port" || die "mosquitto did not start: $(cat "$TMP/mosquitto.log")"

# The server: plain HTTP on loopback, one wildcard credential, MQTT to that broker. The
# auth-failure limit is at its maximum so the fuzzer is never throttled: every request it
# sends carries the valid token (ignored_auth sends a few without), so a 429 would only
# hide answers worth checking. Metrics on a second port give an independent tally.
api_port=$(free_port)
metrics_port=$(free_port)
token="fuzz-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
base="http://127.0.0.1:$api_port"
# It inherits this script's environment (a variable exported for the run reaches it).
server_vars "$api_port" "fuzz|$token|*" "$mqtt_port"
env "${SERVER_VARS[@]}" READINESS_REQUIRE_AUTH=true AUTH_FAIL_LIMIT_PER_MIN=10000 \
    METRICS_ADDR="127.0.0.1:$metrics_port" LOG_FORMAT=json LOG_LEVEL=warn \
    "$bin" 2>"$TMP/server.log" &
server_pid=$!
track "$server_pid"
wait_for 30 ready "$base" "$token" || die "the server did not become ready"

log "schemathesis $SCHEMATHESIS_VERSION against $base, seed $seed, at most $max_examples examples per operation"
# Checks: the document's status codes, content types, body schemas and headers, no 5xx,
# invalid input refused, wrong methods answered 405 with Allow, auth enforced.
# Not positive_data_acceptance: two rules of the API cannot be written in JSON Schema
# (alarmTime at most a minute in the past; 10.0 is not an integer for the Go-compatible
# decoder, while JSON Schema's "integer" accepts it), so "schema-valid" data may get 400.
# stateful needs OpenAPI links (the document has none); the other phases cover the
# documented examples, boundary values and negative inputs, and random inputs.
# It runs inside the temp dir (its crash cache, .schemathesis/, stays out of the tree),
# in the background so that a signal reaches the trap at once, not after the run.
# One worker: with two, the coverage phase of GET and DELETE /commands/{commandId} builds
# its path-parameter strategies at the same moment, and Hypothesis describing their filter
# lambdas (ast.parse in two threads) hits a CPython 3.11 race ("SystemError: AST constructor
# recursion depth mismatch"), a runtime error in every run. One worker is about as fast here.
# GET /events is left out: its answer is a stream that stays open by design, so every
# generated request would wait out --request-timeout (tests/events.rs covers it).
document="$(pwd)/docs/openapi.json"
cd "$TMP"
"$venv/bin/schemathesis" --no-color run "$document" \
    --url "$base" \
    --exclude-path /events \
    -H "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance,negative_data_rejection,unsupported_method,allow_header_conformance,missing_required_header,ignored_auth \
    --phases examples,coverage,fuzzing \
    --max-examples "$max_examples" \
    --seed "$seed" \
    --request-timeout 10 \
    --workers 1 \
    --generation-database none \
    --output-sanitize true &
fuzzer_pid=$!
track "$fuzzer_pid"
wait "$fuzzer_pid"
untrack "$fuzzer_pid"

# The server must have survived the whole run; its own tally must show commands
# delivered (202: MQTT really took part) and no 5xx.
kill -0 "$server_pid" 2>/dev/null || die "the server died during the run"
python3 - "http://127.0.0.1:$metrics_port/metrics" <<'EOF'
import re, sys, urllib.request
text = urllib.request.urlopen(sys.argv[1], timeout=5).read().decode()
pattern = re.compile(r'^clock_server_http_requests_total\{route="([^"]*)",method="([^"]*)",status="(\d+)"\} (\d+)$')
rows = sorted(m.groups() for m in map(pattern.match, text.splitlines()) if m)
print("fuzz-api: requests the server answered (route, method, status, count):", file=sys.stderr)
for route, method, status, count in rows:
    print(f"  {route:22} {method:8} {status}  {count}", file=sys.stderr)
accepted = sum(int(c) for _, _, s, c in rows if s == "202")
errors = sum(int(c) for _, _, s, c in rows if s.startswith("5"))
if accepted == 0 or errors:
    sys.exit(f"fuzz-api: expected some 202 and no 5xx, got {accepted} accepted and {errors} server errors")
EOF
log "passed"
