#!/usr/bin/env python3
"""Holds N `GET /events` streams (SPEC 13.1) open on one clock-server and counts what each gets.

usage: event_streams.py URL TOKEN N MODE DEVICES

MODE `device`: stream i follows `?deviceId=bench-<i mod DEVICES>&types=command` (what
scripts/bench/wrk.lua posts with BENCH_DEVICES); MODE `all`: every stream takes every
`command` event (`?types=command`).

It opens the N streams (one thread, non-blocking sockets, HTTP/1.1 chunked bodies decoded
here), prints `ready opened=<n> seconds=<s>` once every one has answered 200 and written
its opening `: keep-alive`, then reads them all. On SIGUSR1 it reads on until no stream has received anything for 1 s (at most
30 s more), then prints one line:

  STREAMS opened=<n> overflowed=<streams that got event: overflow> ended=<streams the
  server closed otherwise> events=<command events, all streams> sent=<events whose record
  says "status":"sent", all streams> min_sent=<fewest on one stream> max_sent=<most>

and writes `<stream> <deviceId or *> <sent> <events> <overflowed 0/1>` per stream to the
file named by BENCH_STREAMS_DETAIL, if set. Exits 1 if a stream could not be opened.

With BENCH_ACK_BROKER=<host>:<port> it also plays the device (SPEC 7.4) for a sample of
commands: every 50 ms until SIGUSR1 it acknowledges (MQTT 3.1.1, QoS 0, on
`<BENCH_ACK_PREFIX, default clocks/commands>/<deviceId>/ack`) the newest command stream 0
has seen `sent`, printing `ack <commandId>`, and times each `succeeded` event of those
commands on every stream from the moment the acknowledgement was written. The summary then
adds `acks=<n> ack_events=<arrivals> ack_p50_ms=<ms> ack_p99_ms=<ms>`. The times include
this client's own delay when it is busy.
"""
import json
import os
import re
import selectors
import signal
import socket
import sys
import time
import urllib.parse

SENT = b'"status":"sent"'
SUCCEEDED = b'"status":"succeeded"'
COMMAND_ID = re.compile(rb'"commandId":"([^"]+)"')
DEVICE_ID = re.compile(rb'"deviceId":"([^"]+)"')
ACK_EVERY = 0.05
QUIET = 1.0
DRAIN_AT_MOST = 30.0
OPEN_WITHIN = 60.0


class AckProbe:
    """The device side of a latency sample: acknowledgements over a bare MQTT 3.1.1
    connection, and when each was written."""

    def __init__(self, broker, prefix):
        host, port = broker.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        client_id = f"bench-events-{os.getpid()}".encode()
        # CONNECT: protocol MQTT level 4, clean session, no keep-alive (the connection may
        # be silent for longer than any keep-alive while the streams open).
        body = b"\x00\x04MQTT\x04\x02\x00\x00" + len(client_id).to_bytes(2, "big") + client_id
        self.sock.sendall(b"\x10" + remaining_length(len(body)) + body)
        connack = b""
        while len(connack) < 4:
            chunk = self.sock.recv(4 - len(connack))
            if not chunk:
                raise OSError("the broker closed the connection before CONNACK")
            connack += chunk
        if connack[0] != 0x20 or connack[3] != 0:
            raise OSError(f"the broker refused the connection: {connack!r}")
        self.prefix = prefix
        self.newest = None  # (commandId, deviceId) of the newest `sent` on stream 0
        self.written = {}  # commandId -> when its acknowledgement was written
        self.latencies = []
        self.last = 0.0

    def saw_sent(self, block):
        ids, devices = COMMAND_ID.search(block), DEVICE_ID.search(block)
        if ids and devices:
            self.newest = (ids.group(1).decode(), devices.group(1).decode())

    def saw_succeeded(self, block, now):
        ids = COMMAND_ID.search(block)
        if ids:
            at = self.written.get(ids.group(1).decode())
            if at is not None:
                self.latencies.append(now - at)

    def tick(self, now):
        if now - self.last < ACK_EVERY or self.newest is None:
            return
        command_id, device = self.newest
        self.newest = None
        if command_id in self.written:
            return
        topic = f"{self.prefix}/{device}/ack".encode()
        payload = json.dumps({"commandId": command_id, "status": "succeeded"}).encode()
        body = len(topic).to_bytes(2, "big") + topic + payload
        self.sock.sendall(b"\x30" + remaining_length(len(body)) + body)
        self.last = time.monotonic()
        self.written[command_id] = self.last
        print(f"ack {command_id}", flush=True)

    def summary(self):
        lat = sorted(self.latencies)

        def ms(q):
            return f"{1000 * lat[min(len(lat) - 1, int(q * len(lat)))]:.2f}" if lat else "-"

        return (
            f" acks={len(self.written)} ack_events={len(lat)}"
            f" ack_p50_ms={ms(0.5)} ack_p99_ms={ms(0.99)}"
        )


def remaining_length(n):
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


class Stream:
    """One SSE stream: its socket, the HTTP head, the chunked framing and the SSE blocks."""

    def __init__(self, index, device, sock, probe=None):
        self.index = index
        self.probe = probe  # the acknowledgement probe, for its sample of events
        self.device = device
        self.sock = sock
        self.raw = b""  # bytes not yet decoded (head or chunk framing)
        self.head_done = False
        self.chunk_left = 0  # bytes left in the current chunk (then its CRLF)
        self.need_crlf = False
        self.text = b""  # SSE text not yet split into blocks
        self.started = False  # the first block (the opening keep-alive) is in
        self.events = 0
        self.sent = 0
        self.overflowed = False
        self.ended = False

    def feed(self, data):
        """Takes bytes from the socket; returns an error text for a refused stream."""
        self.raw += data
        if not self.head_done:
            end = self.raw.find(b"\r\n\r\n")
            if end < 0:
                return None
            head, self.raw = self.raw[:end], self.raw[end + 4 :]
            status = head.split(b"\r\n", 1)[0]
            if b" 200 " not in status + b" ":
                return status.decode("latin-1")
            if b"chunked" not in head.lower():
                return "the answer is not chunked: " + head.decode("latin-1")
            self.head_done = True
        self.unchunk()
        self.split()
        return None

    def unchunk(self):
        out = []
        raw = self.raw
        while raw:
            if self.need_crlf:
                if len(raw) < 2:
                    break
                raw = raw[2:]
                self.need_crlf = False
                continue
            if self.chunk_left == 0:
                line_end = raw.find(b"\r\n")
                if line_end < 0:
                    break
                size = int(raw[:line_end].split(b";", 1)[0], 16)
                raw = raw[line_end + 2 :]
                if size == 0:
                    self.ended = True
                    raw = b""
                    break
                self.chunk_left = size
            take = raw[: self.chunk_left]
            out.append(take)
            raw = raw[len(take) :]
            self.chunk_left -= len(take)
            if self.chunk_left == 0:
                self.need_crlf = True
        self.raw = raw
        if out:
            self.text += b"".join(out)

    def split(self):
        end = self.text.rfind(b"\n\n")
        if end < 0:
            return
        blocks, self.text = self.text[: end + 2], self.text[end + 2 :]
        self.started = True
        for block in blocks.split(b"\n\n"):
            if block.startswith(b"event: command\n"):
                self.events += 1
                if SENT in block:
                    self.sent += 1
                    if self.probe is not None and self.index == 0:
                        self.probe.saw_sent(block)
                elif self.probe is not None and SUCCEEDED in block:
                    self.probe.saw_succeeded(block, time.monotonic())
            elif block.startswith(b"event: overflow"):
                self.overflowed = True


def main():
    url, token, n, mode, devices = sys.argv[1:6]
    n, devices = int(n), max(int(devices), 1)
    if mode not in ("device", "all"):
        print(f"MODE must be device or all, not {mode!r}", file=sys.stderr)
        return 2
    target = urllib.parse.urlsplit(url)
    selector = selectors.DefaultSelector()
    streams = []
    stop = {"asked": False}
    signal.signal(signal.SIGUSR1, lambda *_: stop.update(asked=True))

    broker = os.environ.get("BENCH_ACK_BROKER")
    probe = None
    if broker:
        probe = AckProbe(broker, os.environ.get("BENCH_ACK_PREFIX") or "clocks/commands")

    started = time.monotonic()
    for i in range(n):
        device = f"bench-{i % devices}" if mode == "device" else "*"
        query = "types=command" + (f"&deviceId={device}" if mode == "device" else "")
        sock = socket.create_connection((target.hostname, target.port), timeout=10)
        sock.sendall(
            (
                f"GET /events?{query} HTTP/1.1\r\nHost: {target.netloc}\r\n"
                f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
            ).encode()
        )
        sock.setblocking(False)
        stream = Stream(i, device, sock, probe)
        streams.append(stream)
        selector.register(sock, selectors.EVENT_READ, stream)

    def read_ready(timeout):
        """Reads what is there; returns whether anything came."""
        got = False
        for key, _ in selector.select(timeout):
            stream = key.data
            try:
                data = stream.sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                stream.ended = True
                selector.unregister(stream.sock)
                continue
            got = True
            refused = stream.feed(data)
            if refused:
                print(f"stream {stream.index} refused: {refused}", file=sys.stderr)
                return None
            if stream.ended:
                selector.unregister(stream.sock)
        return got

    # Every stream answered 200 and wrote its first block (the server subscribes it
    # before that) before the load starts.
    while not all(s.started for s in streams):
        if time.monotonic() - started > OPEN_WITHIN or read_ready(0.5) is None:
            waiting = sum(not s.started for s in streams)
            print(f"{waiting} of {n} streams did not open", file=sys.stderr)
            return 1
    print(f"ready opened={n} seconds={time.monotonic() - started:.3f}", flush=True)

    while not stop["asked"]:
        if read_ready(ACK_EVERY if probe else 0.2) is None:
            return 1
        if probe is not None:
            probe.tick(time.monotonic())
    # Drained: nothing for QUIET seconds, or DRAIN_AT_MOST.
    deadline = time.monotonic() + DRAIN_AT_MOST
    last = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - last < QUIET:
        got = read_ready(0.1)
        if got is None:
            return 1
        if got:
            last = time.monotonic()

    sent = [s.sent for s in streams]
    print(
        f"STREAMS opened={n} overflowed={sum(s.overflowed for s in streams)} "
        f"ended={sum(s.ended and not s.overflowed for s in streams)} "
        f"events={sum(s.events for s in streams)} sent={sum(sent)} "
        f"min_sent={min(sent)} max_sent={max(sent)}" + (probe.summary() if probe else ""),
        flush=True,
    )
    detail = os.environ.get("BENCH_STREAMS_DETAIL")
    if detail:
        with open(detail, "w") as out:
            for s in streams:
                out.write(f"{s.index} {s.device} {s.sent} {s.events} {int(s.overflowed)}\n")
    for s in streams:
        s.sock.close()
    if probe is not None:
        probe.sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
