"""HTTP/2: h2 over TLS (ALPN), h2c by prior knowledge and by Upgrade, many
concurrent streams with a 1 GiB file on one of them, flow control, request
bodies, limits, idle timeout, graceful shutdown.

Clients: curl, nghttp (nghttp2-client) and python3-h2 driven over a socket
(H2Conn below, also used by test_h2_abuse.py)."""
import hashlib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import time

import h2.config
import hyperframe.frame
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import pytest

from zftest import TIMEOUT, curl, wait_until, write_random_file

HTTPS_RE = r"https: listening on 127\.0\.0\.1:(\d+)"
GIB = 1 << 30


def start_h2(factory, *args, **kw):
    """A started server with http (h2c) and https (h2) listeners."""
    s = factory(*args, start=False, **kw)
    s.args += ["--https", "127.0.0.1:0", "--state-dir", os.path.join(s.root, "state")]
    s.start()
    m = s.wait_log(HTTPS_RE)
    assert m, s.log()
    s.https_port = int(m.group(1))
    return s


class H2Conn:
    """A python3-h2 client connection. Streams are dicts with status, headers,
    data, ended, reset (error code), informational (1xx statuses)."""

    def __init__(self, port, tls=False, timeout=TIMEOUT, settings=None, window=None):
        raw = socket.create_connection(("127.0.0.1", port), timeout)
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.set_alpn_protocols(["h2"])
            self.sock = ctx.wrap_socket(raw)
            assert self.sock.selected_alpn_protocol() == "h2"
        else:
            self.sock = raw
        self.sock.settimeout(timeout)
        self.tls = tls
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8", validate_outbound_headers=False,
            normalize_outbound_headers=False))
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        if window:
            self.conn.increment_flow_control_window(window)
        self.flush()
        self.streams = {}
        self.terminated = None  # ConnectionTerminated event
        self.closed = False
        self.hold = set()  # streams whose data is not acknowledged (window stays shut)
        self.no_ack = False  # acknowledge nothing: the connection window stays shut too
        self.events = []

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def headers(self, path, method="GET", extra=(), authority="localhost"):
        return [(":method", method), (":path", path),
                (":scheme", "https" if self.tls else "http"),
                (":authority", authority)] + list(extra)

    def request(self, path, method="GET", extra=(), body=None, end=True, authority="localhost"):
        sid = self.conn.get_next_available_stream_id()
        self.streams[sid] = {"status": None, "headers": {}, "data": bytearray(), "ended": False,
                             "reset": None, "informational": [], "hash": None, "count": 0}
        self.conn.send_headers(sid, self.headers(path, method, extra, authority),
                               end_stream=end and body is None)
        if body is not None:
            self.send_body(sid, body, end=end)
        self.flush()
        return sid

    def send_body(self, sid, body, end=True):
        """Sends body as flow control allows, reading meanwhile."""
        off = 0
        while off < len(body):
            room = min(self.conn.local_flow_control_window(sid),
                       self.conn.max_outbound_frame_size)
            if room <= 0:
                self.pump(lambda: self.conn.local_flow_control_window(sid) > 0 or
                          self.streams[sid]["ended"] or self.streams[sid]["reset"] is not None)
                if self.streams[sid]["ended"] or self.streams[sid]["reset"] is not None:
                    return
                continue
            chunk = body[off:off + room]
            self.conn.send_data(sid, chunk)
            off += len(chunk)
            self.flush()
        if end:
            self.conn.end_stream(sid)
            self.flush()

    def stream_hash(self, sid):
        """Hash the body instead of keeping it (for big downloads)."""
        self.streams[sid]["hash"] = hashlib.sha256()

    def handle(self, ev):
        self.events.append(type(ev).__name__)
        st = self.streams.get(getattr(ev, "stream_id", None))
        if isinstance(ev, h2.events.ResponseReceived):
            st["headers"] = dict(ev.headers)
            st["status"] = int(st["headers"][":status"])
        elif isinstance(ev, h2.events.InformationalResponseReceived):
            st["informational"].append(int(dict(ev.headers)[":status"]))
        elif isinstance(ev, h2.events.DataReceived):
            if st is not None:
                st["count"] += len(ev.data)
                if st["hash"] is not None:
                    st["hash"].update(ev.data)
                else:
                    st["data"] += ev.data
            if self.no_ack:
                pass
            elif ev.stream_id in self.hold:
                # give the connection window back but not the stream's
                if ev.flow_controlled_length:
                    self.conn.increment_flow_control_window(ev.flow_controlled_length)
            elif ev.flow_controlled_length:
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded):
            st["ended"] = True
        elif isinstance(ev, h2.events.StreamReset):
            if st is not None:
                st["reset"] = ev.error_code
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.terminated = ev

    def pump(self, until, timeout=TIMEOUT):
        """Reads and handles events until until() is true, the connection
        closes, or the timeout passes. Returns until()."""
        deadline = time.monotonic() + timeout
        while not until() and not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 18)
            except socket.timeout:
                break
            except (ConnectionResetError, ssl.SSLError, OSError):
                data = b""
            if not data:
                self.closed = True
                break
            try:
                for ev in self.conn.receive_data(data):
                    self.handle(ev)
            except h2.exceptions.ProtocolError:
                self.closed = True
                break
            try:
                self.flush()
            except OSError:
                self.closed = True
        return until()

    def done(self, sid):
        st = self.streams[sid]
        return st["ended"] or st["reset"] is not None

    def wait(self, sid, timeout=TIMEOUT):
        assert self.pump(lambda: self.done(sid), timeout), \
            "stream %d did not finish (events %s)" % (sid, self.events[-10:])
        return self.streams[sid]

    def get(self, path, **kw):
        sid = self.request(path, **kw)
        st = self.wait(sid)
        return st["status"], st["headers"], bytes(st["data"])

    def wait_closed(self, timeout=TIMEOUT):
        return self.pump(lambda: False, timeout) or self.closed

    def close(self):
        self.sock.close()


@pytest.fixture(scope="module")
def srv(module_server_factory):
    """One server for the read-only tests, with a 1 GiB random file."""
    s = start_h2(module_server_factory)
    s.big_sha = write_random_file(os.path.join(s.data, "big.bin"), GIB)
    return s


# ------------------------------------------------------ h2 / h2c entrances


def test_curl_h2_over_tls(srv):
    p = curl("-k", "--http2", "-o", "-", "-w", "\n%{http_version} %{http_code}",
             "https://127.0.0.1:%d/hello" % srv.https_port)
    assert p.stdout == b"Hello, world!\n2 200"


def test_curl_h2c_prior_knowledge(srv):
    p = curl("--http2-prior-knowledge", "-o", "-", "-w", "\n%{http_version} %{http_code}",
             "http://127.0.0.1:%d/hello" % srv.port)
    assert p.stdout == b"Hello, world!\n2 200"


def test_curl_h2c_upgrade(srv):
    p = curl("-v", "--http2", "-o", "-", "-w", "\n%{http_version} %{http_code}",
             "http://127.0.0.1:%d/env" % srv.port)
    assert "101 Switching Protocols" in p.stderr
    body, _, tail = p.stdout.rpartition(b"\n")
    assert tail == b"2 200"
    env = json.loads(body)
    # the upgrading request is stream 1, answered over HTTP/2
    assert env["PATH_INFO"] == "/env"
    assert env["wsgi.url_scheme"] == "http"


def test_h2c_upgrade_with_body(srv):
    data = os.urandom(100000)
    p = subprocess.run(["curl", "-sS", "-v", "--http2", "--max-time", "30", "--data-binary",
                        "@-", "http://127.0.0.1:%d/body" % srv.port], input=data,
                       capture_output=True, timeout=40)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    assert got["len"] == len(data)
    assert got["sha256"] == hashlib.sha256(data).hexdigest()


def test_upgrade_not_taken_without_settings(srv):
    """Upgrade: h2c without HTTP2-Settings is served as plain HTTP/1.1."""
    with socket.create_connection(("127.0.0.1", srv.port), TIMEOUT) as c:
        c.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                  b"Upgrade: h2c\r\n\r\n")
        data = b""
        while b"Hello, world!" not in data:
            chunk = c.recv(4096)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 200")


def test_h2c_off_when_http2_disabled(server_factory):
    """h2.enable=false: HTTP/1.1 has no h2c hand-off (zf_h2c is NULL): the
    preface is not HTTP/2 (400), Upgrade: h2c is served as HTTP/1.1."""
    s = start_h2(server_factory, "--set", "h2.enable=false")
    with socket.create_connection(("127.0.0.1", s.port), TIMEOUT) as c:
        c.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        assert c.recv(4096).startswith(b"HTTP/1.1 400")
    with socket.create_connection(("127.0.0.1", s.port), TIMEOUT) as c:
        c.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                  b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n")
        data = b""
        while b"Hello, world!" not in data:
            chunk = c.recv(4096)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 200") and b"Hello, world!" in data


@pytest.mark.parametrize("tls", [False, True], ids=["h2c", "h2"])
def test_environ(srv, tls):
    c = H2Conn(srv.https_port if tls else srv.port, tls=tls)
    try:
        status, headers, body = c.get(
            "/env?x=1", authority="example.org:8443",
            extra=[("cookie", "a=1"), ("cookie", "b=2"), ("x-custom", "yes"),
                   ("x_forwarded_for", "6.6.6.6")])
    finally:
        c.close()
    assert status == 200
    env = json.loads(body)
    assert env["SERVER_PROTOCOL"] == "HTTP/2"
    assert env["HTTP_HOST"] == "example.org:8443"  # :authority is the Host
    assert env["HTTP_COOKIE"] == "a=1; b=2"  # split cookie fields joined
    assert env["HTTP_X_CUSTOM"] == "yes"
    assert "HTTP_X_FORWARDED_FOR" not in env  # names with "_" dropped
    assert env["QUERY_STRING"] == "x=1"
    assert env["wsgi.url_scheme"] == ("https" if tls else "http")
    assert env.get("HTTPS") == ("on" if tls else None)  # h2c: no HTTPS at all


def test_head_has_no_body(srv):
    c = H2Conn(srv.https_port, tls=True)
    try:
        status, headers, body = c.get("/hello", method="HEAD")
    finally:
        c.close()
    assert status == 200
    assert headers["content-length"] == "13"
    assert body == b""


# ------------------------------------------------------- big and concurrent


@pytest.mark.parametrize("tls", [True, False], ids=["h2", "h2c"])
def test_sha256_of_1gib_download(srv, tls):
    if tls:
        url, flags = "https://127.0.0.1:%d/file?name=big.bin" % srv.https_port, ["-k", "--http2"]
    else:
        url, flags = "http://127.0.0.1:%d/file?name=big.bin" % srv.port, [
            "--http2-prior-knowledge"]
    curl_p = subprocess.Popen(["curl", "-sS", "--max-time", "150", "-w",
                               "%{stderr}%{http_version}"] + flags + [url],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    h = hashlib.sha256()
    n = 0
    while True:
        chunk = curl_p.stdout.read(1 << 20)
        if not chunk:
            break
        h.update(chunk)
        n += len(chunk)
    assert curl_p.wait(160) == 0
    assert curl_p.stderr.read() == b"2"
    assert n == GIB
    assert h.hexdigest() == srv.big_sha


@pytest.mark.parametrize("tls", [True, False], ids=["h2", "h2c"])
def test_nghttp_many_streams_with_1gib(srv, tls):
    """One connection: the 1 GiB file on one stream, 100 small requests on
    others; every small one completes before the big one does."""
    port = srv.https_port if tls else srv.port
    base = "%s://127.0.0.1:%d" % ("https" if tls else "http", port)
    urls = [base + "/file?name=big.bin"] + [base + "/hello?n=%d" % i for i in range(100)]
    p = subprocess.run(["nghttp", "-ns", "-t", "150"] + urls, capture_output=True, text=True,
                       timeout=170)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = {}
    for line in p.stdout.splitlines():
        m = re.match(r"\s*\d+\s+\+([\d.]+)(us|ms|s)\s+\S+\s+\S+\s+(\d+)\s+(\S+)\s+(\S+)$", line)
        if m:
            t = float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[m.group(2)]
            rows[m.group(5)] = (t, int(m.group(3)), m.group(4))
    assert len(rows) == 101, p.stdout[-3000:]
    assert all(code == 200 for _, code, _ in rows.values())
    big_end, _, big_size = rows["/file?name=big.bin"]
    assert big_size == "1G"
    small = [v for k, v in rows.items() if k.startswith("/hello")]
    assert all(size == "13" for _, _, size in small)
    assert max(t for t, _, _ in small) < big_end


@pytest.mark.parametrize("tls", [True, False], ids=["h2", "h2c"])
def test_stalled_stream_does_not_block_others(srv, tls):
    """The 1 GiB stream's window stays shut (the client never gives it
    back); small requests on the same connection still complete, then the
    big one finishes once its window opens."""
    c = H2Conn(srv.https_port if tls else srv.port, tls=tls, window=1 << 30)
    try:
        big = c.request("/file?name=big.bin")
        c.hold.add(big)
        c.stream_hash(big)
        assert c.pump(lambda: c.streams[big]["count"] >= 65535 - 16384)
        for i in range(20):
            status, _, body = c.get("/hello?i=%d" % i)
            assert (status, body) == (200, b"Hello, world!")
        assert not c.done(big)
        got = c.streams[big]["count"]
        assert got <= 65535  # flow control held it at the initial window
        # open the window: the rest arrives intact
        c.hold.discard(big)
        c.conn.acknowledge_received_data(got, big)
        c.flush()
        st = c.wait(big, timeout=150)
        assert st["ended"] and st["count"] == GIB
        assert st["hash"].hexdigest() == srv.big_sha
    finally:
        c.close()


def test_many_connections_and_streams_h2load(srv):
    p = subprocess.run(["h2load", "-n", "2000", "-c", "20", "-m", "20",
                        "https://127.0.0.1:%d/hello" % srv.https_port],
                       capture_output=True, text=True, timeout=120)
    assert "2000 succeeded, 0 failed, 0 errored" in p.stdout, p.stdout[-2000:]
    p = subprocess.run(["h2load", "-n", "2000", "-c", "20", "-m", "20",
                        "http://127.0.0.1:%d/hello" % srv.port],
                       capture_output=True, text=True, timeout=120)
    assert "2000 succeeded, 0 failed, 0 errored" in p.stdout, p.stdout[-2000:]


def test_range_on_file_over_h2(srv):
    c = H2Conn(srv.https_port, tls=True)
    try:
        status, headers, body = c.get("/file?name=big.bin&ar=1", extra=[("range", "bytes=10-19")])
    finally:
        c.close()
    assert status == 206
    assert headers["content-range"] == "bytes 10-19/%d" % GIB
    with open(os.path.join(srv.data, "big.bin"), "rb") as f:
        f.seek(10)
        assert body == f.read(10)


def test_generated_body_and_app_failure(srv):
    c = H2Conn(srv.https_port, tls=True)
    try:
        c.stream_hash(c.request("/gen?total=5000000&cl=1"))
        sid = max(c.streams)
        st = c.wait(sid)
        assert st["status"] == 200 and st["ended"] and st["count"] == 5000000
        # an app failing mid-body: the stream is reset, never ended cleanly
        sid = c.request("/fail-mid-body")
        st = c.wait(sid)
        assert st["reset"] == h2.errors.ErrorCodes.INTERNAL_ERROR
        assert not st["ended"]
        # the connection is still fine
        assert c.get("/hello")[0] == 200
    finally:
        c.close()


# ------------------------------------------------- flow-control stalls


def test_output_pulled_only_as_the_window_allows(server_factory):
    """zfront takes from the exchange only the segment it is sending, never
    one ahead of the flow-control window: what the client has no room for
    stays queued in the exchange, whose suspension then holds the generator
    at wsgi.output_buffer (128 KiB here: 64 KiB chunks, a 64 KiB window; the
    progress marker lags one chunk behind what was yielded)."""
    s = start_h2(server_factory, "--output-buffer", "128k")
    c = H2Conn(s.port, window=1 << 30, settings={
        h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 65536,
        h2.settings.SettingCodes.MAX_FRAME_SIZE: 65536})
    try:
        sid = c.request("/gen?total=%d&chunk=65536&progress=pulled" % (64 << 20))
        c.hold.add(sid)
        assert c.pump(lambda: c.streams[sid]["count"] >= 65536)
        assert s.wait_marker("pulled")
        c.pump(lambda: False, timeout=1.0)  # time for a worker to overrun
        with open(s.marker("pulled")) as f:
            produced = int(f.read())
        assert c.streams[sid]["count"] == 65536
        assert produced <= 128 * 1024
    finally:
        c.close()


@pytest.fixture
def stall_srv(server_factory):
    return start_h2(server_factory, "--send-timeout", "1s", "--access-log", "-")


def test_stalled_stream_window_is_reset(stall_srv):
    """http.send_timeout applies to a stream whose window stays shut while
    output waits: RST_STREAM(CANCEL), the exchange aborted (the iterable's
    close() runs), a log line; the connection and its other streams go on."""
    s = stall_srv
    c = H2Conn(s.port)
    try:
        sid = c.request("/gen?total=%d&chunk=65536&marker=stalled" % (64 << 20))
        c.hold.add(sid)
        assert c.pump(lambda: c.streams[sid]["count"] >= 65535)
        st = c.wait(sid, timeout=TIMEOUT)
        assert st["reset"] == h2.errors.ErrorCodes.CANCEL and not st["ended"]
        assert st["count"] == 65535
        assert s.wait_marker("stalled")
        assert c.get("/hello")[0] == 200
    finally:
        c.close()
    assert s.wait_log(r"stream 1: flow-control window shut for \d+ ms with output waiting")
    assert s.wait_log(r'"GET /gen\?total=\d+&chunk=65536&marker=stalled HTTP/2" 200 65535 ')


def test_slow_reader_is_not_a_stall(stall_srv):
    """A client that keeps reading, slowly: its window is shut nearly all the
    time (each WINDOW_UPDATE is used up at once) but bytes keep going out, so
    http.send_timeout (1 s) never resets the stream (a 6 s download)."""
    s = stall_srv
    c = H2Conn(s.port)
    try:
        total = 4 << 20
        sid = c.request("/gen?total=%d&chunk=65536" % total)
        deadline = time.monotonic() + 60
        while not c.done(sid) and time.monotonic() < deadline:
            data = c.sock.recv(1 << 18)  # one read, at most the 64 KiB window
            assert data, "connection closed"
            for ev in c.conn.receive_data(data):
                c.handle(ev)
            c.flush()
            time.sleep(0.1)
        st = c.streams[sid]
        assert st["reset"] is None and st["ended"] and st["count"] == total
    finally:
        c.close()


def test_stalled_connection_window_is_closed(stall_srv):
    """The connection window shut (streams' windows open): past
    http.send_timeout, GOAWAY(ENHANCE_YOUR_CALM), close, exchanges aborted."""
    s = stall_srv
    c = H2Conn(s.port, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 30})
    c.no_ack = True
    try:
        for i in range(3):
            c.request("/gen?total=%d&chunk=65536&marker=connstall%d" % (64 << 20, i))
        assert c.pump(lambda: sum(st["count"] for st in c.streams.values()) >= 65535)
        assert c.wait_closed(timeout=TIMEOUT)
        assert c.terminated is not None
        assert c.terminated.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
        for i in range(3):
            assert s.wait_marker("connstall%d" % i)
    finally:
        c.close()
    assert s.wait_log(r"connection flow-control window shut for \d+ ms with output waiting")


# ------------------------------------------------------------ request bodies


def test_body_in_pieces_dispatched_only_at_end_stream(srv):
    """A body sent in pieces: the application is not called before the
    client's END_STREAM (each piece is followed by a PING round trip, so the
    server has processed it), and it then sees the whole body."""
    pieces = [os.urandom(n) for n in (1, 5000, 70000, 3)]
    c = H2Conn(srv.port)
    try:
        sid = c.request("/body?tag=pieces", method="POST", end=False)
        for i, piece in enumerate(pieces):
            c.send_body(sid, piece, end=False)
            c.conn.ping(b"piece%03d" % i)
            c.flush()
            n = c.events.count("PingAckReceived")
            assert c.pump(lambda: c.events.count("PingAckReceived") > n)
            # a request dispatched early would be answered now
            assert not c.pump(lambda: c.streams[sid]["status"] is not None, timeout=0.3)
        assert not any("tag=pieces" in ln for ln in srv.calls())
        c.conn.end_stream(sid)
        c.flush()
        st = c.wait(sid)
    finally:
        c.close()
    data = b"".join(pieces)
    got = json.loads(bytes(st["data"]))
    assert (got["len"], got["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    assert got["content_length"] == str(len(data))


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "no-length"])
def test_upload_spooled(srv, declared):
    data = os.urandom(3 * 1024 * 1024 + 7)
    c = H2Conn(srv.https_port, tls=True)
    try:
        extra = [("content-length", str(len(data)))] if declared else []
        sid = c.request("/body?mode=chunks&size=65536", method="POST", extra=extra, body=data)
        st = c.wait(sid, timeout=60)
    finally:
        c.close()
    assert st["status"] == 200, bytes(st["data"])
    got = json.loads(bytes(st["data"]))
    assert got["len"] == len(data)
    assert got["sha256"] == hashlib.sha256(data).hexdigest()
    assert got["content_length"] == str(len(data))
    assert got["spooled"] is True  # above wsgi.input_spool (1 MiB): a temp file


def test_expect_100_continue(srv):
    c = H2Conn(srv.port)
    try:
        sid = c.request("/echo", method="POST", extra=[("expect", "100-continue")], end=False)
        assert c.pump(lambda: c.streams[sid]["informational"])
        assert c.streams[sid]["informational"] == [100]
        c.send_body(sid, b"after continue")
        st = c.wait(sid)
    finally:
        c.close()
    assert st["status"] == 200 and bytes(st["data"]) == b"after continue"


# ------------------------------------------------------------------ limits


@pytest.fixture(scope="module")
def limited(module_server_factory):
    return start_h2(module_server_factory, "--max-body-size", "1m", "--set",
                    "h2.max_header_list_size=16k", "--max-headers", "50", "--body-timeout", "1s",
                    "--set", "h2.max_concurrent_streams=8")


def test_body_limit_declared(limited):
    c = H2Conn(limited.port)
    try:
        sid = c.request("/body?tag=declared", method="POST",
                        extra=[("content-length", str(2 << 20))], end=False)
        st = c.wait(sid)
        assert st["status"] == 413
        assert c.get("/hello")[0] == 200  # the connection goes on
    finally:
        c.close()
    assert not any("tag=declared" in line for line in limited.calls())


def test_body_limit_streamed(limited):
    c = H2Conn(limited.https_port, tls=True)
    try:
        sid = c.request("/body?tag=streamed", method="POST", body=os.urandom(3 << 20))
        st = c.wait(sid)
        assert st["status"] == 413
        assert c.get("/hello")[0] == 200
    finally:
        c.close()
    assert not any("tag=streamed" in line for line in limited.calls())


def test_header_list_too_large(limited):
    c = H2Conn(limited.port)
    try:
        extra = [("x-big-%d" % i, "v" * 1000) for i in range(20)]
        status, _, _ = c.get("/hello?tag=bighdr", extra=extra)
        assert status == 431
        extra = [("x-many-%d" % i, "v") for i in range(60)]
        status, _, _ = c.get("/hello?tag=manyhdr", extra=extra)
        assert status == 431
        assert c.get("/hello")[0] == 200
    finally:
        c.close()
    assert not any("tag=bighdr" in ln or "tag=manyhdr" in ln for ln in limited.calls())


def test_stalled_upload_gets_408(limited):
    c = H2Conn(limited.port)
    try:
        sid = c.request("/body?tag=stalled", method="POST", body=b"x" * 1000, end=False)
        st = c.wait(sid)
        assert st["status"] == 408
    finally:
        c.close()
    assert not any("tag=stalled" in line for line in limited.calls())


def test_max_concurrent_streams_advertised(limited):
    c = H2Conn(limited.port)
    try:
        assert c.pump(lambda: c.conn.remote_settings.max_concurrent_streams == 8)
        # 8 slow requests fill the connection; the server still answers them all
        sids = [c.request("/sleep?s=0.2") for _ in range(8)]
        for sid in sids:
            assert c.wait(sid)["status"] == 200
    finally:
        c.close()


def test_idle_timeout_goaway(server_factory):
    s = start_h2(server_factory, "--set", "h2.idle_timeout=1s")
    c = H2Conn(s.port)
    try:
        assert c.get("/hello")[0] == 200
        assert c.wait_closed(timeout=TIMEOUT)
        assert c.terminated is not None
        assert c.terminated.error_code == h2.errors.ErrorCodes.NO_ERROR
    finally:
        c.close()


def test_graceful_shutdown_finishes_streams(server_factory):
    """SIGTERM: GOAWAY (NO_ERROR) at once, the stream in flight still gets its
    whole response, then the server exits 0. (nghttp, whose verbose output
    shows the frames; python-h2 stops reading at GOAWAY.)"""
    s = start_h2(server_factory)
    p = subprocess.Popen(["nghttp", "-v", "-t", "30",
                          "https://127.0.0.1:%d/sleep?s=1.5&started=slow" % s.https_port],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert s.wait_marker("slow")
        s.signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=40)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    goaway = out.find("recv GOAWAY frame")
    assert goaway >= 0, out[-3000:]
    assert "error_code=NO_ERROR" in out[goaway:goaway + 200]
    # the response frames come after the GOAWAY, complete
    after = out[goaway:]
    assert ":status: 200" in after
    assert "slept 1.5" in after
    assert re.search(r"recv DATA frame <length=\d+, flags=0x01, stream_id=\d+>", after), after
    assert s.wait(TIMEOUT) == 0


def test_access_log_per_stream(server_factory):
    s = start_h2(server_factory, "--access-log", "-")
    p = curl("--http2-prior-knowledge", "http://127.0.0.1:%d/hello?log=1" % s.port)
    assert p.stdout == b"Hello, world!"
    assert s.wait_log(r'"GET /hello\?log=1 HTTP/2" 200 13 "-" "curl/')


def test_no_fd_leak_after_aborted_streams(server_factory):
    s = start_h2(server_factory)
    write_random_file(os.path.join(s.data, "f.bin"), 8 << 20)
    c = H2Conn(s.port)
    assert c.get("/hello")[0] == 200
    c.close()
    base = s.fd_count()
    for i in range(50):
        c = H2Conn(s.https_port if i % 2 else s.port, tls=bool(i % 2))
        for _ in range(3):
            c.request("/file?name=f.bin")
        c.pump(lambda: sum(st["count"] for st in c.streams.values()) > 10000)
        c.close()
    assert wait_until(lambda: s.fd_count() <= base, timeout=TIMEOUT), (base, s.fds())


# --------------------------------------------- RFC 9113 stream states (raw)


class RawH2:
    """HTTP/2 frames written and read by hand (hyperframe + hpack), for what
    python3-h2 refuses to send: frames on closed streams, stream ids going
    backwards, header blocks cut into CONTINUATION frames."""

    def __init__(self, port, settings=None, tls=False):
        import hpack
        self.sock = socket.create_connection(("127.0.0.1", port), TIMEOUT)
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.set_alpn_protocols(["h2"])
            self.sock = ctx.wrap_socket(self.sock)
            assert self.sock.selected_alpn_protocol() == "h2"
        self.tls = tls
        self.enc = hpack.Encoder()
        self.dec = hpack.Decoder()
        self.dec.max_allowed_table_size = 1 << 16
        self.buf = b""
        self.frames = []
        self.closed = False
        s = hyperframe.frame.SettingsFrame(0, settings=settings or {})
        self.sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + s.serialize())

    def send(self, *frames):
        self.sock.sendall(b"".join(f.serialize() for f in frames))

    def block(self, path, method="GET", extra=()):
        return self.enc.encode([(":method", method), (":path", path),
                                (":scheme", "https" if self.tls else "http"),
                                (":authority", "localhost")] + list(extra))

    def headers(self, sid, path, end_stream=True, **kw):
        f = hyperframe.frame.HeadersFrame(sid, self.block(path, **kw))
        f.flags.add("END_HEADERS")
        if end_stream:
            f.flags.add("END_STREAM")
        return f

    def data(self, sid, payload, end_stream=False):
        f = hyperframe.frame.DataFrame(sid, payload)
        if end_stream:
            f.flags.add("END_STREAM")
        return f

    def read_frame(self, timeout=TIMEOUT):
        """The next frame (SETTINGS and PING from the server are answered),
        or None when the connection closed or nothing came in time."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 9:
                f, length = hyperframe.frame.Frame.parse_frame_header(self.buf[:9])
                if len(self.buf) >= 9 + length:
                    f.parse_body(memoryview(self.buf[9:9 + length]))
                    self.buf = self.buf[9 + length:]
                    self.frames.append(f)
                    if isinstance(f, hyperframe.frame.SettingsFrame) and "ACK" not in f.flags:
                        self.send(hyperframe.frame.SettingsFrame(0, flags=["ACK"]))
                    if isinstance(f, hyperframe.frame.HeadersFrame):
                        f.decoded = dict(self.dec.decode(f.data))
                    return f
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except (socket.timeout, ssl.SSLWantReadError):
                return None
            except OSError:
                chunk = b""
            if not chunk:
                self.closed = True
                continue
            self.buf += chunk

    def until(self, pred, timeout=TIMEOUT):
        """Reads frames until pred(frame) is true; returns that frame or None."""
        deadline = time.monotonic() + timeout
        while True:
            f = self.read_frame(max(0.0, deadline - time.monotonic()))
            if f is None or pred(f):
                return f

    def response(self, sid, timeout=TIMEOUT):
        """(status, body) of stream sid, read until its END_STREAM."""
        status, body = None, b""
        while True:
            f = self.until(lambda f: getattr(f, "stream_id", 0) == sid, timeout)
            if f is None:
                return status, None
            if isinstance(f, hyperframe.frame.HeadersFrame):
                status = int(f.decoded[":status"]) if ":status" in f.decoded else status
            if isinstance(f, hyperframe.frame.DataFrame):
                body += f.data
                if f.data:
                    self.send(hyperframe.frame.WindowUpdateFrame(0, len(f.data)))
            if isinstance(f, hyperframe.frame.RstStreamFrame):
                return status, None
            if "END_STREAM" in f.flags and status and status >= 200:
                return status, body

    def error_for(self, sid):
        """Reads until a GOAWAY or an RST_STREAM for sid (or the close):
        returns ("goaway", code), ("rst", code) or (None, None)."""
        f = self.until(lambda f: isinstance(f, hyperframe.frame.GoAwayFrame) or
                       (isinstance(f, hyperframe.frame.RstStreamFrame) and f.stream_id == sid))
        if isinstance(f, hyperframe.frame.GoAwayFrame):
            return "goaway", f.error_code
        if isinstance(f, hyperframe.frame.RstStreamFrame):
            return "rst", f.error_code
        return None, None

    def close(self):
        self.sock.close()


STREAM_CLOSED = h2.errors.ErrorCodes.STREAM_CLOSED
PROTOCOL_ERROR = h2.errors.ErrorCodes.PROTOCOL_ERROR


@pytest.fixture(scope="module")
def plain(module_server_factory):
    """A server without the 1 GiB file, for the raw-frame tests."""
    return start_h2(module_server_factory)


@pytest.mark.parametrize("frame", ["data", "headers", "continuation"])
def test_frame_after_end_stream_is_stream_closed(plain, frame):
    """RFC 9113 5.1: after the client's END_STREAM (and the response), a
    DATA, HEADERS or CONTINUATION frame on that stream is a STREAM_CLOSED
    error (stream or connection), never silently taken."""
    c = RawH2(plain.port)
    try:
        c.send(c.headers(1, "/hello"))
        assert c.response(1) == (200, b"Hello, world!")
        if frame == "data":
            c.send(c.data(1, b"late", end_stream=True))
        elif frame == "headers":
            c.send(c.headers(1, "/hello?again=1"))
        else:
            h = hyperframe.frame.HeadersFrame(1, b"")
            f = hyperframe.frame.ContinuationFrame(1, c.block("/hello?cont=1"))
            f.flags.add("END_HEADERS")
            c.send(h, f)
        kind, code = c.error_for(1)
        assert code == STREAM_CLOSED, (kind, code, c.frames[-5:])
    finally:
        c.close()
    assert not any("again=1" in ln or "cont=1" in ln for ln in plain.calls())


def test_frame_after_rst_stream_is_stream_closed(plain):
    """RFC 9113 5.1: DATA on a stream the client itself reset."""
    c = RawH2(plain.port)
    try:
        c.send(c.headers(1, "/body", method="POST", end_stream=False),
               hyperframe.frame.RstStreamFrame(1, error_code=8))
        c.send(c.data(1, b"after reset", end_stream=True))
        kind, code = c.error_for(1)
        assert code == STREAM_CLOSED, (kind, code, c.frames[-5:])
    finally:
        c.close()


def test_lower_stream_id_is_protocol_error(plain):
    """RFC 9113 5.1.1: a new stream's id must be greater than every id the
    client opened: HEADERS on 3 after 5 is a connection PROTOCOL_ERROR."""
    c = RawH2(plain.port)
    try:
        c.send(c.headers(5, "/hello"))
        assert c.response(5) == (200, b"Hello, world!")
        c.send(c.headers(3, "/hello?backwards=1"))
        kind, code = c.error_for(3)
        assert (kind, code) == ("goaway", PROTOCOL_ERROR), c.frames[-5:]
    finally:
        c.close()
    assert not any("backwards=1" in ln for ln in plain.calls())


# ------------------------------------------------- aborted responses logged


def test_aborted_streams_are_logged(server_factory):
    """A stream the client resets still gets its access-log line: 499 with 0
    bytes when no response headers were sent yet (as nginx logs), else the
    real status and the body bytes sent so far."""
    s = start_h2(server_factory, "--access-log", "-")
    c = H2Conn(s.port)
    try:
        sid = c.request("/sleep?s=1&started=ab1")
        assert s.wait_marker("ab1")
        c.conn.reset_stream(sid)
        c.flush()
        # the stream's window stays at the initial 65,535 bytes: exactly
        # that much of the body goes out before the client resets it
        big = c.request("/gen?total=5000000&chunk=65536&tag=ab2")
        c.hold.add(big)
        assert c.pump(lambda: c.streams[big]["count"] >= 65535)
        c.conn.reset_stream(big)
        c.flush()
        assert c.get("/hello")[0] == 200
    finally:
        c.close()
    assert s.wait_log(r'"GET /sleep\?s=1&started=ab1 HTTP/2" 499 0 ')
    assert s.wait_log(r'"GET /gen\?total=5000000&chunk=65536&tag=ab2 HTTP/2" 200 65535 ')


def test_lower_stream_id_after_priority_is_protocol_error(plain):
    """A PRIORITY frame may name an idle stream (nghttp2 then keeps a
    placeholder for it); opening that stream after a higher one is still a
    PROTOCOL_ERROR (RFC 9113 5.1.1)."""
    c = RawH2(plain.port)
    try:
        c.send(hyperframe.frame.PriorityFrame(3, depends_on=0, stream_weight=15))
        c.send(c.headers(5, "/hello"))
        assert c.response(5) == (200, b"Hello, world!")
        c.send(c.headers(3, "/hello?backwards=2"))
        kind, code = c.error_for(3)
        assert (kind, code) == ("goaway", PROTOCOL_ERROR), c.frames[-5:]
    finally:
        c.close()
    assert not any("backwards=2" in ln for ln in plain.calls())
