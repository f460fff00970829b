#!/usr/bin/python3
"""WebSocket fan-out: one publisher -> N subscribers, zfront side by side with
python3-websockets and Autobahn/Twisted broadcast servers doing the same job, in one run.

  bench/ws_fanout.py                         N = 100, 1000; ws://
  bench/ws_fanout.py --n 10000 --deliveries 300000
  bench/ws_fanout.py --server zfront --n 100 --rate 20   (light load: latency)
  bench/ws_fanout.py --h2 --streams 10       zfront over HTTP/2 (RFC 8441), 10 WebSockets
                                             per connection; the peers over wss:// (HTTP/1.1)

For each server and N: messages delivered per second (all subscribers),
publish-to-receive latency p50/p99, server RSS growth per idle subscribed
connection, server CPU seconds during the publishing, and the load client's
CPU seconds (so a client-bound figure is visible as such).

The load client is bench/wsload.c (C, epoll, many sockets per process; compiled
here with gcc into the temp dir): --procs subscriber processes hold the N
connections, one publisher process sends `rate` messages per second (default:
deliveries / N / seconds), each carrying its send time. Every part is bounded
(wsload --timeout), loopback only, processes stopped by PID.

--h2 (implies --tls): zfront's subscribers and publisher speak WebSocket over HTTP/2
(extended CONNECT, h2 by ALPN; wsload --h2), --streams K WebSockets per HTTP/2 connection
(default 1). python3-websockets and Autobahn do not implement RFC 8441: their rows stay
wss:// over HTTP/1.1, for comparison. RSS per idle connection is then per stream.
"""
import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)

APP = '''
def application(environ, start_response):
    start_response("200 OK", [("Content-Length", "0"), ("Zfront-Topics", "bench"),
                              ("Zfront-Publish", "bench")])
    return [b""]
'''

PEER_WEBSOCKETS = r'''
import asyncio, json, sys, websockets
subs = set()
async def handler(ws, path=None):
    try:
        async for raw in ws:
            m = json.loads(raw)
            if m["type"] == "subscribe":
                subs.add(ws)
                await ws.send(json.dumps({"type": "subscribed", "topic": m["topic"]}))
            elif m["type"] == "publish":
                websockets.broadcast(subs, json.dumps({"type": "event", "topic": m["topic"],
                                                       "data": m["data"]}))
    finally:
        subs.discard(ws)
async def main():
    ctx = None
    if len(sys.argv) > 2:  # wss://: certificate and key
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(sys.argv[2], sys.argv[3])
    async with websockets.serve(handler, "127.0.0.1", int(sys.argv[1]), compression=None,
                                ping_interval=None, max_queue=None, ssl=ctx):
        print("ready", flush=True)
        await asyncio.Future()
asyncio.run(main())
'''


PEER_AUTOBAHN = r'''
import json, sys
from twisted.internet import epollreactor
epollreactor.install()
from twisted.internet import reactor
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
subs = set()
class Broadcast(WebSocketServerProtocol):
    def onMessage(self, payload, is_binary):
        m = json.loads(payload)
        if m["type"] == "subscribe":
            subs.add(self)
            self.sendMessage(json.dumps({"type": "subscribed", "topic": m["topic"]}).encode())
        elif m["type"] == "publish":
            msg = self.factory.prepareMessage(json.dumps(
                {"type": "event", "topic": m["topic"], "data": m["data"]}).encode())
            for s in subs:
                s.sendPreparedMessage(msg)
    def onClose(self, was_clean, code, reason):
        subs.discard(self)
port = int(sys.argv[1])
factory = WebSocketServerFactory("%s://127.0.0.1:%d" % ("wss" if len(sys.argv) > 2 else "ws",
                                                          port))
factory.protocol = Broadcast
factory.setProtocolOptions(autoPingInterval=0, openHandshakeTimeout=60)
if len(sys.argv) > 2:  # wss://: certificate and key
    from twisted.internet import ssl
    reactor.listenSSL(port, factory, ssl.DefaultOpenSSLContextFactory(sys.argv[3], sys.argv[2]),
                      backlog=1024, interface="127.0.0.1")
else:
    reactor.listenTCP(port, factory, backlog=1024, interface="127.0.0.1")
print("ready", flush=True)
reactor.run()
'''

PEERS = {"websockets": PEER_WEBSOCKETS, "autobahn": PEER_AUTOBAHN}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    return 0


def wait_port(port, proc, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not listen")


def make_cert(tmp):
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", cert], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cert, key


def start_zfront(tmp, port, n, tls=None, streams=1):
    with open(os.path.join(tmp, "wsbenchapp.py"), "w") as f:
        f.write(APP)
    cmd = [os.environ.get("ZFRONT", os.path.join(REPO, "build", "zfront")), "--app",
           "wsbenchapp:application", "--python-path", tmp]
    if tls:
        cmd += ["--https", "127.0.0.1:%d" % port, "--cert", tls[0], "--key", tls[1],
                "--http", "127.0.0.1:%d" % free_port()]
    else:
        cmd += ["--http", "127.0.0.1:%d" % port]
    # the default limit is 10,000 connections: N subscribers + the publisher
    cmd += ["--threads", "2", "--tmp-dir", tmp, "--max-connections", str(max(10000, n + 100)),
            "--error-log", os.path.join(tmp, "zf.log")]
    if streams > 128:  # h2.max_concurrent_streams: 128 by default
        cmd += ["--set", "h2.max_concurrent_streams=%d" % streams]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_peer(tmp, port, name, tls=None):
    path = os.path.join(tmp, "peer_%s.py" % name)
    with open(path, "w") as f:
        f.write(PEERS[name])
    return subprocess.Popen(["/usr/bin/python3", path, str(port)] + list(tls or ()),
                            stdout=subprocess.DEVNULL)


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def build_wsload(tmp):
    exe = os.path.join(tmp, "wsload")
    subprocess.run(["gcc", "-O2", "-Wall", "-o", exe, os.path.join(BENCH, "wsload.c"), "-lssl",
                    "-lcrypto", "-lnghttp2"], check=True)
    return exe


def run_one(wsload, name, proc, port, n, seconds, rate, procs, timeout, tls, streams=0):
    """streams: 0 for HTTP/1.1, else K WebSockets per HTTP/2 connection (wsload --h2)."""
    wsload = [wsload] + (["--tls"] if tls else []) + (["--h2"] if streams else [])
    base = rss_kib(proc.pid)
    total = max(1, int(seconds * rate))
    per = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
    h2_conns = sum(-(-k // streams) for k in per) if streams else 0
    subs = [subprocess.Popen(wsload + (["--streams", str(streams)] if streams else []) +
                             ["--port", str(port), "--subs", str(k), "--expect",
                              str(total), "--idle", "10", "--timeout", str(timeout)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            for k in per if k]
    try:
        connected = 0
        for s in subs:
            line = s.stdout.readline().split()
            if len(line) != 2 or line[0] != "ready":
                raise RuntimeError("subscriber did not get ready: %r" % line)
            connected += int(line[1])
        time.sleep(1.0)
        idle = rss_kib(proc.pid)
        cpu0 = cpu_s(proc.pid)
        pub = subprocess.Popen(wsload + ["--port", str(port), "--pub-rate", str(rate),
                                "--pub-seconds", str(seconds), "--timeout", str(timeout + 5),
                                "--hold"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True)
        subs.append(pub)  # killed below if anything goes wrong
        results = []
        for s in subs[:-1]:  # each ends by itself (all expected events, --idle, --timeout)
            results.append(json.loads(s.stdout.readline()))
            s.communicate(timeout=10)
        out, _ = pub.communicate(timeout=timeout + 10)  # closes its stdin: it stops
        p = json.loads(out.strip().splitlines()[-1])
        server_cpu = cpu_s(proc.pid) - cpu0
        peak = rss_kib(proc.pid)
    finally:
        for s in subs:
            if s.poll() is None:
                s.kill()
                s.wait()
    got = sum(r["received"] for r in results)
    last = max(r["last_rx"] for r in results)
    elapsed = max(1e-9, last - p["pub_start"])
    scheme = "wss" if tls else "ws"
    if streams:
        scheme = "h2 " + scheme + (" x %d streams/conn" % streams if streams > 1 else "")
    return {"server": name, "scheme": scheme, "n": n, "connected": connected,
            "transport": "h2" if streams else "http/1.1", "streams_per_conn": streams or 1,
            "h2_conns": h2_conns,
            "rate": rate, "sent": p["sent"],
            "received": got, "expected": p["sent"] * connected,
            "delivered_per_s": got / elapsed,
            # each subscriber process reports its own percentiles: the worst is shown
            "p50_ms": max(r["p50_ms"] for r in results),
            "p99_ms": max(r["p99_ms"] for r in results),
            "rss_idle_kib_per_conn": (idle - base) / max(1, connected),
            "rss_base_kib": base, "rss_idle_kib": idle, "rss_after_kib": peak,
            "server_cpu_s": server_cpu,
            "client_cpu_s": sum(r["cpu_s"] for r in results) + p["cpu_s"],
            "elapsed_s": elapsed}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, action="append")
    ap.add_argument("--seconds", type=float, default=2)
    ap.add_argument("--rate", type=float, help="publish rate (default: deliveries/N/seconds)")
    ap.add_argument("--deliveries", type=int, default=200000,
                    help="deliveries to ask for per run when --rate is not given")
    ap.add_argument("--procs", type=int, default=2, help="subscriber processes")
    ap.add_argument("--timeout", type=float, default=20, help="bound of each part, seconds")
    ap.add_argument("--server", default="zfront,websockets,autobahn")
    ap.add_argument("--json", help="also write the rows to this file")
    ap.add_argument("--tls", action="store_true", help="wss:// (a self-signed certificate)")
    ap.add_argument("--h2", action="store_true",
                    help="zfront over HTTP/2 (RFC 8441; implies --tls); the peers stay on wss://")
    ap.add_argument("--streams", type=int, default=1,
                    help="--h2: WebSockets per HTTP/2 connection (default 1)")
    a = ap.parse_args()
    if a.streams < 1 or (a.streams > 1 and not a.h2):
        ap.error("--streams K: K >= 1, with --h2")
    a.tls = a.tls or a.h2
    ns = a.n or [100, 1000]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    rows = []
    with tempfile.TemporaryDirectory(prefix="zf-wsbench-") as tmp:
        wsload = build_wsload(tmp)
        tls = make_cert(tmp) if a.tls else None
        for n in ns:
            for name in a.server.split(","):
                port = free_port()
                h2 = a.streams if a.h2 and name == "zfront" else 0
                proc = (start_zfront(tmp, port, n, tls, h2) if name == "zfront"
                        else start_peer(tmp, port, name, tls))
                rate = a.rate or a.deliveries / n / a.seconds
                try:
                    wait_port(port, proc)
                    rows.append(run_one(wsload, name, proc, port, n, a.seconds, rate, a.procs,
                                        a.timeout, tls, h2))
                finally:
                    proc.terminate()
                    try:
                        proc.wait(20)
                    except subprocess.TimeoutExpired:  # busy with its backlog: no mercy
                        proc.kill()
                        proc.wait(20)
                print(json.dumps(rows[-1]), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    if a.h2:
        print("\nzfront: WebSocket over HTTP/2 (RFC 8441 extended CONNECT, h2 by ALPN), %d "
              "WebSocket(s) per HTTP/2 connection (per subscriber process, the last one "
              "fewer); RSS per idle conn is per WebSocket (stream). python3-websockets and "
              "Autobahn do not implement RFC 8441: their rows are wss:// over HTTP/1.1."
              % a.streams)
    print("\n| server | N | msg/s published | delivered/expected | delivered/s | p50 ms | p99 ms "
          "| RSS KiB/idle conn | server CPU s | client CPU s | elapsed s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| %s %s | %d | %.0f | %d/%d | %.0f | %.1f | %.1f | %.1f | %.2f | %.2f | %.2f |" % (
            r["server"], r["scheme"], r["n"], r["rate"], r["received"], r["expected"],
            r["delivered_per_s"],
            r["p50_ms"], r["p99_ms"], r["rss_idle_kib_per_conn"], r["server_cpu_s"],
            r["client_cpu_s"], r["elapsed_s"]))


if __name__ == "__main__":
    sys.exit(main())
