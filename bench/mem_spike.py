#!/usr/bin/python3
"""Memory after a spike: N slow clients each fetch a generated body (1 MiB by
default) and read almost nothing, then all close. Prints the server's RSS at
start, at the peak, a few seconds after the clients left, and (with the idle
trim on) after zfront returned the free memory to the system.

    bench/mem_spike.py [--clients 1000] [--size 1048576] [--idle 2s] [--bin build/zfront]

Runs two servers one after the other: memory.trim_idle=0 (what glibc keeps
without a trim) and memory.trim_idle=IDLE. Loopback only; every phase is
bounded in time. Also imported by tests/integration/test_memory_trim.py."""
import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
APPS = os.path.join(REPO, "tests", "integration", "apps")


def rss_mib(pid):
    with open("/proc/%d/statm" % pid) as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGESIZE") / 1048576.0


def slow_clients(port, n, size, deadline):
    """Opens n connections with a tiny receive buffer, each asking for a
    `size`-byte generated body; returns the sockets (reading nothing)."""
    socks = []
    req = ("GET /big?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % size).encode()
    for _ in range(n):
        if time.monotonic() > deadline:
            break
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        s.sendall(req)
        socks.append(s)
    return socks


def wait_plateau(pid, timeout):
    """Waits until the RSS stops growing (two equal samples 0.5 s apart)
    or timeout; returns the last value."""
    end = time.monotonic() + timeout
    last = rss_mib(pid)
    while time.monotonic() < end:
        time.sleep(0.5)
        now = rss_mib(pid)
        if abs(now - last) < 1.0:
            return now
        last = now
    return last


def start_server(binary, root, port, threads, extra):
    env = dict(os.environ, ZF_TEST_MARKERS=root)
    for k in ("PYTHONHOME", "PYTHONPATH"):
        env.pop(k, None)
    log = open(os.path.join(root, "zfront.log"), "wb")
    p = subprocess.Popen([binary, "--app", "opsapp", "--python-path", APPS, "--http",
                          "127.0.0.1:%d" % port, "--threads", str(threads)] + extra,
                         stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=root)
    end = time.monotonic() + 15
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return p
        except OSError:
            time.sleep(0.05)
    p.kill()
    raise RuntimeError("zfront did not start")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spike(pid, port, clients, size, timeout=60):
    """Runs one spike; returns (peak_mib, after_close_mib, sockets_opened)."""
    deadline = time.monotonic() + timeout
    socks = slow_clients(port, clients, size, deadline)
    peak = wait_plateau(pid, max(1.0, deadline - time.monotonic()))
    for s in socks:
        s.close()
    return peak, len(socks)


def run(binary, clients, size, idle, threads=4):
    rows = []
    for trim in ("0", idle):
        root = tempfile.mkdtemp(prefix="zf-memspike-")
        port = free_port()
        p = start_server(binary, root, port, threads, ["--set", "memory.trim_idle=" + trim])
        try:
            socket.create_connection(("127.0.0.1", port)).sendall(b"GET /status HTTP/1.0\r\n\r\n")
            time.sleep(0.5)
            start = rss_mib(p.pid)
            peak, opened = spike(p.pid, port, clients, size)
            time.sleep(1.0)
            after_close = rss_mib(p.pid)
            time.sleep(4.0 + (0 if trim == "0" else 2.0))
            later = rss_mib(p.pid)
            rows.append((trim, opened, start, peak, after_close, later))
        finally:
            p.terminate()
            p.wait(15)
            subprocess.run(["rm", "-rf", root])
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--size", type=int, default=1 << 20)
    ap.add_argument("--idle", default="2s")
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--bin", default=os.environ.get("ZFRONT_BIN",
                                                    os.path.join(REPO, "build", "zfront")))
    a = ap.parse_args()
    rows = run(a.bin, a.clients, a.size, a.idle, a.threads)
    print("| memory.trim_idle | clients | RSS start | RSS peak | 1 s after close | 5-7 s after close |")
    print("|---|---|---|---|---|---|")
    for trim, n, start, peak, after, later in rows:
        print("| %s | %d | %.0f MiB | %.0f MiB | %.0f MiB | %.0f MiB |"
              % (trim, n, start, peak, after, later))
    return 0


if __name__ == "__main__":
    sys.exit(main())
