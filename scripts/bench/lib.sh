# Sourced, not run, by every script that starts its own processes (scripts/bench*.sh and
# scripts/fuzz-api.sh): the variables the bench scripts share, dying with a message, a
# temp dir and the processes a script starts cleaned up however it ends, free ports, and
# the settings every script's server starts with.
# Set SCRIPT_NAME first: it prefixes the messages and names the temp dir.
# scripts/bench/server.sh adds one Mosquitto and one server at a time on top of this.

# --- the variables every bench script takes (their headers say which of them they use) ---
RUNS=${BENCH_RUNS:-3}
DURATION=${BENCH_SECONDS:-10}
CONNS=${BENCH_CONNECTIONS:-64}
THREADS=${BENCH_THREADS:-2}
CARGO=${CARGO:-cargo}
CARGO_FLAGS=${BENCH_CARGO_FLAGS---no-default-features --features stores}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
if [ -z "${MOSQUITTO:-}" ]; then
	for candidate in /usr/sbin/mosquitto /usr/local/sbin/mosquitto /usr/bin/mosquitto; do
		if [ -x "$candidate" ]; then
			MOSQUITTO=$candidate
			break
		fi
	done
	MOSQUITTO=${MOSQUITTO:-/usr/sbin/mosquitto}
fi

die() {
	echo "${SCRIPT_NAME:-bench}: $*" >&2
	exit 1
}

# --- processes and a temp dir, cleaned up on every exit ---------------------------------
TMP=""
PIDS=""
track() { PIDS="$PIDS $1"; }
untrack() { PIDS=$(echo "$PIDS" | tr ' ' '\n' | grep -vx "$1" | tr '\n' ' ' || true); }
# Whether PID is still running (a zombie is not: it only waits to be reaped).
running() {
	local state
	state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
	[ -n "$state" ] && [ "${state#Z}" = "$state" ]
}
# Ends one of our processes: TERM, asked again for up to 5 s (a process signalled right
# after `&` may get it before its exec, and bash drops it then), then KILL; then reaps it.
end() {
	kill -TERM "$1" 2>/dev/null || true
	for _ in $(seq 50); do
		running "$1" || break
		sleep 0.1
		kill -TERM "$1" 2>/dev/null || true
	done
	kill -KILL "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}
# Stops one of our processes by its pid and waits for it.
stop() {
	end "$1"
	untrack "$1"
}
# Kills every tracked process, runs the script's `on_failure` (if it defines one) when it
# fails, then removes the temp dir (BENCH_KEEP=1 keeps it) and exits with the same status.
cleanup() {
	local status=$?
	for pid in $PIDS; do kill "$pid" 2>/dev/null || true; done
	for pid in $PIDS; do end "$pid"; done
	if [ "$status" -ne 0 ] && declare -F on_failure >/dev/null; then on_failure || true; fi
	if [ -n "$TMP" ]; then
		if [ "${BENCH_KEEP:-0}" = 1 ]; then
			echo "${SCRIPT_NAME:-bench}: logs kept in $TMP"
		else
			rm -rf "$TMP"
		fi
	fi
	exit "$status"
}
# Creates TMP and sets the traps. World-readable: Debian's mosquitto drops its privileges
# and must still read its configuration there.
scratch() {
	TMP=$(mktemp -d "/tmp/${SCRIPT_NAME:-bench}.XXXXXX")
	chmod 755 "$TMP"
	trap cleanup EXIT
	trap 'exit 130' INT TERM
}

# --- ports --------------------------------------------------------------------------------
# A 127.0.0.1 port below the kernel's ephemeral range (which wrk's and everybody's outgoing
# connections use) that no TCP socket holds; never 1883.
EPHEMERAL_LOW=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
free_port() {
	local p span=$((EPHEMERAL_LOW > 12000 ? EPHEMERAL_LOW - 10000 : 20000))
	if ! command -v ss >/dev/null 2>&1; then
		# No iproute2: a port the kernel hands out (in the ephemeral range, but free).
		python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
		return
	fi
	for _ in $(seq 200); do
		p=$((10000 + RANDOM % span))
		if ! ss -Htan "sport = :$p" | grep -q .; then
			echo "$p"
			return
		fi
	done
	die "no free port found"
}
# Waits up to 10 s until something accepts connections on 127.0.0.1:$1.
wait_port() {
	for _ in $(seq 100); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	return 1
}

# --- the server's settings ----------------------------------------------------------------
# server_vars HTTP_PORT CREDENTIAL MQTT_PORT: sets the array SERVER_VARS to what every
# script's server shares: plain HTTP on 127.0.0.1:HTTP_PORT, the one credential CREDENTIAL
# (`name|token|scopes`), and MQTT only, to the broker on 127.0.0.1:MQTT_PORT without TLS.
# A script adds its own after them: env [-i PATH="$PATH"] "${SERVER_VARS[@]}" VAR=… BIN.
server_vars() {
	# shellcheck disable=SC2034 # read by the scripts that source this file
	SERVER_VARS=(
		"HTTP_ADDR=127.0.0.1:$1"
		REQUIRE_TLS=false
		"API_AUTH_CREDENTIALS=$2"
		ENABLED_SENDERS=mqtt
		"MQTT_BROKER_URL=mqtt://127.0.0.1:$3"
		ALLOW_INSECURE_MQTT=true
	)
}
