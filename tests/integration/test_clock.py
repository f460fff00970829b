"""The clock (ZServer's clock-server successor): periodic internal requests
through the worker pool on channel "clock", with basic credentials, never
overlapping themselves (a tick during a running request is skipped)."""
import base64
import json
import os

from zftest import wait_until


def ops_log(srv):
    try:
        with open(srv.marker("ops.log")) as f:
            return [json.loads(line) for line in f]
    except FileNotFoundError:
        return []


def clock_calls(srv):
    return [e for e in ops_log(srv) if e["channel"] == "clock"]


def test_clock_table_sends_authenticated_requests_on_the_clock_channel(server_factory, tmp_path):
    conf = tmp_path / "zfront.toml"
    conf.write_text('[[clock]]\npath = "/slow?tick=1"\nperiod = "200ms"\nmethod = "POST"\n'
                    'user = "admin"\npassword = "s3cret:x"\nhost = "www.example.org"\n\n'
                    '[[clock]]\npath = "/status"\nperiod = 0.25\n\n'
                    '[[clock]]\npath = "/status?combined"\nperiod = 0.25\nuser = "bob:pw:x"\n')
    srv = server_factory("--config", str(conf), "--access-log", "-", app="opsapp")
    assert wait_until(lambda: len([e for e in clock_calls(srv) if e["path"] == "/slow"]) >= 2
                      and any(e["path"] == "/status" for e in clock_calls(srv)))
    calls = clock_calls(srv)
    tick = [e for e in calls if e["path"] == "/slow"][0]
    assert tick["method"] == "POST"
    assert tick["query"] == "tick=1"
    assert tick["host"] == "www.example.org"
    assert tick["auth"] == "Basic " + base64.b64encode(b"admin:s3cret:x").decode()
    assert wait_until(lambda: [e for e in clock_calls(srv) if e["query"] == "combined"])
    calls = clock_calls(srv)
    other = [e for e in calls if e["path"] == "/status" and not e["query"]][0]
    assert other["method"] == "GET" and other["auth"] is None
    combined = [e for e in calls if e["query"] == "combined"][0]
    assert combined["auth"] == "Basic " + base64.b64encode(b"bob:pw:x").decode()
    assert "bob:pw" not in srv.log()  # the password is never logged
    # a request from a client is on the http channel, not the clock's
    srv.get("/status")
    assert [e for e in ops_log(srv) if e["channel"] == "http"]
    # the result is logged: access log (internal) and error log (status)
    assert srv.wait_log(r'internal - - \[[^]]*\] "POST /slow\?tick=1 INTERNAL" 200 3 "-" "clock"')
    assert srv.wait_log(r"clock /slow\?tick=1: POST /slow\?tick=1 answered 200")


def test_clock_flag_never_overlaps_and_skips_missed_ticks(server_factory):
    # each request takes 0.6 s, the period is 0.1 s: without the guard the
    # requests would overlap on the 4 workers
    srv = server_factory("--clock", "/slow?s=0.6:100ms", "--threads", "4", app="opsapp")
    assert wait_until(lambda: len(clock_calls(srv)) >= 3, timeout=15)
    calls = sorted(clock_calls(srv), key=lambda e: e["start"])
    for a, b in zip(calls, calls[1:]):
        assert b["start"] >= a["end"], (a, b)
    assert srv.wait_log(r"clock /slow\?s=0\.6: the previous request still runs: tick skipped")


def test_clock_error_status_is_logged_as_a_warning(server_factory):
    srv = server_factory("--clock", "/status?code=503:100ms", app="opsapp")
    assert srv.wait_log(r"\[warn\] clock /status\?code=503: GET /status\?code=503 answered 503")


def test_bad_clock_entries_stop_the_start(server_factory, tmp_path):
    for args, msg in [
        (["--clock", "/tick"], r"expected PATH:PERIOD"),
        (["--clock", "tick:1s"], r"the path must start with /"),
        (["--clock", "/tick:1ms"], r"at least 10ms"),
        (["--set", "clock.entries=path=/x\tperiod=1s\tcolour=red"], r'bad field "colour=red"'),
    ]:
        srv = server_factory(*args, app="opsapp", wait_listen=False, start=False)
        srv.spawn()
        assert srv.wait() == 2, srv.log()
        assert srv.wait_log(msg), srv.log()
