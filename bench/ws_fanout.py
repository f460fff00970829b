#!/usr/bin/python3
"""WebSocket fan-out: one publisher -> N subscribers, zfront side by side with
a python3-websockets broadcast server doing the same job, in one run.

  bench/ws_fanout.py                     N = 100, 1000; 3 s of publishing each
  bench/ws_fanout.py --n 100 --seconds 2 --rate 200

For each server and N: messages delivered per second (all subscribers),
publish-to-receive latency p50/p99, server RSS per idle connection, and the
load clients' CPU time (so a client-bound figure is visible as such). The
load is K subscriber processes (asyncio + python3-websockets) and one
publisher sending `rate` messages per second, each carrying its send time.

Uses /usr/bin/python3's stdlib and python3-websockets only. Loopback only.
"""
import argparse
import asyncio
import json
import multiprocessing as mp
import os
import resource
import socket
import statistics
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

PEER = r'''
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
    async with websockets.serve(handler, "127.0.0.1", int(sys.argv[1]), compression=None,
                                ping_interval=None, max_queue=None):
        print("ready", flush=True)
        await asyncio.Future()
asyncio.run(main())
'''


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


def start_zfront(tmp, port):
    with open(os.path.join(tmp, "wsbenchapp.py"), "w") as f:
        f.write(APP)
    cmd = [os.environ.get("ZFRONT", os.path.join(REPO, "build", "zfront")), "--app",
           "wsbenchapp:application", "--python-path", tmp, "--http", "127.0.0.1:%d" % port,
           "--threads", "2", "--tmp-dir", tmp, "--error-log", os.path.join(tmp, "zf.log")]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_peer(tmp, port):
    path = os.path.join(tmp, "peer.py")
    with open(path, "w") as f:
        f.write(PEER)
    return subprocess.Popen(["/usr/bin/python3", path, str(port)], stdout=subprocess.DEVNULL)


def subscriber(port, n, expect, ready, go, out):
    import websockets

    async def one(lat, counts):
        ws = await websockets.connect("ws://127.0.0.1:%d/ws" % port, compression=None,
                                      ping_interval=None, max_queue=None, open_timeout=60)
        await ws.send(json.dumps({"type": "subscribe", "topic": "bench"}))
        await ws.recv()
        return ws

    async def main():
        conns = []
        for i in range(0, n, 50):
            conns += await asyncio.gather(*[one(None, None) for _ in range(min(50, n - i))])
        ready.put(len(conns))
        lat = []
        got = [0]

        async def drain(ws):
            try:
                while got[0] < expect * n:
                    m = json.loads(await asyncio.wait_for(ws.recv(), 20))
                    if m.get("type") == "event":
                        lat.append(time.time() - m["data"]["t"])
                        got[0] += 1
            except Exception:
                pass
        await asyncio.gather(*[drain(ws) for ws in conns])
        for ws in conns:
            await ws.close()
        t = os.times()
        out.put((got[0], lat[::max(1, len(lat) // 20000)], t.user + t.system))
    asyncio.run(main())


def publisher(port, seconds, rate):
    import websockets

    async def main():
        ws = await websockets.connect("ws://127.0.0.1:%d/ws" % port, compression=None,
                                      max_queue=None)

        async def acks():  # zfront answers each publish ("published"): read them
            async for _ in ws:
                pass
        reader = asyncio.create_task(acks())
        total = int(seconds * rate)
        start = time.monotonic()
        for i in range(total):
            await ws.send(json.dumps({"type": "publish", "topic": "bench",
                                      "data": {"i": i, "t": time.time()}}))
            delay = start + (i + 1) / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        await asyncio.sleep(0.5)
        await ws.close()
        reader.cancel()
        return total
    return asyncio.run(main())


def run_one(name, proc, port, n, seconds, rate, procs):
    base = rss_kib(proc.pid)
    ready, out, go = mp.Queue(), mp.Queue(), mp.Event()
    expect = int(seconds * rate)
    per = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
    workers = [mp.Process(target=subscriber, args=(port, k, expect, ready, go, out))
               for k in per if k]
    for w in workers:
        w.start()
    connected = sum(ready.get(timeout=120) for _ in workers)
    time.sleep(0.5)
    idle = rss_kib(proc.pid)
    t0 = time.monotonic()
    sent = publisher(port, seconds, rate)
    results = [out.get(timeout=120) for _ in workers]
    elapsed = time.monotonic() - t0
    for w in workers:
        w.join(10)
    got = sum(r[0] for r in results)
    lat = sorted(x for r in results for x in r[1])
    cpu = sum(r[2] for r in results)
    p = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000) if lat else (lambda q: 0)
    return {"server": name, "n": n, "connected": connected, "sent": sent, "received": got,
            "delivered_per_s": got / elapsed, "p50_ms": p(0.5), "p99_ms": p(0.99),
            "rss_idle_kib_per_conn": (idle - base) / max(1, connected),
            "client_cpu_s": cpu, "elapsed_s": elapsed}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, action="append")
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--rate", type=float, default=100)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--server", default="zfront,websockets")
    a = ap.parse_args()
    ns = a.n or [100, 1000]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    rows = []
    with tempfile.TemporaryDirectory(prefix="zf-wsbench-") as tmp:
        for name in a.server.split(","):
            for n in ns:
                port = free_port()
                proc = start_zfront(tmp, port) if name == "zfront" else start_peer(tmp, port)
                try:
                    wait_port(port, proc)
                    rows.append(run_one(name, proc, port, n, a.seconds, a.rate, a.procs))
                finally:
                    proc.terminate()
                    proc.wait(20)
                print(json.dumps(rows[-1]), flush=True)
    print("\n| server | N | delivered/s | p50 ms | p99 ms | RSS KiB/idle conn | client CPU s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print("| %s | %d | %.0f | %.1f | %.1f | %.1f | %.1f |" % (
            r["server"], r["n"], r["delivered_per_s"], r["p50_ms"], r["p99_ms"],
            r["rss_idle_kib_per_conn"], r["client_cpu_s"]))


if __name__ == "__main__":
    sys.exit(main())
