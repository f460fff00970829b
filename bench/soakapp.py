"""The WSGI app of the soak (bench/soak): zfront's demo site (its content
store, WebDAV, /hello, /upload, /files/big.bin, the WebSocket handshake and
/live) in the state dir $ZFRONT_SOAK_STATE, plus one bench-only path:

  /big?n=BYTES  a generated body of BYTES zero bytes in 64 KiB pieces (what
                the slow readers and the load spike fetch: memory the server
                holds while a client does not read, as bench/mem_spike.py).

The size of big.bin comes from ZFRONT_DEMO_BIG_SIZE (bench/soak sets it)."""
import os
from urllib.parse import parse_qs

from zfront.demo import DemoApp

PIECE = 64 * 1024
MAX_BIG = 64 * 1024 * 1024

_demo = DemoApp(os.environ.get("ZFRONT_SOAK_STATE", "var/zfront-soak"))


def _big(n):
    chunk = bytes(PIECE)
    while n > 0:
        yield chunk[:n] if n < PIECE else chunk
        n -= PIECE


def application(environ, start_response):
    if environ.get("PATH_INFO") == "/big" and environ["REQUEST_METHOD"] == "GET":
        q = parse_qs(environ.get("QUERY_STRING", ""))
        try:
            n = int((q.get("n") or ["1048576"])[-1])
        except ValueError:
            n = -1
        if not 0 <= n <= MAX_BIG:
            body = b"n must be 0..%d\n" % MAX_BIG
            start_response("400 Bad Request", [("Content-Type", "text/plain"),
                                               ("Content-Length", str(len(body)))])
            return [body]
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(n))])
        return _big(n)
    return _demo(environ, start_response)
