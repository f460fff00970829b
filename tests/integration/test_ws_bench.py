"""bench/wsload.c, the fan-out benchmark's load client (bench/ws_fanout.py), against
zfront over ws:// and wss://, and over HTTP/2 (--h2: RFC 8441, h2 by ALPN or h2c, K
WebSockets per connection): it compiles, opens and subscribes its connections, and
counts every event with its publish-to-receive latency, so the benchmark's figures can
be trusted. The HTTP/2 runs check in the server's own metrics that HTTP/2 carried them."""
import http.client
import json
import re
import shutil
import subprocess
import sys

import pytest

from zftest import TIMEOUT, wait_until

REPO = __file__.rsplit("/tests/", 1)[0]

APP = '''
def application(environ, start_response):
    start_response("200 OK", [("Content-Length", "0"), ("Zfront-Topics", "bench"),
                              ("Zfront-Publish", "bench")])
    return [b""]
'''


@pytest.fixture
def wsload(tmp_path):
    assert shutil.which("gcc"), "gcc is needed (scripts/install-deps.sh installs it)"
    exe = str(tmp_path / "wsload")
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-o", exe, REPO + "/bench/wsload.c",
                    "-lssl", "-lcrypto", "-lnghttp2"],
                   check=True)
    return exe


def stop(*procs):
    """Kills what of a run's load clients is still running."""
    for proc in procs:
        if proc and proc.poll() is None:
            proc.kill()
            proc.wait()


def check_figures(p, r):
    """A publisher's (p) and 40 subscribers' (r) JSON lines for 25 publishes: all counted."""
    assert p["role"] == "publisher" and p["sent"] == 25 and p["bad"] == 0
    assert r["role"] == "subscriber" and r["subscribed"] == 40 and r["closed"] == 0
    assert r["received"] == 40 * 25 and r["samples"] == 40 * 25 and r["bad"] == 0
    assert p["pub_start"] <= r["first_rx"] <= r["last_rx"]
    assert 0 <= r["p50_ms"] <= r["p99_ms"] <= r["max_ms"]


@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_wsload_counts_every_event_of_a_fan_out(server_factory, tmp_path, wsload, scheme):
    (tmp_path / "wsbenchapp.py").write_text(APP)
    srv = server_factory(start=False, app="wsbenchapp:application",
                         extra_python_path=[str(tmp_path)])
    if scheme == "wss":
        srv.args += ["--https", "127.0.0.1:0", "--state-dir", str(tmp_path / "state")]
    srv.start()
    port = str(srv.port)
    if scheme == "wss":
        port = srv.wait_log(r"https: listening on 127\.0\.0\.1:(\d+)").group(1)
        wsload = [wsload, "--tls"]
    else:
        wsload = [wsload]
    subs = subprocess.Popen(wsload + ["--port", port, "--subs", "40", "--burst", "7",
                             "--expect", "25", "--idle", "5", "--timeout", "20"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    pub = None
    try:
        assert subs.stdout.readline() == "ready 40\n"
        pub = subprocess.Popen(wsload + ["--port", port, "--pub-rate", "250", "--pub-seconds",
                                "0.1", "--hold", "--timeout", "20"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        r = json.loads(subs.stdout.readline())
        subs.communicate(timeout=10)
        p = json.loads(pub.communicate(timeout=10)[0])
    finally:
        stop(subs, pub)
    check_figures(p, r)
    assert r["cpu_s"] >= 0 and p["cpu_s"] >= 0


def test_wsload_reports_a_refused_handshake(server_factory, wsload):
    srv = server_factory()  # the default test app has no /ws grant: the app refuses
    out = subprocess.run([wsload, "--port", str(srv.port), "--subs", "3", "--timeout", "10"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=20)
    assert "handshake refused" in out.stderr
    assert out.stdout.splitlines()[0] == "ready 0"
    r = json.loads(out.stdout.splitlines()[-1])
    assert r["subscribed"] == 0 and r["closed"] == 3 and r["received"] == 0


def metrics(srv):
    """{series as written (name{labels}): value} from the admin listener's /metrics."""
    c = http.client.HTTPConnection("127.0.0.1", srv.admin_port, timeout=TIMEOUT)
    try:
        c.request("GET", "/metrics")
        r = c.getresponse()
        body = r.read().decode()
        assert r.status == 200, body
    finally:
        c.close()
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r"^(zfront_[^ ]+) ([0-9.e+-]+)$", body, re.M)}


H2_STREAMS = "zfront_http2_streams"
H2_CONNS = 'zfront_connections{protocol="http2"}'
WS_OPEN = 'zfront_connections{protocol="websocket"}'


@pytest.mark.parametrize("scheme,streams", [("wss", 1), ("wss", 10), ("ws", 10)])
def test_wsload_h2_counts_every_event_over_http2(server_factory, tmp_path, wsload, scheme,
                                                 streams):
    """wsload --h2: 40 subscribers as RFC 8441 streams, `streams` per HTTP/2 connection (h2
    by ALPN over TLS, h2c prior knowledge without), and the publisher over HTTP/2 too; the
    server's metrics show HTTP/2 streams and connections carrying them (a client that fell
    back to HTTP/1.1 would show none)."""
    (tmp_path / "wsbenchapp.py").write_text(APP)
    srv = server_factory("--admin", "127.0.0.1:0", start=False, app="wsbenchapp:application",
                         extra_python_path=[str(tmp_path)])
    if scheme == "wss":
        srv.args += ["--https", "127.0.0.1:0", "--state-dir", str(tmp_path / "state")]
    srv.start()
    srv.admin_port = int(srv.wait_log(r"admin: listening on 127\.0\.0\.1:(\d+)").group(1))
    port = str(srv.port)
    cmd = [wsload, "--h2"]
    if scheme == "wss":
        port = srv.wait_log(r"https: listening on 127\.0\.0\.1:(\d+)").group(1)
        cmd.append("--tls")
    subs = subprocess.Popen(cmd + ["--streams", str(streams), "--port", port, "--subs", "40",
                                   "--burst", "15", "--expect", "25", "--idle", "5",
                                   "--timeout", "20"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    pub = None
    try:
        assert subs.stdout.readline() == "ready 40\n"
        m = metrics(srv)
        assert m.get(H2_STREAMS) == 40 and m.get(WS_OPEN) == 40, m
        assert m.get(H2_CONNS) == 40 // streams, m
        pub = subprocess.Popen(cmd + ["--port", port, "--pub-rate", "250", "--pub-seconds",
                                      "0.1", "--hold", "--timeout", "20"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        r = json.loads(subs.stdout.readline())
        subs.communicate(timeout=10)
        # the subscribers are gone, the publisher holds its one stream until stdin closes
        assert wait_until(lambda: metrics(srv).get(H2_STREAMS) == 1), metrics(srv)
        assert metrics(srv).get(H2_CONNS) == 1
        p = json.loads(pub.communicate(timeout=10)[0])
    finally:
        stop(subs, pub)
    check_figures(p, r)


def test_wsload_h2_does_not_fall_back_to_http1(server_factory, tmp_path, wsload):
    """Over an https listener that offers only HTTP/1.1 (h2.enable off), wsload --h2 says the
    server did not choose h2 and opens no WebSocket: no figure is ever taken over HTTP/1.1
    under an HTTP/2 label."""
    (tmp_path / "wsbenchapp.py").write_text(APP)
    srv = server_factory("--https", "127.0.0.1:0", "--state-dir", str(tmp_path / "state"),
                         "--set", "h2.enable=false", app="wsbenchapp:application",
                         extra_python_path=[str(tmp_path)])
    port = srv.wait_log(r"https: listening on 127\.0\.0\.1:(\d+)").group(1)
    out = subprocess.run([wsload, "--h2", "--tls", "--streams", "2", "--port", port, "--subs",
                          "3", "--timeout", "10"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=20)
    assert "by ALPN, not h2" in out.stderr, out.stderr
    assert out.stdout.splitlines()[0] == "ready 0"
    r = json.loads(out.stdout.splitlines()[-1])
    assert r["subscribed"] == 0 and r["closed"] == 3 and r["received"] == 0


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
