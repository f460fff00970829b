"""WebDAV module (src/proto/webdav/): DAV methods and their headers reach
the app intact over HTTP/1.1 and h2, zfront.channel=webdav, the OPTIONS
headers, the client quirks (Microsoft trailing dots, OPTIONS *, macOS
Finder probes, Destination behind a proxy), the source server (its channel,
WEBDAV_SOURCE_PORT, the GET suffix, Zope told the port), and big PUT/GET
bodies (spooled, never whole in memory; an aborted PUT never reaches the
app; GET streamed from the loop).

Clients: http.client and raw sockets for HTTP/1.1, curl
--http2-prior-knowledge for h2c. App: apps/davapp.py (echoes what it got
as JSON); apps/fakezope stands in for Zope's ZPublisher.
"""
import hashlib
import http.client
import json
import os
import re
import signal
import subprocess

import pytest

from zftest import APPS, TIMEOUT, read_response, wait_until

SOURCE_RE = r"webdav-source: listening on 127\.0\.0\.1:(\d+)"
BIG = (1 << 30) if os.environ.get("ZF_TEST_BIG") == "1" else (256 << 20)

DAV_HEADERS = {
    "Depth": "infinity",
    "Destination": "http://other.example/dst/x",
    "Overwrite": "F",
    "If": '(<opaquelocktoken:1234-abcd>) (Not <DAV:no-lock>)',
    "Lock-Token": "<opaquelocktoken:1234-abcd>",
    "Timeout": "Second-3600, Infinite",
}
PROPFIND_BODY = (b'<?xml version="1.0" encoding="utf-8"?>\n'
                 b'<D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>\n')


def dav_server(factory, *args, **kw):
    kw.setdefault("app", "davapp:application")
    return factory(*args, **kw)


def source_port(srv):
    m = srv.wait_log(SOURCE_RE)
    assert m, srv.log()[-3000:]
    return int(m.group(1))


def h1(port, method, path, body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.headers, r.read()
    finally:
        c.close()


def echo(port, method, path, body=None, headers=None):
    status, _, data = h1(port, method, path, body, headers)
    assert status == 200, (status, data[:300])
    return json.loads(data)


def curl_h2(port, method, path, body=None, headers=None, out=None, upload=None):
    """One h2c request (prior knowledge) with curl; returns (status, body,
    response headers as a lower-case dict). Asserts HTTP/2 was used."""
    cmd = ["curl", "-sS", "--http2-prior-knowledge", "-X", method, "-D", "-",
           "-w", "\n%{http_version}", "--max-time", "120"]
    for k, v in (headers or {}).items():
        cmd += ["-H", "%s: %s" % (k, v)]
    if body is not None:
        cmd += ["--data-binary", "@-"]
    if upload:
        cmd += ["-T", upload]
    if out:
        cmd += ["-o", out]
    cmd.append("http://127.0.0.1:%d%s" % (port, path))
    p = subprocess.run(cmd, input=body, capture_output=True, timeout=180)
    assert p.returncode == 0, p.stderr
    raw, _, version = p.stdout.rpartition(b"\n")
    assert version == b"2", version
    head, _, data = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(b":")
        hdrs[k.strip().lower().decode()] = v.strip().decode()
    return status, data, hdrs


def calls(srv):
    return srv.calls()


MS_UA = {"User-Agent": "Microsoft-WebDAV-MiniRedir/10.0.19045"}


# ------------------------------------------------------- methods and headers


METHODS = ["OPTIONS", "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK",
           "GET", "PUT", "DELETE"]
DAV_METHODS = {"PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK"}


def check_echo(info, method, body):
    assert info["method"] == method
    assert info["path"] == "/dav/res"
    assert info["length"] == len(body)
    assert info["sha256"] == hashlib.sha256(body).hexdigest()
    for k, v in DAV_HEADERS.items():
        assert info["headers"]["HTTP_" + k.upper().replace("-", "_")] == v, k
    assert info["channel"] == ("webdav" if method in DAV_METHODS else "http"), method


def test_dav_methods_reach_the_app_intact_h1(server_factory):
    srv = dav_server(server_factory)
    for method in METHODS:
        info = echo(srv.port, method, "/dav/res", PROPFIND_BODY, dict(DAV_HEADERS))
        check_echo(info, method, PROPFIND_BODY)
    status, _, data = h1(srv.port, "HEAD", "/dav/res", None, dict(DAV_HEADERS))
    assert status == 200 and data == b""
    assert "HEAD /dav/res 0 " + hashlib.sha256(b"").hexdigest() in calls(srv)


def test_dav_methods_reach_the_app_intact_h2(server_factory):
    srv = dav_server(server_factory)
    for method in METHODS:
        status, data, _ = curl_h2(srv.port, method, "/dav/res", PROPFIND_BODY,
                                  dict(DAV_HEADERS))
        assert status == 200, data
        check_echo(json.loads(data), method, PROPFIND_BODY)


def test_dav_channel_can_be_turned_off(server_factory, tmp_path):
    conf = tmp_path / "zf.toml"
    conf.write_text("[webdav]\ndav_channel = false\n")
    srv = dav_server(server_factory, "--config", str(conf))
    assert echo(srv.port, "PROPFIND", "/dav/res")["channel"] == "http"


# ------------------------------------------------------------------ OPTIONS


def test_options_headers_added_only_when_the_app_shows_dav(server_factory):
    srv = dav_server(server_factory)
    _, h, _ = h1(srv.port, "OPTIONS", "/options-dav")
    assert h["DAV"] == "1,2" and h["MS-Author-Via"] == "DAV"
    _, h, _ = h1(srv.port, "OPTIONS", "/options-dav1")
    assert h["DAV"] == "1" and h["MS-Author-Via"] == "DAV"
    _, h, _ = h1(srv.port, "OPTIONS", "/options-plain")
    assert "DAV" not in h and "MS-Author-Via" not in h
    _, h, _ = h1(srv.port, "OPTIONS", "/options-own")
    assert h.get_all("DAV") == ["1"] and h.get_all("MS-Author-Via") == ["app"]
    # a 404 is not advertised either
    status, h, _ = h1(srv.port, "OPTIONS", "/gone/x")
    assert status == 404 and "DAV" not in h
    # the same over h2
    status, _, h = curl_h2(srv.port, "OPTIONS", "/options-dav")
    assert status == 200 and h["dav"] == "1,2" and h["ms-author-via"] == "DAV"


def test_options_star_is_answered_by_zfront(server_factory):
    """The Windows mini-redirector/Office ask "OPTIONS *" first; an app that
    serves only its tree answers "*" with 404 (davapp does): zfront answers."""
    srv = dav_server(server_factory)
    s = srv.connect()
    s.sendall(b"OPTIONS * HTTP/1.1\r\nHost: x\r\nUser-Agent: Microsoft-WebDAV-MiniRedir/10.0"
              b"\r\n\r\nOPTIONS /options-plain HTTP/1.1\r\nHost: x\r\n\r\n")
    f = s.makefile("rb")
    from zftest import read_response
    r, body = read_response(f, "OPTIONS")
    assert r.status == 200 and body == b""
    assert r.headers["DAV"] == "1,2" and r.headers["MS-Author-Via"] == "DAV"
    assert "PROPFIND" in r.headers["Allow"]
    r2, _ = read_response(f, "OPTIONS")  # the connection goes on
    assert r2.status == 200
    s.close()
    assert not any(c.startswith("OPTIONS *") for c in calls(srv)), calls(srv)


def test_root_probes_answered_when_configured(server_factory):
    """webdav.answer_root: the mini-redirector's OPTIONS / and PROPFIND /
    (Depth 0) are answered for an app that 404s on "/" (davapp does)."""
    probe = dict(MS_UA, Depth="0")
    off = dav_server(server_factory)
    assert h1(off.port, "PROPFIND", "/", PROPFIND_BODY, probe)[0] == 404
    srv = dav_server(server_factory, "--set", "webdav.answer_root=true")
    status, h, body = h1(srv.port, "OPTIONS", "/", None, MS_UA)
    assert status == 200 and h["DAV"] == "1,2" and h["MS-Author-Via"] == "DAV"
    status, h, body = h1(srv.port, "PROPFIND", "/", PROPFIND_BODY, probe)
    assert status == 207 and h["Content-Type"].startswith("application/xml")
    assert b"<D:href>/</D:href>" in body and b"<D:collection/>" in body
    assert int(h["Content-Length"]) == len(body)
    status, body2, _ = curl_h2(srv.port, "PROPFIND", "/", PROPFIND_BODY, probe)
    assert status == 207 and body2 == body
    # not the app's business so far
    assert not any(c.startswith(("OPTIONS / ", "PROPFIND / ")) for c in calls(srv)), calls(srv)
    # a listing (Depth 1), another client, another path: the app answers
    assert h1(srv.port, "PROPFIND", "/", PROPFIND_BODY, dict(MS_UA, Depth="1"))[0] == 404
    assert h1(srv.port, "PROPFIND", "/", PROPFIND_BODY, {"Depth": "0"})[0] == 404
    assert echo(srv.port, "PROPFIND", "/sub/", PROPFIND_BODY, probe)["path"] == "/sub/"


# ------------------------------------------------------------------- quirks


def test_microsoft_trailing_dot_is_stripped(server_factory):
    srv = dav_server(server_factory)
    info = echo(srv.port, "GET", "/folder/index_html.", headers=MS_UA)
    assert info["path"] == "/folder/index_html"
    assert info["uri"] == "/folder/index_html."  # REQUEST_URI: what was sent
    info = echo(srv.port, "PROPFIND", "/folder/index_html%2E?x=1",
                headers={"User-Agent": "Microsoft Office Word 2014"})
    assert info["path"] == "/folder/index_html" and info["query"] == "x=1"
    # MOVE: the Destination's last segment too
    host = "127.0.0.1:%d" % srv.port
    info = echo(srv.port, "MOVE", "/folder/a.", headers=dict(
        MS_UA, Host=host, Destination="http://%s/folder/b." % host))
    assert info["path"] == "/folder/a"
    assert info["headers"]["HTTP_DESTINATION"] == "http://%s/folder/b" % host
    # other clients keep their names; dot-only segments stay
    assert echo(srv.port, "GET", "/folder/index_html.")["path"] == "/folder/index_html."
    assert echo(srv.port, "GET", "/folder/..x/", headers=MS_UA)["path"] == "/folder/..x/"


def test_finder_probes_make_no_log_noise(server_factory, tmp_path):
    access = tmp_path / "access.log"
    srv = dav_server(server_factory, "--access-log", str(access))
    for method in ("PROPFIND", "GET"):
        for path in ("/folder/._report.pdf", "/folder/.DS_Store", "/.DS_Store"):
            status, _, _ = h1(srv.port, method, path,
                              headers={"User-Agent": "WebDAVFS/3.0.0 (03008000) Darwin"})
            assert status == 404
    # the control: a 404 that is not a probe is logged by the app's wsgi.errors
    assert h1(srv.port, "GET", "/gone/real")[0] == 404
    assert srv.wait_log(r"NotFound: /gone/real")
    log = srv.log()
    assert "._report.pdf" not in log and ".DS_Store" not in log, log[-2000:]
    assert wait_until(lambda: access.read_text().count('" 404 ') >= 7)
    assert "/folder/._report.pdf" in access.read_text()


def test_destination_behind_a_trusted_proxy(server_factory):
    srv = dav_server(server_factory, "--trusted-proxy", "127.0.0.1")
    host = "127.0.0.1:%d" % srv.port
    info = echo(srv.port, "COPY", "/a/x", headers={
        "Host": host, "X-Forwarded-Proto": "https", "X-Forwarded-Host": "public.example",
        "Destination": "https://public.example/a/b?q=1"})
    # the scheme and host the app sees (Zope's SERVER_URL), the path kept
    assert info["scheme"] == "https"
    assert info["headers"]["HTTP_DESTINATION"] == "https://%s/a/b?q=1" % host
    # another site is left alone
    info = echo(srv.port, "COPY", "/a/x", headers={
        "Host": host, "X-Forwarded-Proto": "https", "X-Forwarded-Host": "public.example",
        "Destination": "https://elsewhere.example/a/b"})
    assert info["headers"]["HTTP_DESTINATION"] == "https://elsewhere.example/a/b"


def test_destination_from_an_untrusted_peer(server_factory):
    srv = dav_server(server_factory)
    host = "127.0.0.1:%d" % srv.port
    # X-Forwarded-Host of an untrusted peer is not believed
    info = echo(srv.port, "MOVE", "/a/x", headers={
        "Host": host, "X-Forwarded-Host": "public.example",
        "Destination": "https://public.example/a/b"})
    assert info["headers"]["HTTP_DESTINATION"] == "https://public.example/a/b"
    # the request's own Host under another scheme (a TLS terminator that is
    # not configured as trusted): the app's scheme
    info = echo(srv.port, "MOVE", "/a/x", headers={
        "Host": host, "Destination": "https://%s/a/b" % host.upper()})
    assert info["headers"]["HTTP_DESTINATION"] == "http://%s/a/b" % host


# ------------------------------------------------------------ source server


def test_source_server_channel_and_markers(server_factory):
    srv = dav_server(server_factory, "--webdav-source", "127.0.0.1:0",
                     "--webdav-source-suffix", "/manage_DAVget")
    sport = source_port(srv)
    assert sport != srv.port
    info = echo(sport, "GET", "/doc?x=1")
    assert info["channel"] == "webdav-source" and info["source"] == "1"
    assert info["path"] == "/doc/manage_DAVget" and info["query"] == "x=1"
    assert info["uri"] == "/doc?x=1" and info["server_port"] == str(sport)
    # only GET is rewritten; DAV methods keep the source channel
    info = echo(sport, "PROPFIND", "/doc", PROPFIND_BODY, {"Depth": "0"})
    assert info["channel"] == "webdav-source" and info["path"] == "/doc"
    assert info["source"] == "1" and info["length"] == len(PROPFIND_BODY)
    # h2c on the source port
    status, data, _ = curl_h2(sport, "GET", "/doc")
    info = json.loads(data)
    assert info["channel"] == "webdav-source" and info["path"] == "/doc/manage_DAVget"
    # the main port is untouched
    info = echo(srv.port, "GET", "/doc")
    assert info["channel"] == "http" and info["path"] == "/doc" and info["source"] is None


def test_source_server_without_suffix(server_factory):
    srv = dav_server(server_factory, "--webdav-source", "127.0.0.1:0")
    info = echo(source_port(srv), "GET", "/doc")
    assert info["path"] == "/doc" and info["source"] == "1"
    assert info["channel"] == "webdav-source"


def test_source_server_alone(server_factory):
    """No --http at all: the HTTP module (and HTTP/2, for h2c) still run for
    the source port, and so a graceful stop lets a request in flight there
    finish."""
    srv = dav_server(server_factory, "--webdav-source", "127.0.0.1:0", http=None,
                     wait_listen=False)
    sport = source_port(srv)
    info = echo(sport, "GET", "/doc")
    assert info["channel"] == "webdav-source"
    status, data, _ = curl_h2(sport, "GET", "/doc")  # h2c: HTTP/2 is kept active too
    assert status == 200 and json.loads(data)["channel"] == "webdav-source"
    c = http.client.HTTPConnection("127.0.0.1", sport, timeout=TIMEOUT)
    c.request("GET", "/slow")
    assert srv.wait_marker("slow-started")
    srv.signal(signal.SIGTERM)
    r = c.getresponse()
    assert r.status == 200 and json.loads(r.read())["path"] == "/slow"
    c.close()
    assert srv.wait() == 0


@pytest.mark.parametrize("how", ["paste", "zope-conf"])
def test_source_server_tells_zope_the_port(server_factory, tmp_path, how):
    """A Zope app (here a fake Zope: ZPublisher and Zope2.Startup, loaded with
    --paste or --zope-conf) is told the source port and marks/rewrites
    itself: the suffix is applied once, by Zope."""
    if how == "paste":
        conf = tmp_path / "zope.ini"
        conf.write_text("[app:main]\nuse = call:davapp:make_zope_app\n")
    else:
        conf = tmp_path / "zope.conf"
        conf.write_text("# read by the fake Zope2.Startup.run only\ndelegate davapp:application\n")
    srv = dav_server(server_factory, "--" + how, str(conf), "--webdav-source", "127.0.0.1:0",
                     "--webdav-source-suffix", "/manage_DAVget", app=None,
                     extra_python_path=[os.path.join(APPS, "fakezope")])
    sport = source_port(srv)
    with open(srv.marker("zope-source-port")) as f:
        assert f.read().split() == [str(sport)]
    info = echo(sport, "GET", "/doc")
    assert info["path"] == "/doc/manage_DAVget"  # once
    assert info["source"] == 1 and info["channel"] == "webdav-source"
    info = echo(srv.port, "GET", "/doc")
    assert info["path"] == "/doc" and info["source"] is None
    assert re.search(r"source port %d handled by Zope" % sport, srv.log())


def test_plain_app_with_zope_installed_is_not_told(server_factory):
    """--app is never Zope's publisher: even where ZPublisher can be imported,
    zfront marks the source requests itself and does not call Zope."""
    srv = dav_server(server_factory, "--webdav-source", "127.0.0.1:0",
                     extra_python_path=[os.path.join(APPS, "fakezope")])
    info = echo(source_port(srv), "GET", "/doc")
    assert info["source"] == "1" and info["path"] == "/doc"
    assert not os.path.exists(srv.marker("zope-source-port"))


# ---------------------------------------------------------------- big bodies


def check_peak_memory(srv, body_size):
    """The body was never held in memory: the server's peak RSS stays far
    below its size. Not checked under AddressSanitizer, whose quarantine
    keeps freed memory resident."""
    with open("/proc/%d/maps" % srv.pid) as f:
        if "libasan" in f.read():
            return
    assert vm_hwm_kib(srv.pid) * 1024 < body_size // 2, vm_hwm_kib(srv.pid)


def vm_hwm_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def pattern_body(total, chunk=1 << 20):
    block = bytes(range(256)) * (chunk // 256)
    sent = 0
    while sent < total:
        n = min(chunk, total - sent)
        yield block[:n]
        sent += n


def pattern_sha(total):
    h = hashlib.sha256()
    for b in pattern_body(total):
        h.update(b)
    return h.hexdigest()


def big_server(factory):
    return dav_server(factory, "--max-body-size", "2g", "--threads", "2")


def test_big_put_h1_is_spooled(server_factory):
    srv = big_server(server_factory)
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=120)
    c.putrequest("PUT", "/big-upload")
    c.putheader("Content-Length", str(BIG))
    c.endheaders()
    for b in pattern_body(BIG):
        c.send(b)
    r = c.getresponse()
    info = json.loads(r.read())
    c.close()
    assert info["length"] == BIG and info["sha256"] == pattern_sha(BIG)
    check_peak_memory(srv, BIG)


def test_big_put_h2_is_spooled(server_factory, tmp_path):
    srv = big_server(server_factory)
    src = tmp_path / "up.bin"
    with open(src, "wb") as f:
        for b in pattern_body(BIG):
            f.write(b)
    status, data, _ = curl_h2(srv.port, "PUT", "/big-upload", upload=str(src))
    assert status == 200, data[:300]
    info = json.loads(data)
    assert info["length"] == BIG and info["sha256"] == pattern_sha(BIG)
    check_peak_memory(srv, BIG)


def spooling(srv):
    """True while the server holds a request spool file (unlinked, in its
    --tmp-dir)."""
    return any(v.startswith(srv.tmp) for v in srv.fds().values())


def test_aborted_put_h1_never_reaches_the_app(server_factory):
    srv = big_server(server_factory)
    s = srv.connect()
    s.sendall(b"PUT /aborted HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (64 << 20))
    for b in pattern_body(8 << 20):
        s.sendall(b)
    assert wait_until(lambda: spooling(srv))
    s.close()
    assert srv.wait_log(r"incomplete request|client closed|connection lost")
    # the half body is dropped (its spool file closed), and never dispatched
    assert wait_until(lambda: not spooling(srv))
    echo(srv.port, "GET", "/after")  # the server goes on
    assert not any(" /aborted " in c for c in calls(srv)), calls(srv)
    assert any(c.startswith("GET /after ") for c in calls(srv))


def test_aborted_put_h2_never_reaches_the_app(server_factory):
    srv = big_server(server_factory)
    cmd = ["curl", "-sS", "--http2-prior-knowledge", "-T", "-", "-o", "/dev/null",
           "http://127.0.0.1:%d/aborted" % srv.port]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        for b in pattern_body(8 << 20):
            p.stdin.write(b)
        p.stdin.flush()
        # wait until the server spools the upload (an unlinked file in its
        # tmp dir), then kill the client half-way: no END_STREAM
        assert wait_until(lambda: spooling(srv))
        p.kill()
    finally:
        p.wait()
        if p.stdin:
            try:
                p.stdin.close()
            except BrokenPipeError:
                pass
    assert wait_until(lambda: not spooling(srv))
    echo(srv.port, "GET", "/after")
    assert wait_until(lambda: any(c.startswith("GET /after ") for c in calls(srv)))
    assert not any(" /aborted " in c for c in calls(srv)), calls(srv)


def test_big_get_streams_from_the_loop_h1_and_h2(server_factory, tmp_path):
    srv = dav_server(server_factory, "--threads", "1")
    size = BIG
    path = "/big/%d" % size
    # h1: read the headers and a little, then stall; the only worker must be
    # free already (the file is sent by the loop), so another request passes
    s = srv.connect()
    s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
    first = s.recv(65536)
    assert first.startswith(b"HTTP/1.1 200"), first[:200]
    assert echo(srv.port, "GET", "/meanwhile")["path"] == "/meanwhile"
    s.close()
    expected = None
    with open(os.path.join(srv.data, "big-%d" % size), "rb") as f:
        h = hashlib.sha256()
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
        expected = h.hexdigest()
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=120)
    c.request("GET", path)
    r = c.getresponse()
    h = hashlib.sha256()
    n = 0
    while True:
        b = r.read(1 << 20)
        if not b:
            break
        h.update(b)
        n += len(b)
    c.close()
    assert n == size and h.hexdigest() == expected
    out = tmp_path / "down.bin"
    status, _, _ = curl_h2(srv.port, "GET", path, out=str(out))
    assert status == 200 and out.stat().st_size == size
    h = hashlib.sha256()
    with open(out, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    assert h.hexdigest() == expected
    out.unlink()


# ---------------------------------------------------------------- fragments


@pytest.mark.parametrize("method", ["DELETE", "PUT", "MOVE"])
def test_fragment_on_a_changing_method_is_refused(server_factory, method):
    """The core drops a #fragment (GET /a#b is /a, as waitress does), but a
    method that changes content gets no such guess: 400, and the app never
    sees it (litmus's delete_fragment: "DELETE /coll/#frag" removing /coll/
    is unsafe)."""
    srv = dav_server(server_factory)
    s = srv.connect()
    s.sendall(b"%s /coll/#frag HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n"
              b"Destination: /other\r\n\r\n" % method.encode())
    r, body = read_response(s.makefile("rb"))
    s.close()
    assert r.status == 400 and b"fragment" in body
    assert not any("/coll/" in c for c in srv.calls()), srv.calls()
    # the same without a fragment reaches the app; a GET with one too
    assert h1(srv.port, method, "/coll/", b"", {"Destination": "/other"})[0] == 200
    s = srv.connect()
    s.sendall(b"GET /doc#frag HTTP/1.1\r\nHost: t\r\n\r\n")
    r, body = read_response(s.makefile("rb"))
    s.close()
    assert r.status == 200 and json.loads(body)["path"] == "/doc"
