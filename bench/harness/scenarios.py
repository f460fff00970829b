"""The scenarios of issue 3, each run against one started server.

  blob    1 + 2: N concurrent downloads of the file via wsgi.file_wrapper, and
          meanwhile sequential tiny-page probes; peak RSS (5)
  gen     2b: the same with the generated body (/gen)
  hello   3: wrk on the 13-byte page: req/s, p99; peak RSS (5); and a few
          probes from a new connection meanwhile (is every client served?)
  upload  4: N concurrent uploads of a file read whole by the app: total time
  h2      HTTP/2 (h2load), run once by bench/h2.py, which starts its own servers
  overload  issue 9: slowloris at ulimit 1024, 1,000 non-reading clients, stuck
          workers; run once by bench/overload.py, which starts its own servers
"""

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

from . import measure, procs
from .servers import HOST

ORDER = ["blob", "gen", "hello", "upload"]
PROBE_LIMIT = 120.0  # seconds of probing at most (a stalled server)
H2_LIMIT = 1200  # seconds bench/h2.py may take
OVERLOAD_LIMIT = 600  # seconds bench/overload.py may take


def _summary(client):
    """Throughput numbers from a loadclient result."""
    reqs = client.get("requests", [])
    wall = client.get("wall")
    ok = [r for r in reqs if r["ok"]]
    res = {"wall": wall, "requests": len(reqs), "ok": len(ok),
           "times": [round(r["time"], 4) for r in reqs]}
    if client.get("error"):
        res["failed"] = client["error"]
    elif len(ok) < len(reqs) or not reqs:
        errs = sorted({r["error"] for r in reqs if not r["ok"]})
        res["failed"] = "%d of %d requests failed: %s" % (
            len(reqs) - len(ok), len(reqs), "; ".join(errs)[:300])
    if wall:
        res["rps"] = len(ok) / wall
        res["mbps"] = sum(r["bytes"] for r in ok) / wall / 1e6
    if reqs:
        res["max_time"] = max(r["time"] for r in reqs)
        res["median_time"] = statistics.median(r["time"] for r in reqs)
    return res


def downloads(run, ctx, path):
    """Scenario 1 (path /blob) or 2b (path /gen), each with its probe (2)."""
    p = ctx.params
    prober = Prober(run, p["probes"], p["probe_gap"], p["probe_delay"], p["probe_timeout"])
    with measure.RssSampler(run.proc.pid) as rss:
        client = measure.run_loadclient("get", HOST, run.port, path, p["downloads"],
                                        p["downloads"], p["scenario_timeout"],
                                        on_started=prober.start)
        prober.join()
    res = _summary(client)
    res["rss_peak"] = rss.peak
    prober.store(res, "the downloads")
    return res


class Prober:
    """Tiny-page probes in a thread, started once a load process runs."""

    def __init__(self, run, count, gap, delay, timeout):
        self.run, self.count, self.gap, self.delay, self.timeout = run, count, gap, delay, timeout
        self.result, self.thread = {}, None

    def start(self, load_proc):
        def body():
            time.sleep(self.delay)
            self.result = measure.probe(HOST, self.run.port, self.count, self.gap, self.timeout,
                                        lambda: load_proc.poll() is None, PROBE_LIMIT)
        self.thread = threading.Thread(target=body, daemon=True)
        self.thread.start()

    def join(self):
        if self.thread:
            self.thread.join(self.delay + PROBE_LIMIT + self.timeout + 5)

    def store(self, res, load):
        """Puts the probe result (and a note on failed probes) into a scenario result.
        probe["during_load"] says how many ended while `load` still ran."""
        if not self.result:
            return
        res["probe"] = self.result
        if self.result["errors"]:
            res.setdefault("notes", []).append("%d probes failed" % self.result["errors"])


def blob(run, ctx):
    return downloads(run, ctx, "/blob")


def gen(run, ctx):
    return downloads(run, ctx, "/gen")


def hello(run, ctx):
    p = ctx.params
    url = "http://%s:%d/hello" % (HOST, run.port)
    # A few probes from a new connection while wrk runs: a server that serves
    # only some of wrk's connections (one per thread) makes newcomers wait.
    prober = Prober(run, p["hello_probes"], p["wrk_seconds"] / (2.0 * p["hello_probes"]),
                    p["wrk_seconds"] / 4.0, p["probe_timeout"])
    with measure.RssSampler(run.proc.pid) as rss:
        res = measure.run_wrk(url, p["wrk_threads"], p["wrk_conns"], p["wrk_seconds"],
                              on_started=prober.start)
        prober.join()
    res["rss_peak"] = rss.peak
    prober.store(res, "wrk")
    if res["rps"] is None:
        res["failed"] = "wrk gave no result: %r" % res["raw"][-300:]
    elif res["errors"] or res["non2xx"]:
        res.setdefault("notes", []).append("wrk: %d socket errors, %d non-2xx"
                                           % (res["errors"], res["non2xx"]))
    return res


def upload(run, ctx):
    p = ctx.params
    with measure.RssSampler(run.proc.pid) as rss:
        client = measure.run_loadclient("post", HOST, run.port, "/upload", p["uploads"],
                                        p["uploads"], p["scenario_timeout"], upload=ctx.upload)
    res = _summary(client)
    res["rss_peak"] = rss.peak
    return res


RUNNERS = {"blob": blob, "gen": gen, "hello": hello, "upload": upload}


def _run_script(ctx, name, extra, limit, log, servers):
    """Runs bench/<name>.py (its own servers) in its own session with
    --zfront, --json and --server, stopped by PID after `limit` seconds.
    Returns its JSON or {"skipped": why} with the tail of its log."""
    script = os.path.join(ctx.bench_dir, name + ".py")
    out = os.path.join(ctx.tmp, name + ".json")
    argv = [sys.executable, script, "--zfront", ctx.zfront, "--json", out,
            "--server", ",".join(servers)]
    argv += ["--zfront-arg=" + a for a in ctx.zfront_args] + extra
    logfile = os.path.join(ctx.tmp, name + ".log")
    proc = procs.spawn(argv, cwd=ctx.bench_dir, log=logfile)
    try:
        proc.wait(limit)
    except subprocess.TimeoutExpired:
        log("  %s: still running after %d s: stopped" % (name, limit))
    finally:
        procs.stop(proc, signal.SIGTERM)
    try:
        with open(out) as f:
            return json.load(f)
    except (OSError, ValueError):
        with open(logfile, "rb") as f:
            tail = f.read().decode("utf-8", "replace").strip().splitlines()[-5:]
        return {"skipped": "bench/%s.py gave no results: %s" % (name, " / ".join(tail))}


def run_h2(ctx, short, log, servers):
    """Runs bench/h2.py (the HTTP/2 issue's h2load comparison: zfront,
    hypercorn, nginx; its own servers, files and thread setting). Returns its
    JSON ({"params", "results"}) or {"skipped": why}."""
    if not os.path.exists(os.path.join(ctx.bench_dir, "h2.py")):
        return {"skipped": "bench/h2.py not present"}
    if shutil.which("h2load") is None:
        return {"skipped": "h2load not found (Debian package nghttp2-client)"}
    return _run_script(ctx, "h2", ["--short"] if short else [], H2_LIMIT, log, servers)


def run_overload(ctx, short, log, servers):
    """Runs bench/overload.py (issue 9: slowloris, non-readers, stuck workers;
    its own servers). Returns its JSON ({"params", "results", "table"}) or
    {"skipped": why}."""
    return _run_script(ctx, "overload", ["--hold", "3"] if short else [], OVERLOAD_LIMIT, log,
                       servers)
