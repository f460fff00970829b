"""The bus benchmark (bench/bus.py) and its HTTP publisher (bench/wsload.c --http-pub):
the publisher asks for exactly the messages it reports and counts the answers, and the
short run carries every message from A to B's WebSocket client both ways (zfront's bus
and Redis pub/sub), so the benchmark's figures can be trusted."""
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from zftest import zfront_bin

REPO = __file__.rsplit("/tests/", 1)[0]

# Publishes what /pub asks for on "bench" in this same instance (no bus): the subscriber
# counts them; every 7th request is refused, so the publisher's "bad" count is checked too.
APP = '''
import itertools, time, zfront
from urllib.parse import parse_qs
calls = itertools.count(1)  # next() is atomic under the GIL

def application(environ, start_response):
    if environ["PATH_INFO"] == "/ws":
        start_response("200 OK", [("Content-Length", "0"), ("Zfront-Topics", "bench")])
        return [b""]
    q = parse_qs(environ["QUERY_STRING"])
    first, n = int(q["i"][0]), int(q["n"][0])
    if REFUSE and next(calls) % 7 == 0:
        start_response("500 Internal Server Error", [("Content-Length", "4")])
        return [b"nope"]
    for i in range(first, first + n):
        zfront.publish("bench", {"i": i, "t": time.time()})
    body = b"published"
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
'''


@pytest.fixture
def wsload(tmp_path):
    assert shutil.which("gcc"), "gcc is needed (scripts/install-deps.sh installs it)"
    exe = str(tmp_path / "wsload")
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-o", exe, REPO + "/bench/wsload.c",
                    "-lssl", "-lcrypto", "-lnghttp2"], check=True)
    return exe


def run_http_pub(server_factory, tmp_path, wsload, refuse, batch, keepalive=100, conns=3,
                 count=1000, rate=2000):
    (tmp_path / "pubapp.py").write_text("REFUSE = %r\n" % refuse + APP)
    srv = server_factory(start=False, app="pubapp:application",
                         extra_python_path=[str(tmp_path)])
    # the server ends each keep-alive connection after that many requests: the publisher
    # reconnects
    srv.args += ["--max-keepalive-requests", str(keepalive)]
    srv.start()
    port = str(srv.port)
    subs = subprocess.Popen([wsload, "--port", port, "--subs", "3", "--idle", "3", "--timeout",
                             "20"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    pub = None
    try:
        assert subs.stdout.readline() == "ready 3\n"
        pub = subprocess.run([wsload, "--port", port, "--http-pub", "/pub", "--pub-rate",
                              str(rate), "--pub-seconds", str(count / rate), "--batch", str(batch),
                              "--conns", str(conns), "--timeout", "20"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, timeout=30)
        p = json.loads(pub.stdout)
        r = json.loads(subs.communicate(timeout=20)[0])  # ends after 3 s without events
    finally:
        if subs.poll() is None:
            subs.kill()
            subs.wait()
    return p, r, pub.stderr


@pytest.mark.parametrize("batch", [1, 40])
def test_http_publisher_counts_every_message(server_factory, tmp_path, wsload, batch):
    p, r, _ = run_http_pub(server_factory, tmp_path, wsload, False, batch)
    assert p["role"] == "publisher" and p["sent"] == 1000 and p["acked"] == 1000
    assert p["bad"] == 0
    # one message per request at this rate (1 due at a time), up to `batch` when behind
    assert 1000 / batch <= p["requests"] <= 1000
    assert p["reconnects"] >= p["requests"] // 100 - 3
    assert r["subscribed"] == 3 and r["received"] == 3 * 1000 and r["bad"] == 0
    assert r["samples"] == 3000 and 0 <= r["p50_ms"] <= r["p99_ms"] <= r["max_ms"]
    assert p["pub_start"] <= r["first_rx"] <= r["last_rx"]


def test_http_publisher_reopens_a_connection_closed_after_each_answer(server_factory,
                                                                     tmp_path, wsload):
    # one connection, closed by the server after every answer (Connection: close): each
    # request needs a new one, also when the publisher is not behind its rate (200 msg/s:
    # the answer comes long before the next message is due)
    p, r, _ = run_http_pub(server_factory, tmp_path, wsload, False, 1, keepalive=1, conns=1,
                           count=100, rate=200)
    assert p["sent"] == p["acked"] == 100 and p["bad"] == 0
    assert p["requests"] == 100 and p["reconnects"] == 99
    assert r["received"] == 3 * 100


def test_http_publisher_counts_refused_requests(server_factory, tmp_path, wsload):
    p, r, err = run_http_pub(server_factory, tmp_path, wsload, True, 1)
    refused = p["requests"] // 7
    assert p["requests"] == 1000 and refused == 142
    assert p["bad"] == refused and p["acked"] == 1000 - refused
    assert r["received"] == 3 * (1000 - refused)
    assert "server answered HTTP/1.1 500" in err


def test_bus_bench_short_carries_every_message_every_way(tmp_path):
    # its own process group: if it has to be stopped, its instances and redis-server go too
    bench = subprocess.Popen(["/usr/bin/python3", REPO + "/bench/bus.py", "--short",
                              "--results", str(tmp_path)],
                             env=dict(os.environ, ZFRONT=zfront_bin()), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = bench.communicate(timeout=150)
    finally:
        if bench.poll() is None:
            # the script, its zfront instances, redis-server and load clients
            os.killpg(bench.pid, signal.SIGTERM)
            try:
                bench.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(bench.pid, signal.SIGKILL)
                bench.communicate()
    assert bench.returncode == 0, err[-3000:]
    [js] = [f for f in os.listdir(tmp_path) if f.endswith("-short.json")]
    assert os.path.exists(tmp_path / js.replace(".json", ".md"))
    rows = json.loads((tmp_path / js).read_text())["rows"]
    assert [(r["mode"], r["phase"]) for r in rows] == [
        (m, p) for m in ("redis", "bus", "local") for p in ("latency", "load", "burst")]
    for r in rows:
        sent = {"latency": 400, "load": 1000, "burst": 5000}[r["phase"]]
        assert r["sent"] == r["acked"] == sent and r["http_bad"] == 0, r
        assert r["subs"] == 1 and r["subs_closed"] == 0, r
        assert r["received"] == r["expected"] == sent, r
        assert r["samples"] == sent and r["bad"] == 0, r
        assert 0 <= r["p50_ms"] <= r["p99_ms"] <= r["max_ms"], r
        assert r["msgs_per_s"] > 0 and r["client_cpu_s"] >= 0, r
        assert r["cpu_A_s"] > 0, r
        assert ("cpu_B_s" in r) == (r["mode"] != "local"), r  # local: A is B
        assert ("cpu_redis_s" in r) == (r["mode"] == "redis"), r
        if r["mode"] == "bus":  # the bus's own counters: A sent each once, B got each
            assert r["bus_sent"] == r["bus_received"] == sent and r["bus_missed"] == 0, r
            assert r["bus_duplicates"] == r["bus_dropped_malformed"] == 0, r
            assert r["bus_probe_arrived"] is True, r
        else:
            assert "bus_sent" not in r, r


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
