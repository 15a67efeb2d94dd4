-- wrk script for scripts/bench-attacks.sh: an attacker presenting wrong bearer tokens.
-- FLOOD_MODE=fixed sends one wrong token on every request (one throttle key, soon 429);
-- FLOOD_MODE=random sends a new random wrong token on every request (a new key each time).
-- Prints one machine-readable line starting with "BENCH ".

local mode = os.getenv("FLOOD_MODE") or "fixed"
local body = '{"deviceId":"clock-1","message":"flood","durationSeconds":10}'
local counter = 0

setup = function(thread)
  thread:set("seed", math.random(1, 1000000000))
end

init = function(args)
  math.randomseed(seed or os.time())
end

request = function()
  local token = "wrong-fixed-token"
  if mode == "random" then
    counter = counter + 1
    token = string.format("wrong-%08x%08x-%d", math.random(0, 0x7fffffff), math.random(0, 0x7fffffff), counter)
  end
  return wrk.format("POST", "/commands/messages",
    { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" }, body)
end

done = function(summary, latency, requests)
  io.write(string.format("BENCH requests=%d duration_us=%d p99_us=%d\n",
    summary.requests, summary.duration, latency:percentile(99)))
end
