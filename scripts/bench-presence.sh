#!/usr/bin/env bash
# `make bench`, fifth part: presence and held delivery (SPEC 11, issue 24) on loopback,
# against a Mosquitto of its own on a free port (never 1883).
#
# 1. Presence load: a devices file of BENCH_CLOCKS (10000) AWTRIX clocks, each reporting
#    its `stats` every 10 s (examples/mqtt_stats.rs: BENCH_CLOCKS / 10 messages a second,
#    QoS 0, as the firmware does). Per round, side by side: the QoS 1 command rate (wrk,
#    as scripts/bench.sh) of a server with that load and of one without it, in alternating
#    order; and, with the load, the server's CPU for presence alone (10 s without
#    commands) and its RSS growth once every clock has been heard. Targets: RSS growth
#    <= 16 MiB; command rate with the load >= 0.9x the rate without.
# 2. Held delivery: BENCH_QUEUED (1000) messages for one AWTRIX clock that is offline
#    (its retained `stats/device` says so) are held (`queued`); then the clock says
#    `online`. Target: all delivered, in the order accepted, within 2 s.
# The figures are for reading, not asserting.
#
# Variables: BENCH_RUNS (3), BENCH_SECONDS (10), BENCH_CONNECTIONS (64), BENCH_THREADS
# (2), BENCH_CLOCKS (10000; 0 skips phase 1), BENCH_QUEUED (1000; 0 skips phase 2),
# BENCH_CARGO_FLAGS (--no-default-features --features stores), BENCH_BUILD (1), BENCH_KEEP (0), CARGO,
# CARGO_TARGET_DIR, MOSQUITTO.
set -euo pipefail

cd "$(dirname "$0")/.."

CLOCKS=${BENCH_CLOCKS:-10000}
QUEUED=${BENCH_QUEUED:-1000}
MOSQUITTO_SUB=${MOSQUITTO_SUB:-mosquitto_sub}
MOSQUITTO_PUB=${MOSQUITTO_PUB:-mosquitto_pub}
SCRIPT_NAME=bench-presence
# shellcheck source=scripts/bench/server.sh
. scripts/bench/server.sh
command -v "$MOSQUITTO_SUB" >/dev/null 2>&1 || die "mosquitto_sub is missing (mosquitto-clients)"
command -v "$MOSQUITTO_PUB" >/dev/null 2>&1 || die "mosquitto_pub is missing (mosquitto-clients)"
if [ "${BENCH_BUILD:-1}" = 1 ]; then
	# shellcheck disable=SC2086
	$CARGO build --release --locked $CARGO_FLAGS --example mqtt_stats
fi
STATS=$TARGET_DIR/release/examples/mqtt_stats
[ -x "$STATS" ] || die "build first: $STATS"

for i in $(seq 0 $((CLOCKS > 1 ? CLOCKS - 1 : 0))); do
	printf '[devices.awtrix-%d]\nprofile = "awtrix3"\ntopic = "bench/awtrix-%d"\n\n' "$i" "$i"
done >"$TMP/devices.toml"

# metric NAME: one series of the server's /metrics (METRICS_PORT), 0 when absent.
METRICS_PORT=""
metric() {
	curl -fs "http://127.0.0.1:$METRICS_PORT/metrics" | awk -v m="$1" '$1 == m { print $2; found = 1 } END { if (!found) print 0 }'
}
ticks() { awk '{ print $14 + $15 }' "/proc/$SERVER_PID/stat"; }
server() {
	METRICS_PORT=$(free_port)
	start_server "$@" "DEVICES_FILE=$TMP/devices.toml" "METRICS_ADDR=127.0.0.1:$METRICS_PORT"
}
commands() {
	wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" -s scripts/bench/wrk.lua \
		"http://127.0.0.1:$HTTP_PORT" >"$1" 2>&1
	rate "$1"
}

if [ "$CLOCKS" -gt 0 ]; then
	echo "bench-presence: $CLOCKS AWTRIX clocks, stats every 10 s; $CONNS connections at QoS 1, ${DURATION}s x $RUNS rounds"
	: >"$TMP/presence.txt"
	for run in $(seq "$RUNS"); do
		order="quiet loaded"
		[ $((run % 2)) -eq 1 ] || order="loaded quiet"
		for mode in $order; do
			server "$TMP/server-$mode-$run.log"
			# Both servers get the same time after start before the load (the loaded one
			# spends it hearing every clock), so neither is measured while starting up.
			sleep 3
			if [ "$mode" = quiet ]; then
				sleep 20
				r=$(commands "$TMP/wrk-quiet-$run.out")
				echo "quiet $run $r" >>"$TMP/presence.txt"
				printf '  round %d without stats: %7s req/s\n' "$run" "$r"
				stop_server
				continue
			fi
			idle=$(kib VmRSS)
			"$STATS" "mqtt://127.0.0.1:$MQTT_PORT" 'bench/awtrix-{i}/stats' "$CLOCKS" 10 \
				$((12 + 10 + DURATION + 5)) >"$TMP/stats-$run.out" &
			STATS_PID=$!
			track "$STATS_PID"
			# Every clock heard once (a period and a bit), then 10 s of presence alone.
			for _ in $(seq 200); do
				[ "$(metric 'clock_server_devices{presence="online"}')" -ge "$CLOCKS" ] && break
				sleep 0.1
			done
			online=$(metric 'clock_server_devices{presence="online"}')
			t0=$(ticks)
			sleep 10
			t1=$(ticks)
			grown=$(($(kib VmRSS) - idle))
			r=$(commands "$TMP/wrk-loaded-$run.out")
			peak=$(kib VmHWM)
			stop "$STATS_PID"
			stop_server
			cpu=$(awk -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", t / hz / 10 * 100 }')
			echo "loaded $run $r $grown $cpu $online $peak" >>"$TMP/presence.txt"
			printf '  round %d with stats:    %7s req/s; %s/%s clocks online; presence alone %s%% of a core; RSS +%.1f MiB (peak %.1f MiB)\n' \
				"$run" "$r" "$online" "$CLOCKS" "$cpu" "$(awk -v k="$grown" 'BEGIN { print k / 1024 }')" \
				"$(awk -v k="$peak" 'BEGIN { print k / 1024 }')"
		done
	done
	col() { awk -v m="$1" -v c="$2" '$1 == m { print $c }' "$TMP/presence.txt"; }
	awk -v q="$(col quiet 3 | median)" -v qs="$(col quiet 3 | spread)" \
		-v l="$(col loaded 3 | median)" -v ls="$(col loaded 3 | spread)" \
		-v g="$(col loaded 4 | median)" -v gs="$(col loaded 4 | spread)" \
		-v c="$(col loaded 5 | median)" 'BEGIN {
		printf "bench-presence: medians (spread): without %d req/s (%s), with %d req/s (%s): %.3fx (target >= 0.9: %s)\n",
			q, qs, l, ls, l / q, (l / q >= 0.9 ? "PASS" : "MISS")
		printf "bench-presence: RSS growth %.1f MiB (spread %s KiB; target <= 16: %s); presence alone %.1f%% of a core\n",
			g / 1024, gs, (g <= 16384 ? "PASS" : "MISS"), c
	}'
fi

if [ "$QUEUED" -gt 0 ]; then
	server "$TMP/server-queued.log" STATE_STORE=memory
	# awtrix-0 says it is gone (its Last Will, retained), and the server hears it.
	"$MOSQUITTO_PUB" -h 127.0.0.1 -p "$MQTT_PORT" -r -t bench/awtrix-0/stats/device -m offline
	for _ in $(seq 100); do
		[ "$(metric 'clock_server_devices{presence="offline"}')" -ge 1 ] && break
		sleep 0.1
	done
	sub_out=$TMP/sub-queued.txt
	"$MOSQUITTO_SUB" -h 127.0.0.1 -p "$MQTT_PORT" -q 1 -t 'bench/awtrix-0/notify' -F '%U %p' >"$sub_out" &
	SUB_PID=$!
	track "$SUB_PID"
	# One connection: accepted in the order posted.
	result=$(python3 scripts/bench/post_alarms.py "http://127.0.0.1:$HTTP_PORT" bench-token "$QUEUED" message 1 1) ||
		die "posting failed: $result"
	echo "bench-presence: $result (awtrix-0 offline: every one should be queued)"
	back=$(date +%s.%N)
	"$MOSQUITTO_PUB" -h 127.0.0.1 -p "$MQTT_PORT" -r -t bench/awtrix-0/stats/device -m online
	for _ in $(seq 300); do
		[ "$(wc -l <"$sub_out")" -ge "$QUEUED" ] && break
		sleep 0.1
	done
	stop "$SUB_PID"
	stop_server
	awk -v back="$back" -v n="$QUEUED" '
		{ match($0, /"text":"m[0-9]+"/); i = substr($0, RSTART + 9, RLENGTH - 10) + 0
		  if (NR > 1 && i < last) disorder++; last = i; at = $1 - back }
		END {
			printf "bench-presence: %d/%d delivered after the clock came back, the last %.3f s after; out of order %d (target: all in order within 2 s: %s)\n",
				NR, n, at, disorder + 0, (NR == n && at <= 2 && disorder == 0 ? "PASS" : "MISS")
		}' "$sub_out"
fi
