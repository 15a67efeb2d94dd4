#!/usr/bin/env bash
# `make bench`, third part: what tracking commands costs (SPEC 7), side by side in one run
# on loopback (a Mosquitto of its own on a free port, never 1883).
#
# 1. Stores: BENCH_CONNECTIONS keep-alive wrk clients post commands (QoS 1) to a fresh
#    server with STATE_STORE=none, memory, file:<temp dir>/state.db and redis://<a
#    redis-server of its own on a free loopback port, no persistence, flushed between
#    rounds>, in interleaved rounds (BENCH_RUNS), BENCH_SECONDS each; medians with their
#    spread, and the ratios against none. Each round also prints the CPU per command of
#    the server, of redis-server and of the whole machine (/proc): on a machine whose cores
#    are all busy, Redis's own share caps the redis ratio, and the script prints that cap.
#    Targets: memory req/s >= 0.90x and p99 <= 1.25x; file req/s >= 0.50x; redis req/s >=
#    0.70x and p99 <= 2x.
#    With BENCH_BASELINE=<another clock-server binary> (an older commit's release build,
#    or the Go service this one replaces: it reads the same variables and ignores
#    STATE_STORE), each round also runs that binary with `none` and `memory` (as
#    `none@base` and `memory@base`): side by side in one run, with peak RSS.
# 2. A million commands: one STATE_STORE=memory server (default STATE_MAX_COMMANDS) takes
#    BENCH_MILLION (1000000) commands; its peak RSS (VmHWM) must stay <= 64 MiB.
# The figures are for reading, not asserting.
#
# Variables: BENCH_RUNS (3), BENCH_SECONDS (10), BENCH_CONNECTIONS (64), BENCH_THREADS (2),
# BENCH_MILLION (1000000; 0 skips it), BENCH_CARGO_FLAGS (--no-default-features --features stores),
# BENCH_BUILD (1), BENCH_KEEP (0), BENCH_STORES ("none memory file redis"), BENCH_SERVER_ENV
# (more VAR=value for every server of the rounds, space-separated: e.g.
# "STATE_MAX_COMMANDS=1000000 STATE_MAX_BYTES=536870912" so that an older build's bound is
# not what is measured), CARGO, CARGO_TARGET_DIR, MOSQUITTO, REDIS_SERVER (redis-server; its
# phase is skipped without it).
set -euo pipefail

cd "$(dirname "$0")/.."

MILLION=${BENCH_MILLION:-1000000}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
STORES=${BENCH_STORES:-none memory file redis}
BASELINE=${BENCH_BASELINE:-}
SCRIPT_NAME=bench-store
# shellcheck source=scripts/bench/server.sh
. scripts/bench/server.sh

REDIS_PORT=""
REDIS_PID=""
case " $STORES " in
*" redis "*)
	if command -v "$REDIS_SERVER" >/dev/null 2>&1; then
		REDIS_PORT=$(free_port)
		"$REDIS_SERVER" --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
			--dir "$TMP" --loglevel warning >"$TMP/redis.log" 2>&1 &
		REDIS_PID=$!
		track "$REDIS_PID"
		wait_port "$REDIS_PORT" || die "redis-server did not start"
	else
		echo "bench-store: $REDIS_SERVER is missing (make test-deps): no redis phase"
		STORES=$(echo "$STORES" | sed 's/redis//')
	fi
	;;
esac
# redis_flush: an empty Redis for the next round (RESP over bash's /dev/tcp).
redis_flush() {
	exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT"
	printf '*1\r\n$8\r\nFLUSHALL\r\n' >&3
	head -c 5 <&3 >/dev/null
	exec 3<&-
}

if [ -n "$BASELINE" ]; then
	[ -x "$BASELINE" ] || die "BENCH_BASELINE is not an executable: $BASELINE"
	STORES="$STORES none@base memory@base"
fi

store_value() {
	case ${1%@base} in
	file) echo "file:$TMP/state-$2.db" ;;
	redis) echo "redis://127.0.0.1:$REDIS_PORT" ;;
	*) echo "${1%@base}" ;;
	esac
}

# CPU ticks used so far: a process's (user + system), redis-server's (0 without it), and
# the whole machine's busy time (user, nice, system, irq, softirq).
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
redis_ticks() { if [ -n "$REDIS_PID" ]; then ticks "$REDIS_PID"; else echo 0; fi; }
busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }

echo "bench-store: $CONNS connections at QoS 1, ${DURATION}s x $RUNS rounds"
for run in $(seq "$RUNS"); do
	for store in $STORES; do
		[ "$store" != redis ] || redis_flush
		binary=$SERVER
		[ "$store" = "${store%@base}" ] || SERVER=$BASELINE
		# shellcheck disable=SC2086
		start_server "$TMP/server-$store-$run.log" "STATE_STORE=$(store_value "$store" "$run")" ${BENCH_SERVER_ENV:-}
		SERVER=$binary
		out=$TMP/wrk-$store-$run.out
		before="$(ticks "$SERVER_PID") $(redis_ticks) $(busy_ticks)"
		wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" -s scripts/bench/wrk.lua \
			"http://127.0.0.1:$HTTP_PORT" >"$out" 2>&1
		after="$(ticks "$SERVER_PID") $(redis_ticks) $(busy_ticks)"
		peak=$(kib VmHWM)
		stop_server
		errors=$(field "$out" status_errors)
		# CPU per command in us (ticks are 1/100 s): the server, redis-server, the machine.
		cpu=$(echo "$before $after" | awk -v n="$(field "$out" requests)" '{
			if (n + 0 == 0) n = 1e99  # wrk answered nothing: 0.0, as its rate
			printf "%.1f %.1f %.1f", ($4 - $1) * 1e4 / n, ($5 - $2) * 1e4 / n, ($6 - $3) * 1e4 / n }')
		echo "$store $run $(rate "$out") $(field "$out" p99_us) $errors $peak $cpu" >>"$TMP/stores.txt"
		printf '  round %d %-6s %7s req/s  p99 %6.1f ms  non-2xx %s  peak RSS %.1f MiB  CPU per command: %s\n' \
			"$run" "$store" "$(rate "$out")" "$(awk -v p="$(field "$out" p99_us)" 'BEGIN {print p / 1000}')" \
			"$errors" "$(awk -v k="$peak" 'BEGIN {print k / 1024}')" \
			"$(echo "$cpu" | awk -v s="$store" '{printf "server %s us, %smachine %s us", $1, (s == "redis" ? "redis-server " $2 " us, " : ""), $3}')"
	done
done
echo "bench-store: medians (spread)"
for store in $STORES; do
	r=$(awk -v s="$store" '$1 == s {print $3}' "$TMP/stores.txt")
	p=$(awk -v s="$store" '$1 == s {print $4 / 1000}' "$TMP/stores.txt")
	m=$(awk -v s="$store" '$1 == s {printf "%.1f\n", $6 / 1024}' "$TMP/stores.txt")
	printf '  %-6s %s req/s (%s)  p99 %s ms (%s)  peak RSS %s MiB (%s)\n' "$store" "$(echo "$r" | median)" \
		"$(echo "$r" | spread)" "$(echo "$p" | median)" "$(echo "$p" | spread)" \
		"$(echo "$m" | median)" "$(echo "$m" | spread)"
done
med() { awk -v s="$1" -v c="$2" '$1 == s {print $c}' "$TMP/stores.txt" | median; }
awk -v nr="$(med none 3)" -v np="$(med none 4)" -v mr="$(med memory 3)" -v mp="$(med memory 4)" \
	-v fr="$(med file 3)" -v fp="$(med file 4)" 'BEGIN {
	if (mr > 0) printf "  memory / none: req/s %.3f (target >= 0.90: %s), p99 %.2fx (target <= 1.25x: %s)\n",
		mr / nr, (mr / nr >= 0.9 ? "PASS" : "MISS"), mp / np, (mp / np <= 1.25 ? "PASS" : "MISS")
	if (fr > 0) printf "  file / none:   req/s %.3f (target >= 0.50: %s), p99 %.2fx\n",
		fr / nr, (fr / nr >= 0.5 ? "PASS" : "MISS"), fp / np
}'
if [ -n "$BASELINE" ]; then
	awk -v nr="$(med none 3)" -v mr="$(med memory 3)" -v mp="$(med memory 4)" -v np="$(med none 4)" \
		-v br="$(med none@base 3)" -v bm="$(med memory@base 3)" -v bp="$(med memory@base 4)" -v bn="$(med none@base 4)" 'BEGIN {
		printf "  this build / BENCH_BASELINE: none %.2fx req/s, p99 %.2fx; memory %.2fx; memory / none: baseline %.2f (p99 %.2fx), this build %.2f (p99 %.2fx)\n",
			nr / br, np / bn, mr / bm, bm / br, bp / bn, mr / nr, mp / np
	}'
	awk -v n="$(med none 6)" -v b="$(med none@base 6)" 'BEGIN {
		printf "  peak RSS, none: this build %.1f MiB, BENCH_BASELINE %.1f MiB: %.2fx\n", n / 1024, b / 1024, n / b
	}'
fi
if [ -n "$REDIS_PORT" ]; then
	awk -v nr="$(med none 3)" -v np="$(med none 4)" -v rr="$(med redis 3)" -v rp="$(med redis 4)" \
		-v rc="$(med redis 8)" -v nm="$(med none 9)" 'BEGIN {
		printf "  redis / none:  req/s %.3f (target >= 0.70: %s), p99 %.2fx (target <= 2x: %s)\n",
			rr / nr, (rr / nr >= 0.7 ? "PASS" : "MISS"), rp / np, (rp / np <= 2 ? "PASS" : "MISS")
		# With every core busy, Redis on the same cores caps the ratio at none'"'"'s machine CPU per
		# command over that plus Redis'"'"'s own, before the server does anything more.
		printf "  redis-server: %.1f us CPU per command on the same cores; with none at %.1f us of machine CPU per command, that alone caps redis / none at %.2f\n",
			rc, nm, nm / (nm + rc)
	}'
fi

if [ "$MILLION" -gt 0 ]; then
	start_server "$TMP/server-million.log" STATE_STORE=memory
	total=0
	while [ "$total" -lt "$MILLION" ]; do
		wrk -t"$THREADS" -c"$CONNS" -d10s -s scripts/bench/wrk.lua \
			"http://127.0.0.1:$HTTP_PORT" >"$TMP/million.out" 2>&1
		total=$((total + $(field "$TMP/million.out" requests)))
	done
	awk -v n="$total" -v p="$(kib VmHWM)" -v r="$(kib VmRSS)" 'BEGIN {
		printf "bench-store: %d commands into STATE_STORE=memory: peak RSS %.1f MiB (target <= 64: %s), now %.1f MiB\n",
			n, p / 1024, (p <= 65536 ? "PASS" : "MISS"), r / 1024
	}'
	stop_server
fi
