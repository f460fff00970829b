"""bench/wsload.c, the fan-out benchmark's load client (bench/ws_fanout.py), against
zfront over ws:// and wss://: it compiles, opens and subscribes its connections, and
counts every event with its publish-to-receive latency, so the benchmark's figures can
be trusted."""
import json
import shutil
import subprocess
import sys

import pytest

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
                    "-lssl", "-lcrypto"],
                   check=True)
    return exe


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
        for proc in (subs, pub):
            if proc and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert p["role"] == "publisher" and p["sent"] == 25 and p["bad"] == 0
    assert r["role"] == "subscriber" and r["subscribed"] == 40 and r["closed"] == 0
    assert r["received"] == 40 * 25 and r["samples"] == 40 * 25 and r["bad"] == 0
    assert p["pub_start"] <= r["first_rx"] <= r["last_rx"]
    assert 0 <= r["p50_ms"] <= r["p99_ms"] <= r["max_ms"]
    assert r["cpu_s"] >= 0 and p["cpu_s"] >= 0


def test_wsload_reports_a_refused_handshake(server_factory, wsload):
    srv = server_factory()  # the default test app has no /ws grant: the app refuses
    out = subprocess.run([wsload, "--port", str(srv.port), "--subs", "3", "--timeout", "10"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=20)
    assert "handshake refused" in out.stderr
    assert out.stdout.splitlines()[0] == "ready 0"
    r = json.loads(out.stdout.splitlines()[-1])
    assert r["subscribed"] == 0 and r["closed"] == 3 and r["received"] == 0


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
