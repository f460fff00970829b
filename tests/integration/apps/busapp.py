"""The WSGI application of the bus tests (test_bus*.py): wsapp (handshakes,
POST /publish, the "listen/*" listener writing listened.log), plus
GET /busstats: zfront.bus_stats() as JSON, and POST /publishmany?topic=T&n=N:
N zfront.publish calls in a row, data {"i": 0..N-1, "by": body}."""
import json
from urllib.parse import parse_qs

import zfront
from wsapp import application as ws_application


def application(environ, start_response):
    if environ.get("PATH_INFO") == "/busstats":
        body = json.dumps(zfront.bus_stats()).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    if environ.get("PATH_INFO") == "/publishmany":
        q = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        n = int(environ.get("CONTENT_LENGTH") or 0)
        by = environ["wsgi.input"].read(n).decode()
        ok = all([zfront.publish(q["topic"], {"i": i, "by": by}) for i in range(int(q["n"]))])
        body = b"ok" if ok else b"not queued"
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    return ws_application(environ, start_response)
