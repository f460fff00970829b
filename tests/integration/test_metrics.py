"""The admin listener (issue 13, metrics and status): `--admin ADDR` serves
Prometheus text metrics (/metrics), the status as JSON (/status.json) and
as server-sent events pushed over the hub (/status/events), and the status
page, on the loop thread: it answers while every worker is stuck. The
metrics are read with Debian's python3-prometheus-client parser."""
import asyncio
import http.client
import json
import os
import re
import socket
import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from zftest import TIMEOUT, wait_until

ADMIN_RE = r"admin: listening on 127\.0\.0\.1:(\d+)"


def start(server_factory, *args, **kw):
    srv = server_factory("--admin", "127.0.0.1:0", *args, **kw)
    m = srv.wait_log(ADMIN_RE)
    assert m, srv.log()
    srv.admin_port = int(m.group(1))
    return srv


def admin_get(srv, path, method="GET", timeout=TIMEOUT):
    c = http.client.HTTPConnection("127.0.0.1", srv.admin_port, timeout=timeout)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


def metrics(srv):
    """{(sample name, frozenset of labels): value}, parsed by prometheus_client."""
    status, headers, body = admin_get(srv, "/metrics")
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4"), headers
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in out, "duplicate series %r" % (key,)
            out[key] = s.value
    return out


def val(m, name, **labels):
    return m.get((name, frozenset(labels.items())), 0)


def app_get(srv, path):
    """One request on its own connection: status."""
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=TIMEOUT)
    try:
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def test_request_counters_grow_by_exactly_what_was_sent(server_factory):
    srv = start(server_factory)
    before = metrics(srv)
    for _ in range(7):
        assert app_get(srv, "/hello") == 200
    for _ in range(3):
        assert app_get(srv, "/status?code=404") == 404
    for _ in range(2):
        assert app_get(srv, "/status?code=503") == 503
    after = metrics(srv)

    def grew(name, **labels):
        return val(after, name, **labels) - val(before, name, **labels)

    assert grew("zfront_requests_total", channel="http", code="2xx") == 7
    assert grew("zfront_requests_total", channel="http", code="4xx") == 3
    assert grew("zfront_requests_total", channel="http", code="5xx") == 2
    assert grew("zfront_request_duration_seconds_count", channel="http") == 12
    assert grew("zfront_request_duration_seconds_bucket", channel="http", le="+Inf") == 12
    assert grew("zfront_connections_accepted_total", protocol="http1") == 12
    assert grew("zfront_http1_requests_total") == 12
    # each request waited in the queue once (the admin requests never do)
    assert grew("zfront_queue_wait_seconds_count") == 12
    # histogram buckets are cumulative and end at _count
    les = sorted((float(dict(k[1])["le"]), v) for k, v in after.items()
                 if k[0] == "zfront_request_duration_seconds_bucket"
                 and dict(k[1]).get("channel") == "http")
    assert [v for _, v in les] == sorted(v for _, v in les)
    assert les[-1] == (float("inf"), val(after, "zfront_request_duration_seconds_count",
                                         channel="http"))
    # the families every part of the server reports
    for name in ("zfront_workers", "zfront_workers_busy", "zfront_workers_idle",
                 "zfront_workers_stuck", "zfront_queue_depth", "zfront_buffered_bytes",
                 "zfront_spooled_bytes", "zfront_hub_topics", "process_resident_memory_bytes"):
        assert (name, frozenset()) in after, name
    assert val(after, "process_resident_memory_bytes") > 1 << 20


def test_text_format_is_strict(server_factory):
    """Beyond the parser (which is lenient about some of it): every family
    has one HELP and one TYPE line before its samples, and each line is a
    comment or `name{labels} value`."""
    srv = start(server_factory)
    app_get(srv, "/hello")
    status, _, body = admin_get(srv, "/metrics")
    assert status == 200
    text = body.decode()
    assert text.endswith("\n")
    sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
                        r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*\})? '
                        r'(-?[0-9.e+-]+|NaN|[+-]Inf)$')
    typed, current = {}, None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            current = line.split()[2]
            assert current not in typed, "family %s twice" % current
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert name == current and kind in ("counter", "gauge", "histogram"), line
            typed[name] = kind
        else:
            m = sample.match(line)
            assert m, "bad line %r" % line
            base = m.group(1)
            if typed.get(current) == "histogram":
                assert base in (current + "_bucket", current + "_sum", current + "_count"), line
            else:
                assert base == current, line
            if typed.get(current) == "counter":
                assert base.endswith("_total"), line


def _sleep_request(srv, seconds, results):
    try:
        results.append(app_get(srv, "/sleep?s=%s&started=started-%d" % (seconds, len(results))))
    except OSError as e:
        results.append(e)


def test_admin_answers_while_every_worker_is_stuck(server_factory):
    srv = start(server_factory, "--stuck-after", "1s", threads=2)
    results = []
    threads = [threading.Thread(target=_sleep_request, args=(srv, 4, results)) for _ in range(3)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    try:
        # both workers busy, the third request queued
        assert wait_until(lambda: val(metrics(srv), "zfront_workers_busy") == 2), srv.log()
        assert wait_until(lambda: val(metrics(srv), "zfront_queue_depth") == 1), srv.log()
        m = metrics(srv)
        assert val(m, "zfront_workers_idle") == 0
        # the watchdog reports them stuck past 1 s: the metrics say so
        assert wait_until(lambda: val(metrics(srv), "zfront_workers_stuck") == 2, timeout=5), \
            srv.log()
        status, _, body = admin_get(srv, "/status.json")
        assert status == 200
        st = json.loads(body)
        busy = [w for w in st["workers"] if w["busy_ms"] > 0]
        assert len(busy) == 2, st["workers"]
        assert all(w["stuck"] for w in busy), st["workers"]
        assert all("/sleep" in w["doing"] for w in busy), st["workers"]
        assert st["samples"]["zfront_workers_stuck"] == 2
    finally:
        for t in threads:
            t.join(TIMEOUT * 2)
    assert results == [200, 200, 200], results
    m = metrics(srv)
    assert val(m, "zfront_workers_busy") == 0 and val(m, "zfront_workers_stuck") == 0
    assert val(m, "zfront_workers_stuck_reported_total") >= 2


def test_websocket_client_shows_up(server_factory):
    import websockets
    from wstest import APP, connect, subscribe

    srv = start(server_factory, app=APP)
    before = metrics(srv)  # the app may subscribe Python listeners of its own

    async def session():
        ws = await connect(srv, "?user=bob")
        await subscribe(ws, "news/a")
        await subscribe(ws, "news/b")
        during = await asyncio.to_thread(metrics, srv)
        await ws.close()
        return during

    during = asyncio.run(asyncio.wait_for(session(), TIMEOUT * 3))
    assert val(during, "zfront_connections", protocol="websocket") == 1
    assert val(during, "zfront_connections_accepted_total", protocol="websocket") == 1
    assert val(during, "zfront_ws_subscriptions") == 2
    assert val(during, "zfront_hub_subscriptions") == val(before, "zfront_hub_subscriptions") + 2
    assert wait_until(lambda: val(metrics(srv), "zfront_connections", protocol="websocket") == 0)
    assert websockets  # the import is the dependency the test needs


def _read_event(f):
    """The next server-sent event's data (JSON), from a file over the socket."""
    data = []
    while True:
        line = f.readline()
        assert line, "stream ended"
        line = line.rstrip(b"\r\n")
        if not line and data:
            return json.loads(b"".join(data))
        if line.startswith(b"data: "):
            data.append(line[6:])


def _open_stream(srv):
    s = socket.create_connection(("127.0.0.1", srv.admin_port), timeout=TIMEOUT)
    s.sendall(b"GET /status/events HTTP/1.1\r\nHost: x\r\n\r\n")
    f = s.makefile("rb")
    head = []
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        head.append(line)
    assert head and b" 200 " in head[0], head
    assert any(h.lower().startswith(b"content-type: text/event-stream") for h in head), head
    assert any(h.lower().startswith(b"transfer-encoding: chunked") for h in head), head
    return s, ChunkReader(f)


def _close_stream(s, r):
    r.f.close()  # the socket stays open while its file object is
    s.close()


class ChunkReader:
    """Undoes the chunked transfer coding of the stream, line by line."""

    def __init__(self, f):
        self.f, self.buf = f, b""

    def readline(self):
        while b"\n" not in self.buf:
            size = int(self.f.readline().strip(), 16)
            if size == 0:
                return b""
            self.buf += self.f.read(size)
            self.f.readline()
        line, self.buf = self.buf.split(b"\n", 1)
        return line + b"\n"


def test_status_stream_pushes_changes(server_factory):
    """The stream gets the status at once, then every published status
    (admin.status_interval) without asking: the requests made meanwhile
    appear in a later event."""
    srv = start(server_factory, "--set", "admin.status_interval=200ms")
    s, r = _open_stream(srv)
    try:
        first = _read_event(r)
        assert first["pid"] == srv.proc.pid
        base = sum(v for k, v in first["samples"].items() if k.startswith("zfront_requests_total"))
        for _ in range(4):
            app_get(srv, "/hello")
        deadline = time.monotonic() + TIMEOUT
        seen = base
        while seen < base + 4 and time.monotonic() < deadline:
            ev = _read_event(r)
            seen = sum(v for k, v in ev["samples"].items()
                       if k.startswith("zfront_requests_total"))
        assert seen == base + 4, (base, seen)
        # the stream is a hub subscriber of zfront/status
        m = metrics(srv)
        assert val(m, "zfront_admin_status_streams") == 1
        assert val(m, "zfront_hub_events_published_total") >= 1
    finally:
        _close_stream(s, r)
    # the client left: its stream and subscription are gone
    assert wait_until(lambda: val(metrics(srv), "zfront_admin_status_streams") == 0), srv.log()
    assert val(metrics(srv), "zfront_hub_subscriptions") == 0


def test_status_stream_outlives_the_idle_timeout(server_factory):
    """A page only reads: admin.timeout (1 s here) must not cut its stream,
    although nothing is written to it for longer than that between two
    events (1.5 s apart)."""
    srv = start(server_factory, "--set", "admin.timeout=1s", "--set",
                "admin.status_interval=1500ms")
    s, r = _open_stream(srv)
    try:
        times = [_read_event(r)["time"] for _ in range(3)]
        assert times == sorted(times), times
        assert val(metrics(srv), "zfront_admin_status_streams") == 1
    finally:
        _close_stream(s, r)


def test_status_streams_are_bounded(server_factory):
    srv = start(server_factory, "--set", "admin.max_streams=1")
    s, r = _open_stream(srv)
    try:
        _read_event(r)
        status, headers, _ = admin_get(srv, "/status/events")
        assert status == 503 and headers.get("Retry-After") == "5"
        assert "admin.max_streams" in srv.log()
    finally:
        _close_stream(s, r)


def test_page_methods_and_unknown_paths(server_factory):
    srv = start(server_factory)
    for path in ("/", "/status"):
        status, headers, body = admin_get(srv, path)
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert b'EventSource("status/events")' in body
    status, headers, _ = admin_get(srv, "/metrics", method="POST")
    assert status == 405 and headers.get("Allow") == "GET, HEAD"
    status, _, body = admin_get(srv, "/nope")
    assert status == 404 and b"/metrics" in body
    status, _, body = admin_get(srv, "/metrics", method="HEAD")
    assert status == 200 and body == b""
    # the admin requests are not application requests
    assert not any(k[0] == "zfront_requests_total" for k in metrics(srv))
    assert val(metrics(srv), "zfront_admin_requests_total") >= 5


@pytest.mark.parametrize("addr", ["0.0.0.0:0", "192.0.2.1:9901", "[::]:0", ":9901"])
def test_non_loopback_admin_is_refused(server_factory, addr):
    srv = server_factory("--admin", addr, wait_listen=False)
    assert srv.wait() == 2, srv.log()
    assert "is not a loopback address" in srv.log() and "admin.allow_remote" in srv.log()
    assert "admin: listening" not in srv.log()


def test_allow_remote_serves_other_addresses(server_factory):
    srv = server_factory("--admin", "0.0.0.0:0", "--set", "admin.allow_remote=true")
    m = srv.wait_log(r"admin: listening on 0\.0\.0\.0:(\d+)")
    assert m, srv.log()
    srv.admin_port = int(m.group(1))
    assert b"zfront_workers" in admin_get(srv, "/metrics")[2]


def test_clock_requests_are_counted_on_their_channel(server_factory):
    """The internal protocol counts its requests too (channel clock), and
    the clock module reports its ticks: every tick sent is one request,
    answered or still in flight."""
    srv = start(server_factory, "--clock", "/hello:100ms")
    assert wait_until(lambda: val(metrics(srv), "zfront_clock_ticks_total", path="/hello") >= 3)
    m = metrics(srv)
    ticks = val(m, "zfront_clock_ticks_total", path="/hello")
    done = sum(v for (name, labels), v in m.items()
               if name == "zfront_requests_total" and dict(labels)["channel"] == "clock")
    assert ticks - 1 <= done <= ticks, (ticks, done)
    assert val(m, "zfront_requests_total", channel="clock", code="2xx") == done
    assert val(m, "zfront_requests_total", channel="http", code="2xx") == 0


def test_ssh_console_shows_up(server_factory):
    """Code typed in an SSH console reads /metrics while its own session is
    open: the ssh connection and the console are counted."""
    from sshtest import Keys, ssh, start_ssh_server

    keys = Keys()
    try:
        srv = start_ssh_server(server_factory, keys, "--admin", "127.0.0.1:0")
        port = int(srv.wait_log(ADMIN_RE).group(1))
        code = ("import urllib.request; print(urllib.request.urlopen("
                "'http://127.0.0.1:%d/metrics', timeout=10).read().decode())" % port)
        r = ssh(srv, keys, code)
        assert r.returncode == 0, r.stderr
    finally:
        keys.cleanup()
    m = {}
    for fam in text_string_to_metric_families(r.stdout.decode()):
        for smp in fam.samples:
            m[(smp.name, frozenset(smp.labels.items()))] = smp.value
    assert val(m, "zfront_connections", protocol="ssh") == 1
    assert val(m, "zfront_ssh_consoles") == 1
    assert val(m, "zfront_ssh_unauthenticated") == 0


def test_admin_is_off_by_default(server_factory):
    srv = server_factory()
    assert app_get(srv, "/hello") == 200
    assert "admin:" not in srv.log()
