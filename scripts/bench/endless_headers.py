"""Opens N connections to 127.0.0.1:PORT that each send a request head that never ends
(one header line growing by 1 KiB at a time) until the server closes them; prints how
many were closed by the server and how many bytes were sent in all. Used by
scripts/bench-attacks.sh to measure the server's memory under such a flood."""
import selectors
import socket
import sys
import time

port, count, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
sel = selectors.DefaultSelector()
chunk = b"a" * 1024
socks = []
for _ in range(count):
    s = socket.create_connection(("127.0.0.1", port))
    s.setblocking(False)
    s.send(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Endless: ")
    sel.register(s, selectors.EVENT_WRITE | selectors.EVENT_READ)
    socks.append(s)
sent = 0
closed = 0
deadline = time.time() + seconds
while sel.get_map() and time.time() < deadline:
    for key, events in sel.select(timeout=0.2):
        s = key.fileobj
        try:
            if events & selectors.EVENT_READ:
                if not s.recv(65536):
                    raise ConnectionError
            if events & selectors.EVENT_WRITE:
                sent += s.send(chunk)
        except (ConnectionError, OSError):
            sel.unregister(s)
            s.close()
            closed += 1
print(f"FLOOD closed={closed} open={len(sel.get_map())} sent_bytes={sent}")
sys.stdout.flush()
# Hold what is still open until told to stop (stdin closes).
sys.stdin.read()
