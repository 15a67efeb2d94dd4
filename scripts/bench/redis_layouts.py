#!/usr/bin/env python3
"""Redis's own CPU per command for the store's record layout and two cheaper ones.

Not part of `make bench`: a probe behind docs/performance.md's fourth pass. It starts a
redis-server of its own on a free loopback port (REDIS_SERVER, default redis-server),
then writes N commands (a create, then a mark_sent, in groups of G per round trip, one
group in flight, as the store's writer does) three ways, each after a FLUSHALL, in
interleaved rounds, and prints redis-server's CPU (/proc) per command:

- current: the store's WRITES script, read from src/store/redis.rs (a hash per record,
  a TTL, the expiry index);
- blob: a script keeping each record as one string (SET NX PX, then GET and SET
  KEEPTTL), with the same expiry index;
- plain: no script at all (SET NX PX, ZADD, SET XX KEEPTTL): no atomic checks, so not a
  correct store; the floor of any layout that keeps a record, a TTL and an index.

Usage: scripts/bench/redis_layouts.py [G (11)] [N (200000)] [ROUNDS (3)]
"""
import hashlib
import os
import re
import socket
import subprocess
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
SRC = open(os.path.join(ROOT, "src", "store", "redis.rs")).read()


def const(name):
    return re.search(r'const %s: &str = r#"(.*?)"#;' % name, SRC, re.S).group(1)


CURRENT = const("PRELUDE") + const("WRITES")
BLOB = r"""
local prefix, out, i = ARGV[1], {}, 2
local EXPIRING = string.sub(KEYS[1], 1, #KEYS[1] - #'scheduled') .. 'expiring'
while i <= #ARGV do
  local kind, n, a = ARGV[i], tonumber(ARGV[i + 1]), i + 2
  local id, now, retention = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local k = prefix .. id
  if kind == 'c' then
    local ttl = tonumber(ARGV[a + 3]) + retention - now
    if redis.call('SET', k, ARGV[a + 4], 'PX', ttl, 'NX') then
      redis.call('ZADD', EXPIRING, ARGV[a + 3], id)
      out[#out + 1] = 1
    else
      out[#out + 1] = 0
    end
  else
    local v = redis.call('GET', k)
    if not v then out[#out + 1] = {'none'} else
      local bar = string.find(v, '|', 1, true)
      local st = string.sub(v, 1, bar - 1)
      if st == 'pending' then
        redis.call('SET', k, 'sent|' .. ARGV[a + 1] .. string.sub(v, bar), 'KEEPTTL')
        st = 'sent'
      end
      out[#out + 1] = {'ok', st}
    end
  end
  i = a + n
end
return out
"""
NOW = 1795939200000
EXPIRES = NOW + 600000
RETENTION = 86400000
PREFIX = "clock-server:cmd:"


def enc(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = str(a).encode() if not isinstance(a, bytes) else a
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def fields(i):
    return ["id", "cmd-%d" % i, "dev", "bench-%d" % (i % 1000), "type", "display_message",
            "pr", "bench", "st", "pending", "c", NOW, "e", EXPIRES, "a", "0"]


def blob(i):
    return "pending|%d|" % EXPIRES + "\x1f".join(map(str, fields(i)))


def groups(kind, sha, g, n):
    out = []
    for first in range(0, n - n % g, g):
        ids = range(first, first + g)
        if kind == "plain":
            out.append(b"".join(enc(["SET", PREFIX + "cmd-%d" % i, blob(i), "PX", RETENTION + 600000, "NX"])
                                + enc(["ZADD", "clock-server:expiring", EXPIRES, "cmd-%d" % i]) for i in ids))
            out.append(b"".join(enc(["SET", PREFIX + "cmd-%d" % i, "sent|%d|" % NOW, "XX", "KEEPTTL"])
                                for i in ids))
            continue
        for phase in "cs":
            args = ["EVALSHA", sha, 2, "clock-server:scheduled", "clock-server:leased", PREFIX]
            for i in ids:
                if phase == "s":
                    op = ["s", 0, "cmd-%d" % i, NOW + 5, RETENTION]
                elif kind == "current":
                    op = ["c", 0, "cmd-%d" % i, NOW, RETENTION, EXPIRES, ""] + fields(i)
                else:
                    op = ["c", 0, "cmd-%d" % i, NOW, RETENTION, EXPIRES, blob(i)]
                op[1] = len(op) - 2
                args += op
            out.append(enc(args))
    return out


def main():
    values = []
    for place, (name, default) in enumerate((("G", 11), ("N", 200000), ("ROUNDS", 3)), 1):
        text = sys.argv[place] if len(sys.argv) > place else str(default)
        if not text.isdigit() or int(text) < 1:
            sys.exit("redis_layouts: %s must be a whole number of at least 1, not %r" % (name, text))
        values.append(int(text))
    g, n, rounds = values
    if n < g:
        sys.exit("redis_layouts: N (%d) must be at least G (%d)" % (n, g))
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    server = subprocess.Popen([os.environ.get("REDIS_SERVER", "redis-server"), "--bind", "127.0.0.1",
                               "--port", str(port), "--save", "", "--appendonly", "no",
                               "--loglevel", "warning"], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                conn = socket.create_connection(("127.0.0.1", port))
                break
            except OSError:
                time.sleep(0.05)
        else:
            sys.exit("redis_layouts: redis-server did not start")

        def call(args):
            conn.sendall(enc(args))
            return conn.recv(1 << 16)

        def ticks():
            f = open("/proc/%d/stat" % server.pid).read().rsplit(")", 1)[1].split()
            return int(f[11]) + int(f[12])

        for r in range(1, rounds + 1):
            for kind, script in (("current", CURRENT), ("blob", BLOB), ("plain", None)):
                sha = hashlib.sha1(script.encode()).hexdigest() if script else ""
                if script:
                    call(["SCRIPT", "LOAD", script])
                call(["FLUSHALL"])
                batches = groups(kind, sha, g, n)
                t0 = ticks()
                for batch in batches:
                    conn.sendall(batch)
                    conn.recv(1 << 20)  # one group in flight, as the store's writer
                conn.sendall(enc(["PING"]))
                tail = b""
                while b"+PONG\r\n" not in tail:
                    tail = (tail + conn.recv(1 << 20))[-64:]
                used = ticks() - t0
                keys = call(["DBSIZE"]).decode().strip(":\r\n")
                print("round %d %-7s groups of %d: %s keys, redis-server %.1f us CPU per command"
                      % (r, kind, g, keys, used * 1e4 / (n - n % g)), flush=True)
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
