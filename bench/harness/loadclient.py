"""Bulk HTTP/1.1 client for the blob and upload scenarios (stdlib only).

Why not ab: ab reads bodies 8 KiB at a time and saturates one core near
1.4 GB/s on this machine, below what nginx sends over loopback, so it would
measure itself. This client reads with 4 MiB recv_into() calls on a selector
loop (downloads) and sends request bodies with sendfile() (uploads), so the
client costs little more than the kernel's copy.

Run as a separate process by bench/run:
  loadclient.py get  HOST PORT PATH N CONCURRENCY TIMEOUT
  loadclient.py post HOST PORT PATH N CONCURRENCY TIMEOUT FILE
It prints "STARTED" once the first CONCURRENCY requests are sent, then one
JSON object: {"wall": s, "requests": [{"time": s, "status": int,
"bytes": body bytes, "ok": bool, "error": str|null}, ...]}.
Every request uses a fresh connection with "Connection: close".
"""

import json
import os
import selectors
import socket
import sys
import threading
import time

RECV_SIZE = 4 * 1024 * 1024


class Download:
    """One GET in flight: header bytes until the blank line, then a body count."""

    def __init__(self, host, port, path):
        self.t0 = time.perf_counter()
        self.sock = socket.create_connection((host, port))
        req = "GET %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n" % (path, host, port)
        self.sock.sendall(req.encode())
        self.sock.setblocking(False)
        self.head = b""
        self.status = 0
        self.length = None
        self.body = 0
        self.done = False

    def feed(self, data):
        if self.status:
            self.body += len(data)
            return
        self.head += bytes(data)
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            return
        lines = self.head[:end].decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                self.length = int(value.strip())
        self.body = len(self.head) - end - 4
        self.head = b""

    def complete(self):
        """True once Content-Length body bytes arrived (some servers keep the
        connection open despite "Connection: close", e.g. uWSGI's http11-socket)."""
        return self.length is not None and self.body >= self.length

    def result(self, error=None):
        ok = error is None and self.status == 200 and self.length == self.body
        if error is None and not ok:
            error = "status %d, %d of %s body bytes" % (self.status, self.body, self.length)
        return {"time": time.perf_counter() - self.t0, "status": self.status,
                "bytes": self.body, "ok": ok, "error": error}


def run_get(host, port, path, n, conc, timeout):
    """Runs N downloads, CONC at a time, until done or TIMEOUT seconds."""
    sel = selectors.DefaultSelector()
    buf = memoryview(bytearray(RECV_SIZE))
    results = []
    started = 0
    t0 = time.perf_counter()

    def start_one():
        nonlocal started
        started += 1
        try:
            d = Download(host, port, path)
        except OSError as e:
            results.append({"time": 0.0, "status": 0, "bytes": 0, "ok": False,
                            "error": str(e)})
            return
        sel.register(d.sock, selectors.EVENT_READ, d)

    for _ in range(min(n, conc)):
        start_one()
    print("STARTED", flush=True)
    while sel.get_map():
        left = timeout - (time.perf_counter() - t0)
        if left <= 0:
            for key in list(sel.get_map().values()):
                results.append(key.data.result("timeout"))
                key.fileobj.close()
            break
        for key, _ in sel.select(min(left, 1.0)):
            d = key.data
            try:
                got = key.fileobj.recv_into(buf)
                error = None
            except BlockingIOError:
                continue
            except OSError as e:
                got, error = 0, str(e)
            if got:
                d.feed(buf[:got])
                if not d.complete():
                    continue
            sel.unregister(key.fileobj)
            key.fileobj.close()
            results.append(d.result(error))
            if started < n:
                start_one()
    return time.perf_counter() - t0, results


def read_response(sock):
    """Reads one response from a blocking socket: until Content-Length body
    bytes arrived, or EOF when there is none. Returns (status, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/"):
        return 0, b""
    lines = head.decode("latin-1").split("\r\n")
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    while length is None or len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), body


def post_one(host, port, path, fname, size, timeout):
    t0 = time.perf_counter()
    status, body, error = 0, b"", None
    try:
        with socket.create_connection((host, port), timeout=timeout) as s, \
                open(fname, "rb") as f:
            head = ("POST %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n"
                    "Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n"
                    % (path, host, port, size))
            s.sendall(head.encode())
            s.sendfile(f)
            status, body = read_response(s)
    except (OSError, ValueError, IndexError) as e:
        error = str(e) or type(e).__name__
    ok = error is None and status == 200 and body.strip() == str(size).encode()
    if error is None and not ok:
        error = "status %d, app read %r of %d bytes" % (status, body[:40], size)
    return {"time": time.perf_counter() - t0, "status": status, "bytes": size,
            "ok": ok, "error": error}


def run_post(host, port, path, n, conc, timeout, fname):
    """Runs N uploads of FNAME, CONC threads at a time."""
    size = os.path.getsize(fname)
    results = []
    lock = threading.Lock()
    todo = list(range(n))

    def worker():
        while True:
            with lock:
                if not todo:
                    return
                todo.pop()
            r = post_one(host, port, path, fname, size, timeout)
            with lock:
                results.append(r)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(min(n, conc))]
    for t in threads:
        t.start()
    print("STARTED", flush=True)
    for t in threads:
        t.join()
    return time.perf_counter() - t0, results


def main(argv):
    mode, host, port, path = argv[1], argv[2], int(argv[3]), argv[4]
    n, conc, timeout = int(argv[5]), int(argv[6]), float(argv[7])
    if mode == "get":
        wall, results = run_get(host, port, path, n, conc, timeout)
    else:
        wall, results = run_post(host, port, path, n, conc, timeout, argv[8])
    print(json.dumps({"wall": wall, "requests": results}), flush=True)


if __name__ == "__main__":
    main(sys.argv)
