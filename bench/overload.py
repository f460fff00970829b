#!/usr/bin/python3
"""Overload benchmark (issue 9): does a server keep answering /hello while a
few clients try to take everything? zfront beside nginx, waitress and uWSGI.

  bench/overload.py                         all parts, all servers (~2 min)
  bench/overload.py --server zfront,nginx --part slowloris --json out.json

Parts (each on a freshly started server, each bounded to --hold seconds of load):
  slowloris   the server runs with `ulimit -n 1024` (soft and hard); 2,000
              connections each send a request line and header lines that
              never end (one more header line per second; a connection the
              server closed is opened again, as an attacker would). Meanwhile a
              /hello probe from a new connection every 0.3 s (timeout 5 s):
              its latency, and how many probes failed or timed out.
  nonreaders  1,000 clients each request /gen (the 10 MB file from a plain
              generator, as a middleware would hand it over) and read nothing
              (64 KiB receive buffers). Peak RSS of the server, and /hello
              probes as above.
  stuck       --threads workers (4) each in a request that sleeps 8 s; then 5
              /hello requests at once (timeout 10 s): each one's status and
              latency, i.e. 503 at once, or queued until a worker is free.
nginx serves /hello itself (no application): it has no workers to get stuck,
so the stuck part does not apply to it.

Results: a markdown table on stdout (pasted into docs/benchmarks.md) and the
raw numbers as JSON with --json FILE. Loopback only; every process it starts
is stopped by PID (bench/harness/procs.py).
"""

import argparse
import errno
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # keep bench/ free of __pycache__
sys.path.insert(0, HERE)

from harness import measure, procs, servers  # noqa: E402
from harness.servers import HOST  # noqa: E402

SERVERS = ["zfront", "nginx", "waitress", "uwsgi"]
PARTS = ["slowloris", "nonreaders", "stuck"]
SLOWLORIS = 2000
SLOWLORIS_NOFILE = 1024
NONREADERS = 1000
FILE_MB = 10
STUCK_SLEEP = 8
STUCK_PROBES = 5
PROBE_GAP = 0.3
PROBE_TIMEOUT = 5.0


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


class Limited:
    """Wraps a server definition so that it starts under `ulimit -n N`."""

    def __init__(self, server, nofile):
        self.server, self.nofile = server, nofile
        self.name, self.stop_signal, self.ctx = server.name, server.stop_signal, server.ctx

    def argv(self, port, threads, workdir):
        return (["/usr/bin/prlimit", "--nofile=%d:%d" % (self.nofile, self.nofile), "--"]
                + self.server.argv(port, threads, workdir))

    def env(self):
        return self.server.env()


def probe_loop(port, seconds):
    """Sequential /hello probes from new connections for `seconds`; returns
    the summary. Runs in its own process (--probe), so that the load this
    script generates cannot delay the probes it measures (the GIL)."""
    lat, failed = [], 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            status, body, t = measure.http_get(HOST, port, "/hello", PROBE_TIMEOUT)
            ok = status == 200 and body == b"Hello, world!"
        except (OSError, ValueError, IndexError):
            ok, t = False, PROBE_TIMEOUT
        lat.append(t)
        failed += not ok
        time.sleep(PROBE_GAP)
    lat = sorted(lat) or [float("nan")]
    return {"probes": len(lat), "failed": failed,
            "p50_ms": statistics.median(lat) * 1000, "max_ms": lat[-1] * 1000}


class Prober:
    """probe_loop in a child process."""

    def __init__(self, port, seconds):
        self.proc = procs.spawn([sys.executable, os.path.abspath(__file__), "--probe",
                                 "%d:%f" % (port, seconds)], stdout=subprocess.PIPE)

    def result(self):
        try:
            out, _ = self.proc.communicate(timeout=PROBE_TIMEOUT * 4 + 60)
            return json.loads(out)
        except (subprocess.TimeoutExpired, ValueError) as e:
            return {"skipped": "probe failed: %s" % e}
        finally:
            procs.stop(self.proc, grace=1.0)


def open_nb(port):
    s = socket.socket()
    s.setblocking(False)
    try:
        s.connect((HOST, port))
    except BlockingIOError:
        pass
    except OSError:
        s.close()
        return None
    return s


def is_closed(s):
    try:
        return s.recv(4096) == b""
    except BlockingIOError:
        return False
    except OSError as e:
        return e.errno not in (errno.EAGAIN, errno.ENOTCONN)


def part_slowloris(run, hold):
    socks, reopened, t_end = [], 0, time.monotonic() + hold + 0.5
    with measure.RssSampler(run.proc.pid) as rss:
        for _ in range(SLOWLORIS):
            s = open_nb(run.port)
            if s:
                socks.append([s, 0])
        time.sleep(0.5)
        prober = Prober(run.port, t_end - time.monotonic())
        while time.monotonic() < t_end:
            for entry in socks:
                s, sent = entry
                if s is None or is_closed(s):
                    if s is not None:
                        s.close()
                    entry[0], entry[1] = open_nb(run.port), 0
                    reopened += 1
                    continue
                line = b"GET /hello HTTP/1.1\r\nHost: x\r\n" if sent == 0 else b"X-a: b\r\n"
                try:
                    s.send(line)
                    entry[1] += 1
                except (BlockingIOError, OSError):
                    pass
            time.sleep(1.0)
        res = prober.result()
    for s, _ in socks:
        if s:
            s.close()
    res.update({"rss_mb": rss.peak / 1e6, "reopened": reopened})
    return res


def part_nonreaders(run, hold):
    socks = []
    with measure.RssSampler(run.proc.pid) as rss:
        for _ in range(NONREADERS):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            s.settimeout(5)
            try:
                s.connect((HOST, run.port))
                s.sendall(b"GET /gen HTTP/1.1\r\nHost: x\r\n\r\n")
                socks.append(s)
            except OSError:
                s.close()
        res = Prober(run.port, hold).result()
    for s in socks:
        s.close()
    res.update({"rss_mb": rss.peak / 1e6, "clients": len(socks)})
    return res


def part_stuck(run, threads):
    sleepers = []
    for _ in range(threads):
        s = socket.create_connection((HOST, run.port), 5)
        s.sendall(b"GET /sleep?s=%d HTTP/1.1\r\nHost: x\r\n\r\n" % STUCK_SLEEP)
        sleepers.append(s)
    time.sleep(0.5)
    out = [None] * STUCK_PROBES

    def one(i):
        try:
            status, _, t = measure.http_get(HOST, run.port, "/hello", STUCK_SLEEP + 2.0)
            out[i] = (status, t)
        except (OSError, ValueError, IndexError) as e:
            out[i] = ("error: %s" % e.__class__.__name__, STUCK_SLEEP + 2.0)

    ts = [threading.Thread(target=one, args=(i,)) for i in range(STUCK_PROBES)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(STUCK_SLEEP + 5)
    for s in sleepers:
        s.close()
    statuses = {}
    for status, t in out:
        statuses.setdefault(str(status), []).append(t * 1000)
    return {"outcomes": {k: {"count": len(v), "max_ms": max(v)} for k, v in statuses.items()}}


def describe_stuck(r):
    if not r or "outcomes" not in r:
        return r.get("skipped", "-") if r else "-"
    parts = []
    for status, o in sorted(r["outcomes"].items()):
        what = {"200": "queued, then 200", "503": "503"}.get(status, status)
        parts.append("%d× %s in ≤ %.0f ms" % (o["count"], what, o["max_ms"]))
    return "; ".join(parts)


def fmt_probe(r):
    if not r or "p50_ms" not in r:
        return r.get("skipped", "-") if r else "-", "-"
    lat = "%.1f / %.0f ms" % (r["p50_ms"], r["max_ms"])
    return lat, "%d of %d" % (r["failed"], r["probes"])


def table(results):
    lines = ["| server | slowloris /hello p50 / max | failed | RSS | "
             "non-readers /hello p50 / max | failed | peak RSS | stuck workers: 5 × /hello |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        sl, nr = r.get("slowloris"), r.get("nonreaders")
        a, af = fmt_probe(sl)
        b, bf = fmt_probe(nr)
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            name, a, af, "%.0f MB" % sl["rss_mb"] if sl and "rss_mb" in sl else "-",
            b, bf, "%.0f MB" % nr["rss_mb"] if nr and "rss_mb" in nr else "-",
            describe_stuck(r.get("stuck"))))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", default=",".join(SERVERS))
    ap.add_argument("--part", default=",".join(PARTS))
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--hold", type=float, default=6.0, help="seconds of load per part")
    ap.add_argument("--zfront", default=os.environ.get("ZFRONT") or
                    os.path.join(os.path.dirname(HERE), "build", "zfront"))
    ap.add_argument("--zfront-arg", action="append", default=[])
    ap.add_argument("--json")
    ap.add_argument("--probe", help=argparse.SUPPRESS)  # PORT:SECONDS, internal
    args = ap.parse_args()
    if args.probe:
        port, seconds = args.probe.split(":")
        print(json.dumps(probe_loop(int(port), float(seconds))))
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tmp = tempfile.mkdtemp(prefix="zf-overload-")
    blob = os.path.join(tmp, "file.bin")
    with open(blob, "wb") as f:
        f.write(os.urandom(FILE_MB * 1000 * 1000))
    ctx = types.SimpleNamespace(blob=blob, bench_dir=HERE, zfront=args.zfront,
                                zfront_args=args.zfront_arg, tmp=tmp)
    classes = {cls.name: cls for cls in servers.ALL}
    results = {}
    try:
        for name in args.server.split(","):
            srv = classes[name](ctx)
            why = srv.missing()
            res = results.setdefault(srv.label, {})
            if why:
                res["skipped"] = why
                log("%s: skipped (%s)" % (name, why))
                continue
            for part in args.part.split(","):
                if part == "stuck" and name == "nginx":
                    res[part] = {"skipped": "n/a (no application workers)"}
                    continue
                definition = Limited(srv, SLOWLORIS_NOFILE) if part == "slowloris" else srv
                log("%s: %s" % (name, part))
                try:
                    with servers.Running(definition, args.threads) as run:
                        if part == "slowloris":
                            res[part] = part_slowloris(run, args.hold)
                        elif part == "nonreaders":
                            res[part] = part_nonreaders(run, args.hold)
                        else:
                            res[part] = part_stuck(run, args.threads)
                except Exception as e:  # a server that fails one part still gets a row
                    res[part] = {"skipped": "failed: %s" % str(e).splitlines()[0][:120]}
                log("  %s" % json.dumps(res[part])[:300])
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"params": {"slowloris": SLOWLORIS, "nofile": SLOWLORIS_NOFILE,
                                  "nonreaders": NONREADERS, "file_mb": FILE_MB,
                                  "threads": args.threads, "hold": args.hold},
                       "results": results, "table": table(results)}, f, indent=1)


if __name__ == "__main__":
    main()
