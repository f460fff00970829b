"""`zfront --paste wsgi.ini` honours the [server:main] options Plone's
recipes write for waitress (listen, threads, max_request_body_size,
clear_untrusted_proxy_headers, trusted_proxy, url_scheme) with waitress's
meaning; command-line flags override them."""
import json

from zftest import free_port

INI = """\
[server:main]
use = egg:waitress#main
listen = 127.0.0.1:{port}
threads = 3
max_request_body_size = 1000
trusted_proxy = 10.9.9.9
clear_untrusted_proxy_headers = {clear}
url_scheme = https
connection_limit = 100

[app:main]
use = call:opsapp:make_paste_app
"""


def plone_server(server_factory, tmp_path, *args, clear="true", port=None, start=True):
    port = port or free_port()
    ini = tmp_path / "wsgi.ini"
    ini.write_text(INI.format(port=port, clear=clear))
    srv = server_factory("--paste", str(ini), *args, app=None, http=None, start=False,
                         name="plone")
    if start:
        srv.start()
    return srv, port


def env(srv, **kw):
    status, _, body = srv.request(kw.pop("method", "GET"), "/", **kw)
    assert status == 200, (status, body)
    return json.loads(body)


def test_server_main_options_are_honoured(server_factory, tmp_path):
    srv, port = plone_server(server_factory, tmp_path)
    assert srv.port == port  # listen
    assert "started 3 worker threads" in srv.log()  # threads
    e = env(srv, headers={"X-Forwarded-For": "1.2.3.4", "X-Forwarded-Proto": "http",
                          "Forwarded": "for=1.2.3.4"})
    assert e["wsgi.url_scheme"] == "https"  # url_scheme
    # 127.0.0.1 is not the trusted proxy: its proxy headers are cleared
    assert e["REMOTE_ADDR"] == "127.0.0.1"
    assert e["HTTP_X_FORWARDED_FOR"] is None and e["HTTP_X_FORWARDED_PROTO"] is None
    assert e["HTTP_FORWARDED"] is None
    # max_request_body_size
    assert env(srv, method="POST", body=b"x" * 1000)["body"] == 1000
    assert srv.request("POST", "/", body=b"x" * 1001)[0] == 413
    assert srv.wait_log(r'\[server:main\]: option "connection_limit" has no meaning for zfront')


def test_untrusted_proxy_headers_kept_when_not_cleared(server_factory, tmp_path):
    srv, _ = plone_server(server_factory, tmp_path, clear="false")
    e = env(srv, headers={"X-Forwarded-For": "1.2.3.4"})
    assert e["HTTP_X_FORWARDED_FOR"] == "1.2.3.4" and e["REMOTE_ADDR"] == "127.0.0.1"


def test_trusted_proxy_headers_still_honoured(server_factory, tmp_path):
    srv, _ = plone_server(server_factory, tmp_path, "--trusted-proxy", "127.0.0.1")
    e = env(srv, headers={"X-Forwarded-For": "1.2.3.4", "X-Forwarded-Proto": "http"})
    assert e["REMOTE_ADDR"] == "1.2.3.4" and e["wsgi.url_scheme"] == "http"


def test_command_line_flags_override_the_ini(server_factory, tmp_path):
    other = free_port()
    srv, port = plone_server(server_factory, tmp_path, "--http", "127.0.0.1:%d" % other,
                             "--threads", "2", "--max-body-size", "5000", "--set",
                             "server.url_scheme=http")
    assert srv.port == other
    assert "started 2 worker threads" in srv.log()
    assert env(srv)["wsgi.url_scheme"] == "http"
    assert env(srv, method="POST", body=b"x" * 4000)["body"] == 4000


def test_bad_server_main_value_stops_the_start(server_factory, tmp_path):
    ini = tmp_path / "wsgi.ini"
    ini.write_text(INI.format(port=free_port(), clear="maybe"))
    srv = server_factory("--paste", str(ini), app=None, http=None, start=False)
    srv.spawn()
    assert srv.wait() == 2
    assert srv.wait_log(r"clear_untrusted_proxy_headers = 'maybe': expected true or false")
