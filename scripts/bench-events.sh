#!/usr/bin/env bash
# `make bench`, fifth part: live event streams (SPEC 13.1, issue 26) on loopback, against a
# Mosquitto of its own on a free port (never 1883).
#
# BENCH_CONNECTIONS keep-alive wrk clients post display messages (QoS 1, STATE_STORE=memory)
# to the devices bench-0 ... bench-<BENCH_DEVICES - 1> in turn, BENCH_SECONDS per phase, each
# phase on a fresh server, the phases interleaved in BENCH_RUNS rounds:
#   none    no event stream open: the baseline;
#   device  BENCH_STREAMS streams, stream i following bench-<i mod BENCH_DEVICES>
#           (`?deviceId=...&types=command`): a console per clock;
#   all     BENCH_STREAMS streams taking every command event (`?types=command`): the
#           worst case, every event written BENCH_STREAMS times: the streams slow the
#           commands down, and those that fall 1024 events behind end with `overflow`.
# The streams are held by examples/event_streams.rs (one process, one thread), opened and
# answered 200 before the load starts; after it, they are read until quiet.
# The CPU the server and the stream client used during the load is printed with each
# round: a client at 100% of a core is the bottleneck, not the server.
# Reported per phase: the command rate and p99, the rate's ratio to `none` (target of
# issue 26: >= 0.80 with 1,000 streams), the server's RSS idle, with the streams open and
# idle (and per idle stream), and at its peak under load (VmHWM); and whether every stream
# got every event: the `sent` events the streams received against the 202s (each accepted
# command becomes one `sent` event on each stream that follows its device; requests still
# in flight when wrk stops may add a few), the streams that overflowed (fell more than 1024
# events behind and were ended, SPEC 13.1), and in `all` the streams that got fewer than
# the 202s. And the time from a device's acknowledgement to its `succeeded` event on the
# streams (p50, p99): the stream client acknowledges, over MQTT as a device does, the newest
# command stream 0 saw `sent`, every 50 ms of the load. The stream client shares the machine with the server, the broker and wrk:
# its CPU comes off the rate too. The figures are for reading, not asserting.
#
# Variables: BENCH_STREAMS (1000), BENCH_DEVICES (BENCH_STREAMS; must divide it),
# BENCH_EVENT_PHASES ("none device all"), BENCH_RUNS (3), BENCH_SECONDS (10),
# BENCH_CONNECTIONS (64), BENCH_THREADS (2), BENCH_CARGO_FLAGS (--no-default-features --features stores),
# BENCH_BUILD (1), BENCH_KEEP (0), CARGO, CARGO_TARGET_DIR, MOSQUITTO.
set -euo pipefail

cd "$(dirname "$0")/.."

STREAMS=${BENCH_STREAMS:-1000}
DEVICES=${BENCH_DEVICES:-$STREAMS}
PHASES=${BENCH_EVENT_PHASES:-none device all}
SCRIPT_NAME=bench-events
case "$STREAMS $DEVICES" in
*[!0-9\ ]* | "0 "* | *" 0") echo "bench-events: BENCH_STREAMS and BENCH_DEVICES must be whole numbers above 0" >&2 && exit 1 ;;
esac
if [ $((STREAMS % DEVICES)) -ne 0 ]; then
	echo "bench-events: BENCH_DEVICES ($DEVICES) must divide BENCH_STREAMS ($STREAMS), so that every device has as many streams" >&2
	exit 1
fi
# shellcheck source=scripts/bench/server.sh
. scripts/bench/server.sh
if [ "${BENCH_BUILD:-1}" = 1 ]; then
	# shellcheck disable=SC2086
	$CARGO build --release --locked $CARGO_FLAGS --example event_streams
fi
STREAM_CLIENT=$TARGET_DIR/release/examples/event_streams
[ -x "$STREAM_CLIENT" ] || die "build first: $STREAM_CLIENT"

# The streams and wrk's connections on top of the server's own descriptors.
files=$(ulimit -n)
if [ "$files" != unlimited ] && [ "$files" -lt $((STREAMS + CONNS + 256)) ]; then
	ulimit -n $((STREAMS + CONNS + 256)) ||
		die "the open files limit ($files) is too low for $STREAMS streams: raise it (ulimit -n)"
fi
MAX_STREAMS=$((STREAMS > 1000 ? STREAMS : 1000))
PER_DEVICE=$((STREAMS / DEVICES))
RESULTS=$TMP/results.txt
: >"$RESULTS"

# ticks PID: utime+stime of a running process (0 once it is gone, or for pid 0).
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# get NAME: NAME=<number> from the stream client's summary.
summary=""
get() { echo "$summary" | tr ' ' '\n' | sed -n "s/^$1=//p"; }

# open_streams PHASE RUN: opens the streams (CLIENT), waits until all answered 200.
CLIENT=""
open_streams() {
	local out=$TMP/streams-$1-$2.out
	BENCH_STREAMS_DETAIL=$TMP/streams-$1-$2.txt BENCH_ACK_BROKER=127.0.0.1:$MQTT_PORT \
		"$STREAM_CLIENT" \
		"http://127.0.0.1:$HTTP_PORT" bench-token "$STREAMS" "$1" "$DEVICES" \
		>"$out" 2>"$TMP/streams-$1-$2.err" &
	CLIENT=$!
	track "$CLIENT"
	for _ in $(seq 900); do
		grep -q '^ready ' "$out" && return 0
		kill -0 "$CLIENT" 2>/dev/null || die "the stream client stopped: $(tail -3 "$TMP/streams-$1-$2.err")"
		sleep 0.1
	done
	die "the $STREAMS streams did not open within 90 s"
}
# close_streams PHASE RUN: tells the client to drain and report (its STREAMS line).
close_streams() {
	kill -USR1 "$CLIENT"
	wait "$CLIENT" || die "the stream client failed: $(tail -3 "$TMP/streams-$1-$2.err")"
	untrack "$CLIENT"
}

echo "bench-events: $STREAMS streams over $DEVICES devices, $CONNS connections at QoS 1, ${DURATION}s x $RUNS rounds, phases: $PHASES"
for run in $(seq "$RUNS"); do
	for phase in $PHASES; do
		start_server "$TMP/server-$phase-$run.log" STATE_STORE=memory "EVENTS_MAX_STREAMS=$MAX_STREAMS"
		idle=$(kib VmRSS)
		opened=$idle
		seconds=0
		if [ "$phase" != none ]; then
			open_streams "$phase" "$run"
			opened=$(kib VmRSS)
			seconds=$(sed -n 's/^ready .*seconds=\([0-9.]*\).*/\1/p' "$TMP/streams-$phase-$run.out")
		fi
		out=$TMP/wrk-$phase-$run.out
		s0=$(ticks "$SERVER_PID") c0=$(ticks "${CLIENT:-0}")
		BENCH_DEVICES=$DEVICES wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" -s scripts/bench/wrk.lua \
			"http://127.0.0.1:$HTTP_PORT" >"$out" 2>&1 || die "wrk failed: $(cat "$out")"
		grep -q '^BENCH ' "$out" || die "no result from wrk: $(cat "$out")"
		peak=$(kib VmHWM)
		cpu=$(awk -v s=$(($(ticks "$SERVER_PID") - s0)) -v c=$(($(ticks "${CLIENT:-0}") - c0)) \
			-v hz="$(getconf CLK_TCK)" -v d="$DURATION" 'BEGIN {printf "server %.0f%%, stream client %.0f%%", 100 * s / hz / d, 100 * c / hz / d}')
		accepted=$(($(field "$out" requests) - $(field "$out" status_errors)))
		summary="overflowed=0 ended=0 events=0 sent=0 min_sent=0 max_sent=0 ack_p50_ms=- ack_p99_ms=-"
		short=0
		expected=0
		if [ "$phase" != none ]; then
			close_streams "$phase" "$run"
			summary=$(sed -n 's/^STREAMS //p' "$TMP/streams-$phase-$run.out")
			[ -n "$summary" ] || die "no result from the stream client: $(tail -3 "$TMP/streams-$phase-$run.err")"
			if [ "$phase" = all ]; then
				expected=$((accepted * STREAMS))
				short=$(awk -v a="$accepted" '$3 < a {n++} END {print n + 0}' "$TMP/streams-$phase-$run.txt")
			else
				expected=$((accepted * PER_DEVICE))
			fi
		fi
		stop_server
		CLIENT=""
		sent=$(get sent)
		echo "$phase $run $(rate "$out") $(field "$out" p99_us) $(field "$out" status_errors) $idle $opened $peak" \
			"$(get overflowed) $(get ended) $((sent - expected)) $short $seconds $(get ack_p50_ms) $(get ack_p99_ms)" >>"$RESULTS"
		printf '  round %d %-6s %7s req/s  p99 %6.1f ms  non-2xx %s  RSS idle %.1f / streams open %.1f / peak %.1f MiB' \
			"$run" "$phase" "$(rate "$out")" "$(awk -v p="$(field "$out" p99_us)" 'BEGIN {print p / 1000}')" \
			"$(field "$out" status_errors)" "$(awk -v k="$idle" 'BEGIN {print k / 1024}')" \
			"$(awk -v k="$opened" 'BEGIN {print k / 1024}')" "$(awk -v k="$peak" 'BEGIN {print k / 1024}')"
		printf '\n          CPU during the load (of one core): %s' "$cpu"
		if [ "$phase" != none ]; then
			printf '\n          streams opened in %ss; %s' "$seconds" "$summary"
			printf '; sent events - expected (%d x %d) = %d' "$accepted" "$((expected / (accepted > 0 ? accepted : 1)))" "$((sent - expected))"
			[ "$phase" != all ] || printf '; streams short of the 202s: %d' "$short"
		fi
		printf '\n'
	done
done

# --- medians over the rounds ----------------------------------------------------------------
col() { awk -v p="$1" -v c="$2" '$1 == p {print $c}' "$RESULTS"; }
echo "bench-events: medians (spread) over $RUNS round(s), $STREAMS streams"
base=""
for phase in $PHASES; do
	r=$(col "$phase" 3 | median)
	[ "$phase" != none ] || base=$r
	printf '  %-6s %s req/s (%s)  p99 %s ms' "$phase" "$r" "$(col "$phase" 3 | spread)" \
		"$(col "$phase" 4 | awk '{print $1 / 1000}' | median)"
	if [ -n "$base" ] && [ "$phase" != none ]; then
		awk -v r="$r" -v b="$base" 'BEGIN {printf "  ratio to none %.3f (target >= 0.80: %s)", r / b, (r / b >= 0.8 ? "PASS" : "MISS")}'
	fi
	printf '\n'
	if [ "$phase" != none ]; then
		awk -v p="$phase" -v n="$STREAMS" '$1 == p {
			grow = ($7 - $6); per = grow * 1024 / n
			printf "         round %d: RSS +%.1f MiB with the streams open (%.0f bytes per idle stream), peak %.1f MiB; acknowledgement to event p50 %s ms, p99 %s ms; overflowed %d, ended %d, sent - expected %d%s\n",
				$2, grow / 1024, per, $8 / 1024, $14, $15, $9, $10, $11, (p == "all" ? sprintf(", streams short %d", $12) : "")
			if ($9 > 0 || $10 > 0 || $11 < 0 || $12 > 0) missed = 1
		} END { printf "         every stream got every event: %s\n", (missed ? (p == "all" ? "no: streams that fell 1024 events behind ended with overflow (the worst case)" : "NO (see above)") : "yes") }' "$RESULTS"
	fi
done
