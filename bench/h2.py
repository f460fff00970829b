#!/usr/bin/python3
"""HTTP/2 benchmark: h2load against zfront, hypercorn and nginx, same static file.

  bench/h2.py                          full run (about 6 min)
  bench/h2.py --short                  smoke run (about 1 min)
  bench/h2.py --server zfront,nginx --scenario streams-tls --json out.json

Scenarios (each one h2load run of --seconds, after a warm-up):
  streams-tls   1 connection, 100 concurrent streams, h2 over TLS (ALPN)
  streams-h2c   the same over cleartext h2c (prior knowledge)
  conns-tls     50 connections x 4 streams each, h2 over TLS (new handshakes
                are not measured: h2load connects first, then counts)
  conns-h2c     the same over h2c
  big-tls       4 connections x 4 streams of a 10 MB file over TLS
                (throughput: flow control and DATA framing)

Every request fetches the same file (--size bytes, incompressible):
  zfront     bench/app.py's /blob (wsgi.file_wrapper: the worker hands the
             descriptor to the loop, which frames it) with --threads N
  hypercorn  Debian's python3-hypercorn 0.13 (ASGI only: a 20-line ASGI app
             that reads the file and sends it in 256 KiB chunks), 1 worker
  nginx      the file served statically (http2 module), worker_processes 1:
             the machine's reference for one event loop

TLS: one self-signed P-256 certificate for all three (made with the openssl
command line here; zfront can also make its own). Results: a markdown table
on stdout, and the raw numbers as JSON with --json FILE.

How the bench harness hooks it (bench/run is owned there): run
  /usr/bin/python3 bench/h2.py --zfront build/zfront [--short] --json F
and read F: {"params": {...}, "results": [{"server", "scenario", "rps",
"mbps", "succeeded", "failed", "errored", "mean_ms", "error"}, ...]}.
Needs: nghttp2-client (h2load), nginx (or nginx-light), python3-hypercorn,
openssl.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
sys.path.insert(0, BENCH_DIR)

from harness import procs  # noqa: E402  (spawn/stop by PID, process groups)

HOST = "127.0.0.1"
PY = "/usr/bin/python3"

SCENARIOS = {
    # name: (h2load clients, streams per client, tls, path)
    "streams-tls": (1, 100, True, "/blob"),
    "streams-h2c": (1, 100, False, "/blob"),
    "conns-tls": (50, 4, True, "/blob"),
    "conns-h2c": (50, 4, False, "/blob"),
    "big-tls": (4, 4, True, "/big"),
}

ASGI_APP = '''
import os
SMALL = os.environ["ZF_BENCH_FILE"]
BIG = os.environ["ZF_BENCH_BIG"]
CHUNK = 256 * 1024

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif m["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = {"/blob": SMALL, "/big": BIG}.get(scope["path"])
    if path is None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"Hello, world!"})
        return
    size = os.path.getsize(path)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream"),
                            (b"content-length", str(size).encode())]})
    with open(path, "rb") as f:
        while True:
            data = f.read(CHUNK)
            more = f.tell() < size
            await send({"type": "http.response.body", "body": data, "more_body": more})
            if not more:
                return
'''

ZF_APP = '''
import os
import app as bench_app
BIG = os.environ["ZF_BENCH_BIG"]

def application(environ, start_response):
    if environ["PATH_INFO"] == "/big":
        size = os.path.getsize(BIG)
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(size))])
        return environ["wsgi.file_wrapper"](open(BIG, "rb"), 262144)
    return bench_app.application(environ, start_response)
'''

NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {w}/nginx.pid;
error_log {w}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {w}/body;
    proxy_temp_path {w}/proxy;
    fastcgi_temp_path {w}/fastcgi;
    uwsgi_temp_path {w}/uwsgi;
    scgi_temp_path {w}/scgi;
    sendfile on;
    keepalive_requests 1000000;
    http2_max_requests 1000000;
    http2_max_concurrent_streams 128;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    server {{
        listen {host}:{tls_port} ssl http2 backlog=1024;
        listen {host}:{plain_port} http2 backlog=1024;
        location = /hello {{ default_type text/plain; return 200 "Hello, world!"; }}
        location = /blob {{ alias {blob}; default_type application/octet-stream; }}
        location = /big {{ alias {big}; default_type application/octet-stream; }}
    }}
}}
"""


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def make_file(path, size):
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            f.write(block[:min(left, len(block))])
            left -= len(block)
    os.chmod(path, 0o644)


class Server:
    """One server under test, listening on a TLS port and an h2c port."""

    name = ""

    def __init__(self, ctx):
        self.ctx = ctx
        self.tls_port = free_port()
        self.plain_port = free_port()
        self.workdir = os.path.join(ctx.tmp, self.name)
        os.makedirs(self.workdir, exist_ok=True)
        os.chmod(self.workdir, 0o755)
        self.log = os.path.join(self.workdir, "server.log")
        self.proc = None

    def missing(self):
        return None

    def env(self):
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "PYTHONHOME", "PYENV_VERSION")}
        env.update(ZF_BENCH_FILE=self.ctx.small, ZF_BENCH_BIG=self.ctx.big,
                   PYTHONDONTWRITEBYTECODE="1")
        return env

    def start(self):
        self.proc = procs.spawn(self.argv(), env=self.env(), cwd=self.workdir, log=self.log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited at start-up:\n%s" % (self.name, self.tail()))
            if self.ready():
                return
            time.sleep(0.2)
        raise RuntimeError("%s not ready after 30 s:\n%s" % (self.name, self.tail()))

    def ready(self):
        """Both ports answer a TLS handshake / a TCP connect."""
        try:
            socket.create_connection((HOST, self.plain_port), 1).close()
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            with socket.create_connection((HOST, self.tls_port), 1) as s:
                ctx.wrap_socket(s).close()
            return True
        except OSError:
            return False

    def stop(self):
        if self.proc is not None:
            procs.stop(self.proc, signal.SIGTERM)
            self.proc = None

    def tail(self, n=15):
        try:
            with open(self.log, "rb") as f:
                return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-n:])
        except OSError:
            return ""


class Zfront(Server):
    name = "zfront"

    def missing(self):
        z = self.ctx.zfront
        return None if z and os.access(z, os.X_OK) else "zfront binary not found at %s" % z

    def argv(self):
        with open(os.path.join(self.workdir, "zf_h2_bench_app.py"), "w") as f:
            f.write(ZF_APP)
        return [self.ctx.zfront, "--app", "zf_h2_bench_app:application",
                "--python-path", self.workdir, "--python-path", BENCH_DIR,
                "--http", "%s:%d" % (HOST, self.plain_port),
                "--https", "%s:%d" % (HOST, self.tls_port),
                "--cert", self.ctx.cert, "--key", self.ctx.key,
                "--threads", str(self.ctx.threads), "--access-log", "",
                "--set", "h2.max_concurrent_streams=128"] + self.ctx.zfront_args


class Hypercorn(Server):
    name = "hypercorn"

    def missing(self):
        if shutil.which("hypercorn") is None:
            return "hypercorn not found (Debian package python3-hypercorn)"
        return None

    def argv(self):
        with open(os.path.join(self.workdir, "zf_h2_asgi.py"), "w") as f:
            f.write(ASGI_APP)
        return [PY, "-m", "hypercorn", "--workers", "1", "--certfile", self.ctx.cert,
                "--keyfile", self.ctx.key, "--bind", "%s:%d" % (HOST, self.tls_port),
                "--insecure-bind", "%s:%d" % (HOST, self.plain_port),
                "--keep-alive", "600", "zf_h2_asgi:app"]


class Nginx(Server):
    name = "nginx"

    def missing(self):
        return None if os.path.exists("/usr/sbin/nginx") else "nginx not found (Debian nginx)"

    def argv(self):
        conf = os.path.join(self.workdir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(w=self.workdir, host=HOST, tls_port=self.tls_port,
                                      plain_port=self.plain_port, blob=self.ctx.small,
                                      big=self.ctx.big, cert=self.ctx.cert, key=self.ctx.key))
        return ["/usr/sbin/nginx", "-p", self.workdir, "-c", conf, "-e",
                os.path.join(self.workdir, "error.log")]


SERVERS = {cls.name: cls for cls in (Zfront, Hypercorn, Nginx)}

FINISHED = re.compile(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s, ([\d.]+)([KMG]?B)/s")
REQUESTS = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                      r"(\d+) failed, (\d+) errored, (\d+) timeout")
REQ_TIME = re.compile(r"time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+"
                      r"([\d.]+)(us|ms|s)")
UNIT = {"B": 1e-6, "KB": 1e-3, "MB": 1.0, "GB": 1e3}
TIME = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def h2load(server, scenario, ctx):
    clients, streams, tls, path = SCENARIOS[scenario]
    port = server.tls_port if tls else server.plain_port
    url = "%s://%s:%d%s" % ("https" if tls else "http", HOST, port, path)
    threads = min(clients, ctx.client_threads)
    seconds = ctx.seconds if path != "/big" else max(ctx.seconds, 3)
    argv = ["h2load", "-c", str(clients), "-m", str(streams), "-t", str(threads),
            "-D", str(seconds), "--warm-up-time", "1", "-w", "30", "-W", "30", url]
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
        out = p.stdout
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
    res = {"server": server.name, "scenario": scenario, "clients": clients,
           "streams": streams, "tls": tls, "path": path, "rps": None, "mbps": None,
           "succeeded": 0, "failed": 0, "errored": 0, "mean_ms": None, "error": None}
    m = FINISHED.search(out)
    r = REQUESTS.search(out)
    if not m or not r:
        res["error"] = "h2load: " + (out.strip().splitlines() or ["no output"])[-1][:200]
        return res
    res["rps"] = float(m.group(3))
    res["mbps"] = float(m.group(4)) * UNIT[m.group(5)]
    res["succeeded"], res["failed"], res["errored"] = (int(r.group(4)), int(r.group(5)),
                                                       int(r.group(6)))
    t = REQ_TIME.search(out)
    if t:
        res["mean_ms"] = float(t.group(5)) * TIME[t.group(6)]
    if res["failed"] or res["errored"]:
        res["error"] = "%d failed, %d errored" % (res["failed"], res["errored"])
    return res


def table(results, servers, scenarios):
    lines = ["| scenario | " + " | ".join(servers) + " |",
             "|---|" + "---|" * len(servers)]
    for sc in scenarios:
        cells = []
        for name in servers:
            r = next((x for x in results if x["server"] == name and x["scenario"] == sc), None)
            if r is None:
                cells.append("-")
            elif r["rps"] is None:
                cells.append("error: %s" % r["error"])
            else:
                cell = "%.0f req/s, %.0f MB/s" % (r["rps"], r["mbps"])
                if r["mean_ms"] is not None:
                    cell += ", %.1f ms" % r["mean_ms"]
                if r["error"]:
                    cell += " (%s)" % r["error"]
                cells.append(cell)
        clients, streams, tls, path = SCENARIOS[sc]
        label = "%s (%d conn x %d streams, %s %s)" % (sc, clients, streams,
                                                      "h2" if tls else "h2c", path)
        lines.append("| %s | %s |" % (label, " | ".join(cells)))
    return "\n".join(lines)


class Ctx:
    pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--zfront", default=os.path.join(REPO, "build", "zfront"))
    ap.add_argument("--zfront-arg", action="append", default=[],
                    help="extra argument for zfront (repeat)")
    ap.add_argument("--server", default="zfront,hypercorn,nginx")
    ap.add_argument("--scenario", default=",".join(SCENARIOS))
    ap.add_argument("--short", action="store_true", help="3 s per run instead of 10 s")
    ap.add_argument("--seconds", type=int, default=None)
    ap.add_argument("--size", type=int, default=16 * 1024, help="static file size (bytes)")
    ap.add_argument("--threads", type=int, default=4, help="zfront worker threads")
    ap.add_argument("--client-threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--json", help="write the raw results here")
    args = ap.parse_args()
    if shutil.which("h2load") is None:
        sys.exit("h2load not found (Debian package nghttp2-client)")

    ctx = Ctx()
    ctx.zfront = os.path.abspath(args.zfront)
    ctx.zfront_args = args.zfront_arg
    ctx.threads = args.threads
    ctx.client_threads = args.client_threads
    ctx.seconds = args.seconds or (3 if args.short else 10)
    servers = [s for s in args.server.split(",") if s]
    scenarios = [s for s in args.scenario.split(",") if s]
    for s in servers:
        if s not in SERVERS:
            sys.exit("unknown server %s (have: %s)" % (s, ", ".join(SERVERS)))
    for s in scenarios:
        if s not in SCENARIOS:
            sys.exit("unknown scenario %s (have: %s)" % (s, ", ".join(SCENARIOS)))

    results = []
    with tempfile.TemporaryDirectory(prefix="zf-h2bench-") as tmp:
        os.chmod(tmp, 0o755)
        ctx.tmp = tmp
        ctx.small = os.path.join(tmp, "blob.bin")
        ctx.big = os.path.join(tmp, "big.bin")
        make_file(ctx.small, args.size)
        make_file(ctx.big, 10 * 1000 * 1000)
        ctx.cert = os.path.join(tmp, "cert.pem")
        ctx.key = os.path.join(tmp, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=localhost",
                        "-days", "2", "-keyout", ctx.key, "-out", ctx.cert],
                       check=True, capture_output=True)
        os.chmod(ctx.key, 0o644)
        try:
            for name in servers:
                srv = SERVERS[name](ctx)
                why = srv.missing()
                if why:
                    log("skipping %s: %s" % (name, why))
                    for sc in scenarios:
                        results.append({"server": name, "scenario": sc, "rps": None,
                                        "mbps": None, "error": "skipped: " + why})
                    continue
                log("starting %s" % name)
                srv.start()
                try:
                    for sc in scenarios:
                        log("%s: %s" % (name, sc))
                        r = h2load(srv, sc, ctx)
                        if not srv.proc or srv.proc.poll() is not None:
                            r["error"] = (r["error"] or "") + " (server died)"
                        results.append(r)
                        log("  -> %s" % ("%.0f req/s %.1f MB/s" % (r["rps"], r["mbps"])
                                         if r["rps"] is not None else r["error"]))
                finally:
                    srv.stop()
        finally:
            procs.stop_all()
    params = {"size": args.size, "seconds": ctx.seconds, "zfront_threads": args.threads,
              "client_threads": ctx.client_threads, "cpus": os.cpu_count(),
              "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    print("HTTP/2 (h2load), %d-byte static file, %d s per run, zfront --threads %d, "
          "%s CPUs\n" % (args.size, ctx.seconds, args.threads, os.cpu_count()))
    print(table(results, servers, scenarios))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"params": params, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
