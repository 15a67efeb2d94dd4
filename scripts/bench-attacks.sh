#!/usr/bin/env bash
# `make bench`, second part: the attacks of SPEC 10 against the release server, side by side
# in one run on loopback (a Mosquitto of its own on a free port, never 1883).
#
# 1. Token floods: BENCH_CONNECTIONS/2 legitimate keep-alive clients post commands (QoS 1)
#    while as many attacking connections flood the API with wrong tokens:
#      none   - no flood (the yardstick);
#      fixed  - one fixed wrong token (one throttle key: soon 429s);
#      random - a new random wrong token on every request (a new throttle key each time).
#    The rounds are interleaved (none, fixed, random; BENCH_RUNS times) and the medians
#    reported with their spread. Target: the legitimate rate under the random flood is at
#    least 0.6 x the rate under the fixed flood.
# 2. Endless headers: BENCH_HEADER_CONNS (2000) connections each send a request head that
#    never ends. Reported: the server's RSS before, its peak (VmHWM) and after they are gone.
#    Target: the peak is less than 64 MiB above the RSS before.
# The figures are for reading, not asserting.
#
# Variables: BENCH_RUNS (3), BENCH_SECONDS (10), BENCH_CONNECTIONS (64), BENCH_HEADER_CONNS
# (2000), BENCH_CARGO_FLAGS (--no-default-features --features stores), BENCH_BUILD (1), BENCH_KEEP (0),
# CARGO, CARGO_TARGET_DIR, MOSQUITTO.
set -euo pipefail

cd "$(dirname "$0")/.."

HEADER_CONNS=${BENCH_HEADER_CONNS:-2000}
SCRIPT_NAME=bench-attacks
# shellcheck source=scripts/bench/server.sh
. scripts/bench/server.sh
HALF=$((CONNS / 2))

# --- 1. token floods --------------------------------------------------------------------
start_server "$TMP/server-floods.log" STATE_STORE=none
echo "bench-attacks: token floods, $HALF legitimate + $HALF attacking connections, ${DURATION}s x $RUNS rounds"
for run in $(seq "$RUNS"); do
	for mode in none fixed random; do
		flood=""
		if [ "$mode" != none ]; then
			FLOOD_MODE=$mode wrk -t1 -c"$HALF" -d"$((DURATION + 1))s" -s scripts/bench/flood.lua \
				"http://127.0.0.1:$HTTP_PORT" >"$TMP/flood-$mode-$run.out" 2>&1 &
			flood=$!
			sleep 0.5
		fi
		wrk -t1 -c"$HALF" -d"${DURATION}s" -s scripts/bench/wrk.lua \
			"http://127.0.0.1:$HTTP_PORT" >"$TMP/legit-$mode-$run.out" 2>&1
		[ -z "$flood" ] || wait "$flood"
		legit=$TMP/legit-$mode-$run.out
		legit_rate=$(rate "$legit")
		p99=$(field "$legit" p99_us)
		frate=-
		if [ -n "$flood" ]; then
			f=$TMP/flood-$mode-$run.out
			frate=$(rate "$f")
		fi
		echo "$mode $run $legit_rate $p99 $frate" >>"$TMP/floods.txt"
		printf '  round %d %-6s legitimate %7s req/s  p99 %6.1f ms   flood %7s req/s\n' \
			"$run" "$mode" "$legit_rate" "$(awk -v p="$p99" 'BEGIN {print p / 1000}')" "$frate"
	done
done
stop_server

echo "bench-attacks: medians (spread)"
for mode in none fixed random; do
	r=$(awk -v m="$mode" '$1 == m {print $3}' "$TMP/floods.txt")
	p=$(awk -v m="$mode" '$1 == m {print $4 / 1000}' "$TMP/floods.txt")
	f=$(awk -v m="$mode" '$1 == m {print $5}' "$TMP/floods.txt")
	printf '  %-6s legitimate %s req/s (%s)  p99 %s ms (%s)  flood %s req/s\n' "$mode" \
		"$(echo "$r" | median)" "$(echo "$r" | spread)" "$(echo "$p" | median)" "$(echo "$p" | spread)" \
		"$(echo "$f" | median)"
done
fixed=$(awk '$1 == "fixed" {print $3}' "$TMP/floods.txt" | median)
random=$(awk '$1 == "random" {print $3}' "$TMP/floods.txt" | median)
awk -v f="$fixed" -v r="$random" 'BEGIN {
	ratio = r / f
	printf "  legitimate rate under the random-token flood / under the fixed-token flood: %.3f (target >= 0.60: %s)\n", ratio, (ratio >= 0.6 ? "PASS" : "MISS")
}'

# --- 2. endless headers -----------------------------------------------------------------
start_server "$TMP/server-headers.log" STATE_STORE=none
before=$(kib VmRSS)
exec 4> >(python3 scripts/bench/endless_headers.py "$HTTP_PORT" "$HEADER_CONNS" 30 >"$TMP/headers.out")
HOLDER=$!
for _ in $(seq 400); do
	grep -q FLOOD "$TMP/headers.out" 2>/dev/null && break
	sleep 0.1
done
during=$(kib VmRSS)
peak=$(kib VmHWM)
exec 4>&-
wait "$HOLDER" 2>/dev/null || true
after=$during
for _ in $(seq 50); do
	after=$(kib VmRSS)
	[ "$after" -le $((before + 8192)) ] && break
	sleep 0.1
done
echo "bench-attacks: $HEADER_CONNS connections with endless headers: $(cat "$TMP/headers.out")"
awk -v b="$before" -v d="$during" -v p="$peak" -v a="$after" 'BEGIN {
	printf "  server RSS before %.1f MiB, peak %.1f MiB (+%.1f MiB; target < +64 MiB: %s), after the flood %.1f MiB, once they are gone %.1f MiB\n",
		b / 1024, p / 1024, (p - b) / 1024, ((p - b) < 65536 ? "PASS" : "MISS"), d / 1024, a / 1024
}'
stop_server
