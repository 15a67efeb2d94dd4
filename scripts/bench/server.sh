# Sourced, not run, by scripts/bench-attacks.sh, bench-store.sh and bench-alarms.sh (after
# they set SCRIPT_NAME and their own variables): scripts/bench/lib.sh, then the tools
# checked, the release server built, a temp dir and a Mosquitto of its own on a free port;
# start_server/stop_server run one server at a time against it, and the figures' helpers.

# shellcheck source=scripts/bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v wrk >/dev/null 2>&1 || die "wrk is missing (scripts/bench.sh installs it)"
[ -x "$MOSQUITTO" ] || die "mosquitto is missing"
if [ "${BENCH_BUILD:-1}" = 1 ]; then
	# shellcheck disable=SC2086
	$CARGO build --release --locked $CARGO_FLAGS --bin clock-server
fi
SERVER=$TARGET_DIR/release/clock-server
[ -x "$SERVER" ] || die "build first: $SERVER"

scratch
MQTT_PORT=$(free_port)
# max_queued_messages 0: a subscriber that falls behind for a moment (10,000 alarms in one
# second) must not lose QoS 1 messages in the broker's default queue of 1000, or the
# count would blame the server.
printf 'persistence false\nmax_queued_messages 0\nlistener %s 127.0.0.1\nallow_anonymous true\n' "$MQTT_PORT" >"$TMP/mosquitto.conf"
"$MOSQUITTO" -c "$TMP/mosquitto.conf" 2>"$TMP/mosquitto.log" &
track $!
wait_port "$MQTT_PORT" || die "Mosquitto did not start"

HTTP_PORT=""
SERVER_PID=""
# start_server LOG [VAR=value ...]: a fresh server (QoS 1, MQTT only) with extra variables.
start_server() {
	local log=$1
	shift
	HTTP_PORT=$(free_port)
	server_vars "$HTTP_PORT" "bench|bench-token|*" "$MQTT_PORT"
	env -i PATH="$PATH" "${SERVER_VARS[@]}" MQTT_QOS=1 LOG_LEVEL=info "$@" "$SERVER" 2>"$log" &
	SERVER_PID=$!
	track "$SERVER_PID"
	for _ in $(seq 100); do
		if curl -fs -H "Authorization: Bearer bench-token" "http://127.0.0.1:$HTTP_PORT/ready" >/dev/null; then return 0; fi
		sleep 0.1
	done
	die "server did not become ready: $(tail -3 "$log")"
}
stop_server() {
	stop "$SERVER_PID"
}
# kib FIELD: a field of the server's /proc status in KiB (VmRSS, VmHWM).
kib() { awk '/^'"$1"':/ {print $2}' "/proc/$SERVER_PID/status"; }
# field FILE NAME: NAME=<number> from a wrk script's BENCH line.
field() { sed -n "s/.*$2=\([0-9]*\).*/\1/p" "$1" | head -1; }
# rate FILE: requests per second from a wrk script's BENCH line.
rate() { awk -v r="$(field "$1" requests)" -v d="$(field "$1" duration_us)" 'BEGIN {printf "%.0f", r / (d / 1e6)}'; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
spread() { sort -n | awk 'NR==1 {lo=$1} {hi=$1} END {print lo "-" hi}'; }
