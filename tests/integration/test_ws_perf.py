"""What keeps WebSocket fan-out cheap: a wss:// client's burst of messages is read in one
loop pass (OpenSSL reads ahead, the session comes back for the buffered records), and an
idle session holds no wslay context (released when nothing is in flight, made again on the
next byte in or message out) without losing a byte of a frame or a fragmented message.
Counters are read from the SIGUSR1 dump ("SIGUSR1: stat NAME: VALUE")."""
import base64
import json
import os
import re
import signal
import socket
import ssl
import struct

from wstest import APP, RawWS
from zftest import TIMEOUT, wait_until


def stats(srv):
    """The server's module counters, from a SIGUSR1 dump."""
    start = len(srv.log_bytes())
    srv.signal(signal.SIGUSR1)
    wait_until(lambda: b"SIGUSR1: end of the dump" in srv.log_bytes()[start:])
    text = srv.log_bytes()[start:].decode(errors="replace")
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"SIGUSR1: stat ([\w.]+): (\d+)", text)}


class TlsWS(RawWS):
    """RawWS over TLS to the https listener on `port`."""

    def __init__(self, port, path="/ws"):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["http/1.1"])
        raw = socket.create_connection(("127.0.0.1", port), TIMEOUT)
        self.sock = ctx.wrap_socket(raw)
        self.sock.settimeout(TIMEOUT)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n" % (path, port, key)).encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            self.buf += chunk
        self.head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.status = int(self.head.split(b" ", 2)[1]) if self.head else 0

    def read_json(self):
        op, payload = self.read_frame()
        assert op == 0x1, (op, payload)
        return json.loads(payload)


def start_https(server_factory, *args):
    srv = server_factory(*args, start=False, app=APP)
    srv.args += ["--https", "127.0.0.1:0", "--state-dir", os.path.join(srv.root, "state")]
    srv.start()
    return srv, int(srv.wait_log(r"https: listening on 127\.0\.0\.1:(\d+)").group(1))


def test_wss_burst_of_publishes_is_read_in_one_pass_and_arrives_in_order(server_factory):
    srv, port = start_https(server_factory, "--ws-public-topic", "chat/")
    sub = TlsWS(port, "/ws?user=ed")
    assert sub.status == 101
    sub.send_json(type="subscribe", topic="chat/burst")
    assert sub.read_json() == {"type": "subscribed", "topic": "chat/burst"}
    pub = TlsWS(port, "/ws?user=bob")
    assert pub.status == 101
    n = 300
    # one TLS record per message, sent back to back: the server has many records to read
    # at once, and nothing more arrives after them (a record left in OpenSSL's read-ahead
    # buffer would never be read: the acknowledgements below would not come)
    for i in range(n):
        pub.send_json(type="publish", topic="chat/burst", data=i)
    acks = [pub.read_json() for _ in range(n)]
    assert [a["type"] for a in acks] == ["published"] * n
    events = [sub.read_json() for _ in range(n)]
    assert [e["data"] for e in events] == list(range(n))
    ids = [e["id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == n
    # the read event was made active again for buffered records at least once
    assert stats(srv)["ws.tls_read_ahead"] > 0
    pub.close()
    sub.close()
