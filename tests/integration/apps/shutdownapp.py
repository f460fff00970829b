"""An app that registers Python shutdown hooks when it is imported: one with
zfront.on_shutdown (also used as a decorator) and one with atexit. Each
appends a line to $ZF_TEST_MARKERS/shutdown.log, saying whether the slow
request had finished by then (hooks must run after the workers are done).
/slow?s=N sleeps N seconds and marks `slow-started`, then `slow-done`.
With ZF_TEST_BAD_HOOK=1 in the environment it registers a non-callable."""
import atexit
import os
import time
from urllib.parse import parse_qs

import zfront

MARKERS = os.environ.get("ZF_TEST_MARKERS", "/nonexistent")


def _log(line):
    with open(os.path.join(MARKERS, "shutdown.log"), "a") as f:
        f.write(line + "\n")


def _state():
    done = os.path.exists(os.path.join(MARKERS, "slow-done"))
    started = os.path.exists(os.path.join(MARKERS, "slow-started"))
    return "slow-done" if done else ("slow-running" if started else "no-slow")


def at_exit():
    _log("atexit " + _state())


atexit.register(at_exit)


@zfront.on_shutdown
def first_hook():
    _log("on_shutdown-first " + _state())


def failing_hook():
    raise RuntimeError("this shutdown hook fails on purpose")


zfront.on_shutdown(failing_hook)
zfront.on_shutdown(lambda: _log("on_shutdown-last " + _state()))

if os.environ.get("ZF_TEST_BAD_HOOK"):
    zfront.on_shutdown(42)  # TypeError: the app fails to load


def application(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        s = float(parse_qs(environ["QUERY_STRING"]).get("s", ["1"])[0])
        open(os.path.join(MARKERS, "slow-started"), "w").close()
        time.sleep(s)
        open(os.path.join(MARKERS, "slow-done"), "w").close()
    body = b"ok"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [body]
