#!/usr/bin/env python3
"""Posts N alarms (or schedules) to a clock-server over keep-alive connections, as fast as
it takes them.

usage: post_alarms.py URL TOKEN N ALARM_TIME DEVICES CONNECTIONS

Alarm i goes to device `awtrix-<i mod DEVICES>`, labelled `a<i>`, at ALARM_TIME (RFC 3339).
With ALARM_TIME `daily@HH:MM:SS` it is a schedule instead (POST /schedules, every day at
that time in UTC; the answer is a 201); with ALARM_TIME `message` a display message `m<i>`
(POST /commands/messages; a 202, `sent` or `queued`). Prints one line: `posted=<n> accepted=<n>
seconds=<elapsed> queued=<answers that said queued>`; exits 1 if any answer was not the expected one.
"""
import http.client
import json
import sys
import threading
import time
import urllib.parse


def main() -> int:
    url, token, n, alarm_time, devices, conns = sys.argv[1:7]
    n, devices, conns = int(n), int(devices), int(conns)
    target = urllib.parse.urlsplit(url)
    accepted = [0] * conns
    queued = [0] * conns
    failures = []

    daily = alarm_time.startswith("daily@")
    message = alarm_time == "message"
    path, expected = ("/schedules", 201) if daily else ("/commands/alarms", 202)
    if message:
        path = "/commands/messages"

    def body_of(i: int) -> str:
        device = f"awtrix-{i % devices}"
        if message:
            return json.dumps({"deviceId": device, "message": f"m{i}", "durationSeconds": 5})
        if daily:
            return json.dumps(
                {"deviceId": device, "time": alarm_time[6:], "timeZone": "UTC", "label": f"s{i}"}
            )
        return json.dumps({"deviceId": device, "alarmTime": alarm_time, "label": f"a{i}"})

    def worker(k: int) -> None:
        c = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        for i in range(k, n, conns):
            c.request("POST", path, body_of(i), headers)
            res = c.getresponse()
            data = res.read()
            if res.status == expected:
                accepted[k] += 1
                if b'"status":"queued"' in data:
                    queued[k] += 1
            elif len(failures) < 5:
                failures.append(f"{res.status} {data[:200]!r}")

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    print(f"posted={n} accepted={sum(accepted)} seconds={elapsed:.2f} queued={sum(queued)}")
    for f in failures:
        print(f"  not accepted: {f}", file=sys.stderr)
    return 0 if sum(accepted) == n else 1


if __name__ == "__main__":
    sys.exit(main())
