#!/usr/bin/env bash
# `make bench`, fourth part: gateway-held alarms (SPEC 8.1) on loopback, against a
# Mosquitto of its own on a free port (never 1883), with BENCH_DEVICES AWTRIX clocks in a
# devices file.
#
# 1. A burst: BENCH_BURST (10000) alarms, all due in the same second T, are posted well
#    before T; a subscriber (mosquitto_sub, receive times to the nanosecond) records when
#    each notification arrives. Target: every one published within 2 s of T. Runs with
#    STATE_STORE=memory and with file:<temp dir>. Then the same with BENCH_BURST daily
#    schedules (SPEC 12) whose occurrence is T (issue 25).
# 2. Pending: BENCH_PENDING (100000) alarms an hour ahead, STATE_STORE=memory with
#    STATE_MAX_COMMANDS=100000 (the default) and STATE_MAX_BYTES=48 MiB (the default 32 MiB
#    holds about 75,000 alarms of this size: docs/store.md); the server's RSS (VmRSS, peak
#    VmHWM) must stay within 64 MiB (scripts/bench-store.sh's target for a full memory
#    store).
# The figures are for reading, not asserting.
#
# 3. Stored schedules: BENCH_SCHEDULES (100000) daily schedules an hour ahead in one
#    memory server; its RSS against the same 64 MiB.
# Variables: BENCH_BURST (10000), BENCH_PENDING (100000; 0 skips it), BENCH_SCHEDULES
# (100000; 0 skips it), BENCH_KINDS ("alarms schedules": the bursts), BENCH_DEVICES (100),
# BENCH_POSTERS (8 connections), BENCH_STORES ("memory file"; add redis for a
# redis-server of its own), BENCH_CARGO_FLAGS
# (--no-default-features --features stores), BENCH_BUILD (1), BENCH_KEEP (0), CARGO, CARGO_TARGET_DIR,
# MOSQUITTO.
set -euo pipefail

cd "$(dirname "$0")/.."

BURST=${BENCH_BURST:-10000}
PENDING=${BENCH_PENDING:-100000}
DEVICES=${BENCH_DEVICES:-100}
POSTERS=${BENCH_POSTERS:-8}
STORES=${BENCH_STORES:-memory file}
KINDS=${BENCH_KINDS:-alarms schedules}
SCHEDULES=${BENCH_SCHEDULES:-100000}
MOSQUITTO_SUB=${MOSQUITTO_SUB:-mosquitto_sub}
SCRIPT_NAME=bench-alarms
# shellcheck source=scripts/bench/server.sh
. scripts/bench/server.sh
command -v "$MOSQUITTO_SUB" >/dev/null 2>&1 || die "mosquitto_sub is missing (mosquitto-clients)"

for i in $(seq 0 $((DEVICES - 1))); do
	printf '[devices.awtrix-%d]\nprofile = "awtrix3"\ntopic = "bench/awtrix-%d"\n\n' "$i" "$i"
done >"$TMP/devices.toml"
post() { python3 scripts/bench/post_alarms.py "http://127.0.0.1:$HTTP_PORT" bench-token "$@"; }

# burst KIND STORE: BURST alarms (KIND=alarms) or daily schedules (KIND=schedules) whose
# time is the same whole second T, posted well before T; then when each notification
# arrived, against T.
burst() {
	local kind=$1 store=$2 store_value probe per_sec lead T at sub_out
	case $store in
	file) store_value="file:$TMP/state-$kind.db" ;;
	redis)
		# A redis-server of its own on a free loopback port, no persistence.
		if [ -z "${REDIS_PORT:-}" ]; then
			command -v "${REDIS_SERVER:-redis-server}" >/dev/null 2>&1 || die "redis-server is missing"
			REDIS_PORT=$(free_port)
			"${REDIS_SERVER:-redis-server}" --bind 127.0.0.1 --port "$REDIS_PORT" --save '' \
				--appendonly no --dir "$TMP" --loglevel warning >"$TMP/redis.log" 2>&1 &
			track $!
			wait_port "$REDIS_PORT" || die "redis-server did not start"
		fi
		store_value="redis://127.0.0.1:$REDIS_PORT/$((${#kind} % 16))"
		;;
	*) store_value=$store ;;
	esac
	start_server "$TMP/server-$kind-$store.log" "STATE_STORE=$store_value" \
		"DEVICES_FILE=$TMP/devices.toml" MQTT_PUBLISH_TIMEOUT_MS=10000 \
		SCHEDULES_MAX_PER_DEVICE=1000
	sub_out=$TMP/sub-$kind-$store.txt
	"$MOSQUITTO_SUB" -h 127.0.0.1 -p "$MQTT_PORT" -q 1 -t 'bench/+/notify' -F '%U %t' >"$sub_out" &
	SUB_PID=$!
	track "$SUB_PID"
	# T: a whole second far enough ahead for the posts (measured, not guessed: a first
	# small batch of alarms an hour ahead times the server).
	probe=$(post 200 "$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)" "$DEVICES" "$POSTERS")
	per_sec=$(echo "$probe" | awk -F'[= ]' '{print int($4 / $6)}')
	lead=$((BURST / (per_sec > 0 ? per_sec : 1) * 2 + 5))
	T=$(($(date +%s) + lead))
	case $kind in
	alarms) at=$(date -u -d "@$T" +%Y-%m-%dT%H:%M:%SZ) ;;
	schedules) at="daily@$(date -u -d "@$T" +%H:%M:%S)" ;;
	esac
	echo "bench-alarms [$kind, $store]: posting $BURST $kind due at $at (in ${lead}s; ~$per_sec alarms/s accepted)"
	result=$(post "$BURST" "$at" "$DEVICES" "$POSTERS") || die "posting failed: $result"
	echo "  $result"
	[ "$(date +%s)" -lt "$T" ] || die "the posts ran past T; raise the lead"
	# Wait for all of them, at most T + 30 s.
	for _ in $(seq 300); do
		[ "$(wc -l <"$sub_out")" -ge "$BURST" ] && break
		[ "$(date +%s)" -gt $((T + 30)) ] && break
		sleep 0.1
	done
	stop "$SUB_PID"
	awk -v t="$T" '{ printf "%.6f\n", $1 - t }' "$sub_out" | sort -n >"$TMP/lat-$kind-$store.txt"
	awk -v n="$BURST" -v what="$kind, $store" '
		{ lat[NR] = $1; if ($1 < 0) early++ }
		END {
			if (NR == 0) { printf "  [%s] nothing received\n", what; exit }
			p50 = int((NR + 1) / 2); p99 = int(NR * 0.99); if (p99 < 1) p99 = 1
			printf "  [%s] received %d/%d; after T: first %.3f s, median %.3f s, p99 %.3f s, last %.3f s; early %d (target: all within 2 s: %s)\n",
				what, NR, n, lat[1], lat[p50], lat[p99], lat[NR], early + 0,
				(NR == n && lat[NR] <= 2 && early == 0 ? "PASS" : "MISS")
		}' "$TMP/lat-$kind-$store.txt"
	awk -v p="$(kib VmHWM)" -v what="$kind, $store" 'BEGIN { printf "  [%s] server peak RSS %.1f MiB\n", what, p / 1024 }'
	stop_server
}

for kind in $KINDS; do
	for store in $STORES; do
		burst "$kind" "$store"
	done
done

if [ "$PENDING" -gt 0 ]; then
	start_server "$TMP/server-pending.log" STATE_STORE=memory "DEVICES_FILE=$TMP/devices.toml" \
		STATE_MAX_BYTES=$((48 << 20))
	before=$(kib VmRSS)
	at=$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)
	echo "bench-alarms: posting $PENDING alarms due at $at (STATE_STORE=memory)"
	result=$(post "$PENDING" "$at" "$DEVICES" "$POSTERS") || die "posting failed: $result"
	echo "  $result"
	sleep 2 # a few scheduler ticks with 100,000 pending
	awk -v b="$before" -v r="$(kib VmRSS)" -v p="$(kib VmHWM)" -v n="$PENDING" 'BEGIN {
		printf "bench-alarms: %d pending alarms: RSS %.1f MiB (idle %.1f), peak %.1f MiB (target <= 64: %s)\n",
			n, r / 1024, b / 1024, p / 1024, (p <= 65536 ? "PASS" : "MISS")
	}'
	cpu_before=$(awk '{print $14 + $15}' "/proc/$SERVER_PID/stat")
	sleep 5
	cpu_after=$(awk '{print $14 + $15}' "/proc/$SERVER_PID/stat")
	awk -v t=$((cpu_after - cpu_before)) -v hz="$(getconf CLK_TCK)" 'BEGIN {
		printf "bench-alarms: idle with them pending: %.1f%% of one core (scheduler ticks)\n", t / hz / 5 * 100
	}'
	stop_server
fi

if [ "$SCHEDULES" -gt 0 ]; then
	# 100 devices x 1000 schedules each (SCHEDULES_MAX_PER_DEVICE's maximum).
	devices=$(((SCHEDULES + 999) / 1000))
	[ "$devices" -le "$DEVICES" ] || die "BENCH_SCHEDULES needs $devices devices; raise BENCH_DEVICES"
	start_server "$TMP/server-schedules.log" STATE_STORE=memory "DEVICES_FILE=$TMP/devices.toml" \
		SCHEDULES_MAX_PER_DEVICE=1000
	before=$(kib VmRSS)
	at="daily@$(date -u -d '+1 hour' +%H:%M:%S)"
	echo "bench-alarms: storing $SCHEDULES schedules ($at, STATE_STORE=memory)"
	result=$(post "$SCHEDULES" "$at" "$devices" "$POSTERS") || die "posting failed: $result"
	echo "  $result"
	awk -v b="$before" -v r="$(kib VmRSS)" -v p="$(kib VmHWM)" -v n="$SCHEDULES" 'BEGIN {
		printf "bench-alarms: %d schedules stored: RSS %.1f MiB (idle %.1f), peak %.1f MiB, %.0f bytes each (target <= 64: %s)\n",
			n, r / 1024, b / 1024, p / 1024, (r - b) * 1024 / n, (p <= 65536 ? "PASS" : "MISS")
	}'
	stop_server
fi
