"""wss:// sessions drive the socket and the SSL themselves (no OpenSSL bufferevent): writes
that would block are retried as OpenSSL requires, a slow consumer is still cut, a TLS 1.3
KeyUpdate from the client is answered, and the server ends with a close_notify."""
import base64
import json
import os
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time

from test_ws_perf import TlsWS, start_https, stats
from wstest import publish
from zftest import TIMEOUT


def test_wss_subscriber_that_stops_reading_gets_every_event_whole_and_in_order(server_factory):
    """The subscriber reads nothing while ~10 MB of events pile up, each larger than the
    kernel's socket buffers: the server's socket fills in the middle of an event, SSL_write
    stops with a record half sent (SSL_ERROR_WANT_WRITE) and must be retried with at least
    the same bytes (OpenSSL refuses less: the connection would be lost); when the subscriber
    reads again every event arrives, whole and in order."""
    srv, port = start_https(server_factory, "--ws-public-topic", "chat/",
                            "--ws-max-send-buffer", "64m", "--set", "hub.max_event=2m")
    sub = TlsWS(port, "/ws?user=ed", rcvbuf=4096)
    assert sub.status == 101
    sub.send_json(type="subscribe", topic="chat/pile")
    assert sub.read_json() == {"type": "subscribed", "topic": "chat/pile"}
    n = 10
    pads = [chr(ord("a") + i) * 1000000 for i in range(n)]
    for i in range(n):
        publish(srv, "chat/pile", [i, pads[i]])
    got = [sub.read_json()["data"] for _ in range(n)]
    assert [g[0] for g in got] == list(range(n))
    assert all(g[1] == pads[i] for i, g in enumerate(got))
    assert stats(srv)["ws.slow_consumers"] == 0
    assert "WebSocket TLS connection lost" not in srv.log()
    sub.close()


def test_wss_slow_consumer_closed_1008(server_factory):
    srv, port = start_https(server_factory, "--ws-public-topic", "news/",
                            "--ws-max-send-buffer", "64k")
    c = TlsWS(port, "/ws?user=bob", rcvbuf=4096)
    c.send_json(type="subscribe", topic="news/slow")
    assert c.read_json() == {"type": "subscribed", "topic": "news/slow"}
    big = "x" * 20000
    for _ in range(300):
        publish(srv, "news/slow", big)
        if "slow consumer" in srv.log():
            break
    assert srv.wait_log(r"slow consumer: more than 65536 bytes queued")
    code, frames = c.read_until_close()
    assert code == 1008
    events = [json.loads(p) for op, p in frames if op == 0x1]
    assert events and all(e["data"] == big for e in events)
    assert len(events) < 300
    assert stats(srv)["ws.slow_consumers"] == 1
    c.close()


def closed_with_close_notify(c):
    """After the close frame: True when the server's TLS layer sent close_notify (a clean
    end: recv gives b""), False when the socket just closed (strict_eof: OpenSSL's
    "unexpected eof while reading")."""
    try:
        while True:
            if not c.sock.recv(4096):
                return True
    except ssl.SSLError as e:
        if isinstance(e, ssl.SSLEOFError) or "UNEXPECTED_EOF" in str(e):
            return False
        raise


def send_close(c, code=1000):
    c.send(0x8, struct.pack("!H", code))


def test_wss_server_ends_with_close_notify(server_factory):
    srv, port = start_https(server_factory, "--ws-public-topic", "news/")
    # after the close handshake (the client closes)
    a = TlsWS(port, "/ws?user=a", strict_eof=True)
    assert a.status == 101
    send_close(a)
    code, _ = a.read_until_close()
    assert code == 1000
    assert closed_with_close_notify(a)
    a.close()
    # at shutdown (1001), after the client answers the close
    b = TlsWS(port, "/ws?user=b", strict_eof=True)
    assert b.status == 101
    b.send_json(type="subscribe", topic="news/x")
    assert b.read_json() == {"type": "subscribed", "topic": "news/x"}
    srv.signal(signal.SIGTERM)
    code, _ = b.read_until_close()
    assert code == 1001
    send_close(b)
    assert closed_with_close_notify(b)
    b.close()


class SClient:
    """openssl s_client over TLS 1.3 with -msg (the handshake messages it sends and gets are
    printed): "K" on its own line sends a KeyUpdate asking for one back."""

    def __init__(self, port):
        self.p = subprocess.Popen(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port,
                                   "-alpn", "http/1.1", "-tls1_3", "-msg"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT)
        self.out = bytearray()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        while True:
            b = os.read(self.p.stdout.fileno(), 65536)
            if not b:
                return
            self.out.extend(b)

    def wait(self, needle, start=0):
        """Waits for needle in the output after offset start: -> its offset."""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            i = self.out.find(needle, start)
            if i >= 0:
                return i
            if self.p.poll() is not None and self.out.find(needle, start) < 0:
                break
            time.sleep(0.02)
        raise AssertionError("%r not seen; output:\n%s" % (needle, self.out[start:].decode(
            errors="replace")[-3000:]))

    def write(self, data):
        self.p.stdin.write(data)
        self.p.stdin.flush()

    def send_json(self, **msg):
        payload = json.dumps(msg).encode()
        assert len(payload) < 126
        k = os.urandom(4)
        self.write(struct.pack("!BB", 0x81, 0x80 | len(payload)) + k +
                   bytes(c ^ k[i % 4] for i, c in enumerate(payload)))

    def close(self):
        self.p.kill()
        self.p.wait()
        self.reader.join(TIMEOUT)


def test_wss_session_goes_on_after_a_key_update_from_the_client(server_factory):
    """TLS 1.3 KeyUpdate with update_requested: the server reads it, must send its own
    (OpenSSL writes while the session reads), and both directions go on with new keys."""
    srv, port = start_https(server_factory, "--ws-public-topic", "news/",
                            "--ws-app-auth=off")
    c = SClient(port)
    try:
        c.wait(b"Verify return code")
        c.wait(b"<<< TLS 1.3, Handshake")  # the server's handshake is in
        time.sleep(0.2)  # s_client reads its stdin only once the handshake is done
        key = base64.b64encode(os.urandom(16)).decode()
        c.write(("GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n" % key).encode())
        c.wait(b"101 Switching Protocols")
        c.send_json(type="subscribe", topic="news/k")
        at = c.wait(b'{"type":"subscribed","topic":"news/k"}')
        c.write(b"K\n")
        at = c.wait(b">>> TLS 1.3, Handshake [length 0005], KeyUpdate", at)
        publish(srv, "news/k", "after")  # server to client, new keys
        # the server's answer, before the event: a KeyUpdate not asking for one back
        at = c.wait(b"<<< TLS 1.3, Handshake [length 0005], KeyUpdate\n    18 00 00 01 00", at)
        at = c.wait(b'"topic":"news/k"', at)
        c.wait(b'"data":"after"', at)
        c.send_json(type="unsubscribe", topic="news/k")  # client to server, new keys
        c.wait(b'{"type":"unsubscribed","topic":"news/k"}', at)
        assert "WebSocket TLS connection lost" not in srv.log()
    finally:
        c.close()


class MemTls:
    """TLS over memory BIOs on a plain socket (ssl.SSLObject): what is sent is chosen to the
    byte, e.g. a close frame and close_notify in one write."""

    def __init__(self, port):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["http/1.1"])
        self.sock = socket.create_connection(("127.0.0.1", port), TIMEOUT)
        self.inc, self.outg = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.inc, self.outg)
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.flush()
                self.fill()
        self.flush()

    def flush(self):
        data = self.outg.read()
        if data:
            self.sock.sendall(data)

    def fill(self):
        data = self.sock.recv(65536)
        if not data:
            self.inc.write_eof()
        self.inc.write(data) if data else None

    def read(self):
        """-> the next plaintext bytes, b"" at close_notify (SSLZeroReturnError)."""
        while True:
            try:
                return self.tls.read(65536)
            except ssl.SSLWantReadError:
                self.flush()
                self.fill()
            except ssl.SSLZeroReturnError:
                return b""


def test_wss_close_frame_sent_with_close_notify_is_answered(server_factory):
    """The client sends its close frame and close_notify in one write: the server reads both
    in one pass, handles the frame (answers with its close frame) and then ends, with its own
    close_notify."""
    srv, port = start_https(server_factory, "--ws-public-topic", "news/")
    c = MemTls(port)
    key = base64.b64encode(os.urandom(16)).decode()
    c.tls.write(("GET /ws?user=a HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n" % key).encode())
    c.flush()
    got = b""
    while b"\r\n\r\n" not in got:
        got += c.read()
    assert got.startswith(b"HTTP/1.1 101 ")
    got = got.partition(b"\r\n\r\n")[2]
    k = os.urandom(4)
    payload = struct.pack("!H", 1000)
    c.tls.write(struct.pack("!BB", 0x88, 0x80 | len(payload)) + k +
                bytes(b ^ k[i % 4] for i, b in enumerate(payload)))
    try:
        c.tls.unwrap()  # close_notify into the same outgoing buffer
    except ssl.SSLWantReadError:
        pass
    c.flush()  # one write: the frame's record, then close_notify
    while True:
        data = c.read()
        if not data:
            break
        got += data
    assert got[:4] == b"\x88\x02\x03\xe8"  # the server's close frame, 1000
    c.sock.close()
