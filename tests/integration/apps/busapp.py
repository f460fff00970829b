"""The WSGI application of the bus tests (test_bus*.py): wsapp (handshakes,
POST /publish, the "listen/*" listener writing listened.log), plus
GET /busstats: zfront.bus_stats() as JSON."""
import json

import zfront
from wsapp import application as ws_application


def application(environ, start_response):
    if environ.get("PATH_INFO") == "/busstats":
        body = json.dumps(zfront.bus_stats()).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    return ws_application(environ, start_response)
