#!/usr/bin/python3
"""The bus hop: publish in instance A -> WebSocket client of instance B, over zfront's
ZeroMQ bus and, side by side in the same run, over Redis pub/sub.

  bench/bus.py                  full run (~3-4 min): 3 rounds of each way: latency at 1,000
                                msg/s, load at 5,000 msg/s, a burst of 200,000 messages
  bench/bus.py --short          smoke run (< 1 min): small counts, one round
  bench/bus.py --mode bus --latency-rate 5000 --burst 500000
  bench/bus.py --zfront-arg=--ws-max-send-buffer=64m     (a flag for every instance)

zfront instances on loopback run the same bench app (written into the temp dir):

  bus    A and B started with --bus-dir DIR --instance-name A|B; the app in A calls
         zfront.publish("bench", {"i": I, "t": time.time()}): the bus carries it to B.
  redis  A and B without the bus; the app in A calls redis.publish("bench", json) (one
         python3-redis round trip per message, as an app does), a Python thread in B reads
         the subscription and calls zfront.publish locally. redis-server (Debian) is started
         here on a unix socket in the temp dir, stopped by PID.
  local  one instance, publishing and subscribed: no hop at all, the floor to read the two
         hops against.

The publisher is the C load client bench/wsload.c in its HTTP mode: keep-alive requests
`GET /pub?i=FIRST&n=COUNT` to A, each publishing COUNT messages in one app call, so neither
HTTP nor the client limits the hop. The subscriber is wsload on B (--subs WebSocket
connections to topic "bench"); each message's "t" is taken right before the publish call,
so its latency is the hop itself: app in A -> (bus | Redis + Python relay) -> B's hub ->
WebSocket frame read by the client. messages/s = messages received by one B client /
(last receipt - first publish request). The CPU seconds of A, B, redis-server and of the
load client (both wsload processes) are reported per phase. Every part is bounded in count
and time, loopback only; each process is stopped by its PID.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)

# The bench app. BUSBENCH_MODE: "bus" (publish with zfront.publish) or "redis" (publish to
# Redis; with BUSBENCH_RELAY=1 a thread relays the Redis channels into zfront.publish).
APP = r'''
import json, os, threading, time, zfront
from urllib.parse import parse_qs

MODE = os.environ["BUSBENCH_MODE"]
warm_seen = []

if MODE == "redis":
    import redis
    r = redis.Redis(unix_socket_path=os.environ["BUSBENCH_REDIS"])

    def publish(topic, data):
        r.publish(topic, json.dumps(data))

    def relay():
        p = redis.Redis(unix_socket_path=os.environ["BUSBENCH_REDIS"]).pubsub(
            ignore_subscribe_messages=True)
        p.subscribe("bench", "warm")
        for m in p.listen():
            zfront.publish(m["channel"].decode(), json.loads(m["data"]))

    if os.environ.get("BUSBENCH_RELAY") == "1":
        threading.Thread(target=relay, name="redis-relay", daemon=True).start()
else:
    publish = zfront.publish


def on_warm(topic, data):
    warm_seen.append(data)


zfront.subscribe("warm", on_warm)


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/ws":
        start_response("200 OK", [("Content-Length", "0"), ("Zfront-Topics", "bench")])
        return [b""]
    if path == "/pub":
        q = parse_qs(environ["QUERY_STRING"])
        first, n = int(q["i"][0]), int(q["n"][0])
        topic = q.get("topic", ["bench"])[0]
        for i in range(first, first + n):
            publish(topic, {"i": i, "t": time.time()})
        start_response("200 OK", [("Content-Length", "0")])
        return [b""]
    if path == "/stats":  # the bus's counters (None without the bus)
        body = json.dumps(zfront.bus_stats() if hasattr(zfront, "bus_stats") else None).encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    if path == "/warm":  # how many "warm" events reached this instance's listener
        body = str(len(warm_seen)).encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    start_response("404 Not Found", [("Content-Length", "0")])
    return [b""]
'''


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_port(port, proc, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("process %d exited with %s" % (proc.pid, proc.returncode))
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listens on port %d" % port)


def get(port, path):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as r:
        return r.read().decode()


def build_wsload(tmp):
    exe = os.path.join(tmp, "wsload")
    subprocess.run(["gcc", "-O2", "-Wall", "-o", exe, os.path.join(BENCH, "wsload.c"), "-lssl",
                    "-lcrypto", "-lnghttp2"], check=True)
    return exe


def start_redis(tmp):
    sock = os.path.join(tmp, "redis.sock")
    # pub/sub clients' output buffer unlimited: a relay that falls behind in a burst is
    # slowed, not disconnected (Redis's default would drop it at 32 MB behind).
    proc = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", sock,
                             "--save", "", "--appendonly", "no", "--dir", tmp,
                             "--client-output-buffer-limit", "pubsub 0 0 0",
                             "--logfile", os.path.join(tmp, "redis.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not os.path.exists(sock):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise RuntimeError("redis-server did not start (see %s/redis.log)" % tmp)
        time.sleep(0.05)
    return proc, sock


def start_instance(tmp, zfront, mode, name, redis_sock, threads, extra):
    port = free_port()
    env = dict(os.environ, BUSBENCH_MODE=mode, BUSBENCH_REDIS=redis_sock or "",
               BUSBENCH_RELAY="1" if name == "B" else "0")
    cmd = [zfront, "--app", "busbenchapp:application", "--python-path", tmp,
           "--http", "127.0.0.1:%d" % port, "--threads", str(threads), "--tmp-dir", tmp,
           "--access-log", "", "--error-log", os.path.join(tmp, "zf-%s-%s.log" % (mode, name))]
    cmd += extra
    if mode == "bus":
        cmd += ["--bus-dir", os.path.join(tmp, "bus"), "--instance-name", name]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
    except Exception:
        stop(proc)
        raise
    return proc, port


def warm_up(a_port, b_port, timeout):
    """Publishes "warm" events in A until B's listener got one: the path A -> B is up
    (the bus peers have connected, the Redis relay has subscribed). Returns the seconds
    it took."""
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < timeout:
        get(a_port, "/pub?topic=warm&i=%d&n=1" % i)
        i += 1
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            if int(get(b_port, "/warm")) > 0:
                return time.monotonic() - t0
            time.sleep(0.02)
    raise RuntimeError("no warm-up event reached B in %.0f s" % timeout)


def run_phase(wsload, procs, a_port, b_port, phase, count, rate, batch, conns, subs, timeout):
    sub = subprocess.Popen([wsload, "--port", str(b_port), "--subs", str(subs), "--expect",
                            str(count), "--idle", "10", "--timeout", str(timeout)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    pub = None
    try:
        line = sub.stdout.readline().split()
        if line != ["ready", str(subs)]:
            raise RuntimeError("subscriber on B did not get ready: %r" % line)
        cpu0 = {k: cpu_s(p.pid) for k, p in procs.items()}
        bus0 = [json.loads(get(port, "/stats")) for port in (a_port, b_port)]
        pub = subprocess.Popen([wsload, "--port", str(a_port), "--http-pub", "/pub",
                                "--pub-rate", str(rate), "--pub-seconds", str(count / rate),
                                "--batch", str(batch), "--conns", str(conns), "--timeout",
                                str(timeout)], stdout=subprocess.PIPE, text=True)
        p = json.loads(pub.communicate(timeout=timeout + 10)[0].strip().splitlines()[-1])
        s = json.loads(sub.stdout.readline())  # all expected, 10 s idle, or --timeout
        sub.communicate(timeout=10)
        cpu = {k: cpu_s(pr.pid) - cpu0[k] for k, pr in procs.items()}
        bus1 = [json.loads(get(port, "/stats")) for port in (a_port, b_port)]
        deadline = time.monotonic() + 5  # the client may have ended before B got them all
        while (bus1[1] and bus1[1]["received"] - bus0[1]["received"] <
               bus1[0]["sent"] - bus0[0]["sent"] and time.monotonic() < deadline):
            time.sleep(0.1)
            bus1[1] = json.loads(get(b_port, "/stats"))
        probe = None
        if bus1[1]:
            # Messages lost at the end of a burst show as a gap only when a later message
            # of the same origin arrives: a probe (topic "warm") follows each phase.
            warm0 = int(get(b_port, "/warm"))
            get(a_port, "/pub?topic=warm&i=-1&n=1")
            deadline = time.monotonic() + 5
            while int(get(b_port, "/warm")) == warm0 and time.monotonic() < deadline:
                time.sleep(0.05)
            probe = int(get(b_port, "/warm")) > warm0
            bus1[1] = json.loads(get(b_port, "/stats"))
    finally:
        for proc in (sub, pub):
            if proc and proc.poll() is None:
                proc.kill()
                proc.wait()
    elapsed = max(1e-9, s["last_rx"] - p["pub_start"])
    per_client = s["received"] / max(1, s["subscribed"])
    row = {"phase": phase, "offered_rate": rate, "batch": batch, "conns": conns,
           "subs": s["subscribed"], "subs_closed": s["closed"], "sent": p["sent"],
           "acked": p["acked"], "requests": p["requests"], "http_bad": p["bad"],
           "received": s["received"], "expected": p["sent"] * s["subscribed"], "bad": s["bad"],
           "msgs_per_s": per_client / elapsed, "p50_ms": s["p50_ms"], "p99_ms": s["p99_ms"],
           "max_ms": s["max_ms"], "samples": s["samples"], "elapsed_s": elapsed,
           "client_cpu_s": s["cpu_s"] + p["cpu_s"], "pub_cpu_s": p["cpu_s"],
           "sub_cpu_s": s["cpu_s"]}
    for k, v in cpu.items():
        row["cpu_%s_s" % k] = v
    if bus0[0] and bus1[1]:  # what the bus itself carried: A sent, B received or missed
        row["bus_sent"] = bus1[0]["sent"] - bus0[0]["sent"]
        for k in ("received", "missed", "duplicates", "dropped_malformed"):
            row["bus_" + k] = bus1[1][k] - bus0[1][k]
        row["bus_received"] -= probe  # the probe's own arrival
        row["bus_probe_arrived"] = probe
    return row


def run_mode(a, wsload, tmp, zfront, mode, redis_proc, redis_sock, phases):
    procs = {}
    rows = []
    try:
        for name in ("A",) if mode == "local" else ("A", "B"):
            procs[name], port = start_instance(tmp, zfront, mode, name, redis_sock,
                                               a.threads if name == "A" else 2,
                                               a.zfront_arg)
            procs[name].port = port
        if redis_proc:
            procs["redis"] = redis_proc
        b_port = procs["B"].port if "B" in procs else procs["A"].port  # local: B is A
        warm = warm_up(procs["A"].port, b_port, a.timeout)
        for phase, count, rate, batch, conns in phases:
            row = run_phase(wsload, procs, procs["A"].port, b_port, phase, count,
                            rate, batch, conns, a.subs, a.timeout)
            row.update(mode=mode, warm_up_s=warm)
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        for name in ("A", "B"):
            if name in procs:
                stop(procs[name])
    return rows


def bus_cell(r):
    """What the bus carried in a phase: B received / A sent, and the gaps B saw."""
    if "bus_sent" not in r:
        return "-"
    cell = "%d/%d" % (r["bus_received"], r["bus_sent"])
    if r["bus_missed"]:
        cell += " (%d missed)" % r["bus_missed"]
    if not r.get("bus_probe_arrived", True):
        cell += " (probe lost)"
    return cell


def table(rows):
    cols = ["round", "way", "phase", "offered msg/s", "received/sent", "client closed",
            "bus B got/A sent", "msg/s", "p50 ms", "p99 ms", "max ms", "A CPU s", "B CPU s",
            "redis CPU s", "client CPU s", "elapsed s"]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]

    def opt(r, k, fmt="%.2f"):
        return fmt % r[k] if k in r else "-"

    for r in rows:
        cells = [r["round"], r["mode"], r["phase"],
                 "max" if r["phase"] == "burst" else "%.0f" % r["offered_rate"],
                 "%d/%d" % (r["received"], r["expected"]), "yes" if r["subs_closed"] else "no",
                 bus_cell(r),
                 "%.0f" % r["msgs_per_s"], "%.2f" % r["p50_ms"], "%.2f" % r["p99_ms"],
                 "%.1f" % r["max_ms"], opt(r, "cpu_A_s"), opt(r, "cpu_B_s"),
                 opt(r, "cpu_redis_s"), "%.2f" % r["client_cpu_s"], "%.2f" % r["elapsed_s"]]
        out.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(out)


def summary(rows):
    """Medians over the rounds per way and phase, and how many rounds met each target
    (bus p99 below Redis's, bus msg/s at least Redis's): the machine's noise shows."""
    ways = list(dict.fromkeys(r["mode"] for r in rows))
    phases = list(dict.fromkeys(r["phase"] for r in rows))
    by = {(r["mode"], r["phase"], r["round"]): r for r in rows}
    rounds = sorted(set(r["round"] for r in rows))
    out = ["| phase | " + " | ".join("%s msg/s, p50 / p99 ms" % w for w in ways) + " |",
           "|---|" + "---|" * len(ways)]
    for ph in phases:
        cells = []
        for w in ways:
            rs = [by[(w, ph, n)] for n in rounds if (w, ph, n) in by]
            lost = sum(r["expected"] - r["received"] for r in rs)
            cells.append("%.0f, %.2f / %.2f%s" % (
                statistics.median(r["msgs_per_s"] for r in rs),
                statistics.median(r["p50_ms"] for r in rs),
                statistics.median(r["p99_ms"] for r in rs),
                " (%d not received)" % lost if lost else ""))
        out.append("| %s | %s |" % (ph, " | ".join(cells)))
    if "bus" in ways and "redis" in ways:
        out.append("")
        for ph in phases:
            pairs = [(by[("bus", ph, n)], by[("redis", ph, n)]) for n in rounds
                     if ("bus", ph, n) in by and ("redis", ph, n) in by]
            whole = [(b, r) for b, r in pairs if b["received"] == b["expected"]]
            lower = sum(b["p99_ms"] < r["p99_ms"] for b, r in whole)
            line = "- %s: bus p99 below Redis's in %d of %d rounds" % (ph, lower, len(pairs))
            if len(whole) < len(pairs):
                line += " (%d round(s) where B's client did not get every message count as " \
                        "not met)" % (len(pairs) - len(whole))
            if ph == "burst":
                faster = sum(b["msgs_per_s"] >= r["msgs_per_s"] for b, r in whole)
                line += "; bus msg/s >= Redis's with every message received in %d of %d" % (
                    faster, len(pairs))
            out.append(line)
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--short", action="store_true", help="smoke run, < 1 min")
    ap.add_argument("--mode", default="redis,bus,local",
                    help="ways to carry the messages, in order (local: no hop, the floor)")
    ap.add_argument("--latency-rate", type=float, help="msg/s of the latency phase (1000)")
    ap.add_argument("--latency-seconds", type=float, help="length of the latency phase (5)")
    ap.add_argument("--load-rate", type=float, help="msg/s of the load phase (5000)")
    ap.add_argument("--load-seconds", type=float, help="length of the load phase (5)")
    ap.add_argument("--burst", type=int, help="messages of the throughput phase (200000)")
    ap.add_argument("--batch", type=int, default=100, help="messages per request in the burst")
    ap.add_argument("--conns", type=int, default=4, help="publisher connections in the burst")
    ap.add_argument("--threads", type=int, default=4, help="worker threads of A")
    ap.add_argument("--subs", type=int, default=1, help="WebSocket clients on B")
    ap.add_argument("--rounds", type=int, help="rounds of all ways (full 3, short 1)")
    ap.add_argument("--timeout", type=float, default=60, help="bound of each phase, seconds")
    ap.add_argument("--results", default=os.path.join(BENCH, "results"),
                    help="directory for bus-<date>-<time>[-short].{md,json}; '' for none")
    ap.add_argument("--zfront-arg", action="append", default=[],
                    help="an extra flag for both instances (--zfront-arg=--ws-max-send-buffer=8m)")
    ap.add_argument("--logs", help="copy the instances' error logs into this directory")
    ap.add_argument("--render", help="re-print (and rewrite the .md of) a run's .json, run nothing")
    ap.add_argument("--zfront", default=os.environ.get("ZFRONT",
                                                       os.path.join(REPO, "build", "zfront")))
    a = ap.parse_args()
    # SIGTERM (a test stopping the run) unwinds: every process is stopped, the temp dir removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if a.render:
        with open(a.render) as f:
            run = json.load(f)
        write_md(a.render[:-len(".json")], run["argv"], run["started_utc"], run["rows"])
        return 0
    lat_rate = a.latency_rate or (200 if a.short else 1000)
    lat_s = a.latency_seconds or (2 if a.short else 5)
    load_rate = a.load_rate or (1000 if a.short else 5000)
    load_s = a.load_seconds or (1 if a.short else 5)
    burst = a.burst or (5000 if a.short else 200000)
    if a.short:
        a.timeout = min(a.timeout, 20)
    a.rounds = a.rounds or (1 if a.short else 3)
    phases = [("latency", int(lat_rate * lat_s), lat_rate, 1, 2),
              ("load", int(load_rate * load_s), load_rate, 10, 2),
              ("burst", burst, burst * 100.0, a.batch, a.conns)]  # as fast as it goes
    modes = a.mode.split(",")
    started = time.strftime("%Y-%m-%d-%H%M", time.gmtime())
    load0 = os.getloadavg()[0]
    commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
    rows = []
    with tempfile.TemporaryDirectory(prefix="zf-busbench-") as tmp:
        with open(os.path.join(tmp, "busbenchapp.py"), "w") as f:
            f.write(APP)
        wsload = build_wsload(tmp)
        redis_proc, redis_sock = start_redis(tmp) if "redis" in modes else (None, None)
        try:
            for rnd in range(1, a.rounds + 1):  # the ways alternate: both see the same noise
                for mode in modes:
                    got = run_mode(a, wsload, tmp, a.zfront, mode,
                                   redis_proc if mode == "redis" else None, redis_sock, phases)
                    for row in got:
                        row["round"] = rnd
                    rows += got
        finally:
            if redis_proc:
                stop(redis_proc)
            if a.logs:
                os.makedirs(a.logs, exist_ok=True)
                for f in os.listdir(tmp):
                    if f.endswith(".log"):
                        shutil.copy(os.path.join(tmp, f), a.logs)
    if a.results:
        base = os.path.join(a.results, "bus-%s%s" % (started, "-short" if a.short else ""))
        with open(base + ".json", "w") as f:
            json.dump({"argv": sys.argv[1:], "started_utc": started, "commit": commit.strip(),
                       "loadavg_1min": [load0, os.getloadavg()[0]], "rows": rows}, f, indent=1)
        write_md(base, sys.argv[1:], started, rows)
    else:
        write_md(None, sys.argv[1:], started, rows)
    return 0


def write_md(base, argv, started, rows):
    """Prints the report; with base, also writes it to base.md."""
    report = table(rows) + "\n\nMedians over the rounds:\n\n" + summary(rows)
    print("\n" + report)
    if base:
        with open(base + ".md", "w") as f:
            f.write("# bench/bus.py %s (UTC %s)\n\n%s\n" % (" ".join(argv), started, report))
        print("wrote %s.md" % base)


if __name__ == "__main__":
    sys.exit(main())
