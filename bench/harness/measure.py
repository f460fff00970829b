"""Measurements: memory sampler, tiny-page probe, wrk, and the bulk load client."""

import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time

from . import procs
from .loadclient import read_response

HERE = os.path.dirname(os.path.abspath(__file__))
PAGE = os.sysconf("SC_PAGE_SIZE")


def process_tree(root):
    """Returns the PIDs of root and all its descendants (from /proc)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def tree_rss(root):
    """Sum of resident memory (bytes) of root and its descendants."""
    total = 0
    for pid in process_tree(root):
        try:
            with open("/proc/%d/statm" % pid) as f:
                total += int(f.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            pass
    return total


class RssSampler:
    """Samples a server's RSS (all its processes) every `interval` s; keeps the peak."""

    def __init__(self, pid, interval=0.1):
        self.pid, self.interval = pid, interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while True:
            self.peak = max(self.peak, tree_rss(self.pid))
            if self._stop.wait(self.interval):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, tree_rss(self.pid))


def http_get(host, port, path, timeout):
    """One GET on a fresh connection. Returns (status, body, seconds)."""
    t0 = time.perf_counter()
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(("GET %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n"
                   % (path, host, port)).encode())
        status, body = read_response(s)
    return status, body, time.perf_counter() - t0


def probe(host, port, count, gap, timeout, busy, limit=300.0):
    """`count` sequential GET /hello, `gap` s apart, each on a new connection.

    `busy()` tells whether the load is still running; the result counts how
    many probes completed while it was. Stops early after `limit` seconds
    (a stalled server). Returns a dict of latencies (s)."""
    lat, errors, during = [], 0, 0
    end = time.monotonic() + limit
    for i in range(count):
        if i:
            time.sleep(gap)
        if time.monotonic() > end:
            break
        try:
            status, body, elapsed = http_get(host, port, "/hello", timeout)
            if status != 200 or body != b"Hello, world!":
                errors += 1
        except (OSError, ValueError, IndexError):
            errors += 1
            elapsed = timeout
        lat.append(elapsed)
        if busy():
            during += 1
    return {"median": statistics.median(lat), "max": max(lat), "count": len(lat),
            "during_load": during, "errors": errors, "latencies": lat}


def run_loadclient(mode, host, port, path, n, conc, timeout, on_started=None, upload=None):
    """Runs loadclient.py in its own process; calls on_started(proc) once its
    requests are sent. Returns the client's JSON result (+ "timed_out")."""
    argv = [sys.executable, os.path.join(HERE, "loadclient.py"), mode, host, str(port), path,
            str(n), str(conc), str(timeout)]
    if upload:
        argv.append(upload)
    proc = procs.spawn(argv, stdout=subprocess.PIPE)
    try:
        line = proc.stdout.readline()
        if line.strip() == b"STARTED" and on_started:
            on_started(proc)
        out = proc.stdout.read()
        proc.wait(timeout + 30)
    finally:
        procs.stop(proc, grace=2.0)
        proc.stdout.close()
    try:
        return json.loads(out)
    except ValueError:
        return {"wall": None, "requests": [], "error": "client failed: %r" % out[-200:]}


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _seconds(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else None


def parse_wrk(text):
    """Extracts req/s, latency percentiles and errors from `wrk --latency` output."""
    res = {"rps": None, "p50": None, "p99": None, "requests": None, "errors": 0,
           "non2xx": 0}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if m:
        res["rps"] = float(m.group(1))
    for pct, key in (("50", "p50"), ("99", "p99")):
        m = re.search(r"^\s+%s(?:\.0+)?%%\s+(\S+)" % pct, text, re.M)
        if m:
            res[key] = _seconds(m.group(1))
    m = re.search(r"(\d+) requests in", text)
    if m:
        res["requests"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        res["errors"] = sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        res["non2xx"] = int(m.group(1))
    return res


def run_wrk(url, threads, conns, duration, timeout_s=10, on_started=None):
    """Runs wrk (own session, stopped by PID); calls on_started(proc) once it
    runs. Returns parse_wrk()'s dict + raw text."""
    argv = ["wrk", "-t%d" % threads, "-c%d" % conns, "-d%ds" % duration,
            "--timeout", "%ds" % timeout_s, "--latency", url]
    proc = procs.spawn(argv, stdout=subprocess.PIPE)
    try:
        if on_started:
            on_started(proc)
        out, _ = proc.communicate(timeout=duration + timeout_s + 30)
    except subprocess.TimeoutExpired:
        out = b""
    finally:
        procs.stop(proc, grace=2.0)
    text = out.decode("utf-8", "replace")
    res = parse_wrk(text)
    res["raw"] = text
    return res
