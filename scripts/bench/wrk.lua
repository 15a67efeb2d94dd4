-- wrk script for scripts/bench.sh. BENCH_MODE=command (default) posts one display-message
-- command per request with the bearer token; BENCH_MODE=health sends GET /health.
-- With BENCH_DEVICES=N (command mode, scripts/bench-events.sh) each thread's requests go to
-- the devices bench-0 ... bench-<N-1> in turn.
-- At the end it prints one machine-readable line starting with "BENCH ".

local mode = os.getenv("BENCH_MODE") or "command"
if mode == "command" then
  wrk.method = "POST"
  wrk.path = "/commands/messages"
  wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_TOKEN") or "bench-token")
  wrk.headers["Content-Type"] = "application/json"
  wrk.body = os.getenv("BENCH_BODY")
    or '{"deviceId":"clock-1","message":"hello from the benchmark","durationSeconds":10}'
else
  wrk.method = "GET"
  wrk.path = "/health"
end

local devices = tonumber(os.getenv("BENCH_DEVICES") or "")
if mode == "command" and devices and devices > 0 then
  local next_device = 0
  request = function()
    local body = string.format(
      '{"deviceId":"bench-%d","message":"hello from the benchmark","durationSeconds":10}',
      next_device)
    next_device = (next_device + 1) % devices
    return wrk.format(nil, nil, nil, body)
  end
end

-- wrk counts a response as a status error when its status is 400 or above (the server
-- sends no 1xx or 3xx); socket errors (connect, read, write, timeout) are counted apart.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d max_us=%d status_errors=%d socket_errors=%d timeouts=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.status, e.connect + e.read + e.write, e.timeout))
end
