"""Spoofing protection: header names with '_' are dropped (X_Forwarded_For
must not turn into HTTP_X_FORWARDED_FOR), and X-Forwarded-For/-Proto are
honoured only when the peer is a configured trusted proxy."""
import json

import pytest

from zftest import read_response


@pytest.fixture(scope="module")
def untrusted(module_server_factory):
    return module_server_factory(name="proxy-none")


@pytest.fixture(scope="module")
def trusted(module_server_factory):
    return module_server_factory("--trusted-proxy", "127.0.0.1", name="proxy-trusted")


@pytest.fixture(scope="module")
def other_trusted(module_server_factory):
    # a trusted proxy that is not us: our headers must be ignored
    return module_server_factory("--trusted-proxy", "10.9.8.7", "--trusted-proxy", "::1",
                                 name="proxy-other")


def env_with(srv, *headers):
    s = srv.connect()
    f = s.makefile("rb")
    try:
        s.sendall(b"GET /env HTTP/1.1\r\nHost: h\r\n" + b"".join(h + b"\r\n" for h in headers)
                  + b"\r\n")
        r, body = read_response(f)
        assert r.status == 200, body
        return json.loads(body)
    finally:
        f.close()
        s.close()


def test_underscore_header_dropped(untrusted):
    env = env_with(untrusted, b"X_Forwarded_For: 6.6.6.6", b"Foo_Bar: x", b"X-Good: y")
    assert "HTTP_X_FORWARDED_FOR" not in env
    assert "HTTP_FOO_BAR" not in env
    assert env["HTTP_X_GOOD"] == "y"
    assert "6.6.6.6" not in json.dumps(env)


def test_underscore_header_does_not_mix_with_dash_header(untrusted):
    env = env_with(untrusted, b"X_Forwarded_For: 6.6.6.6", b"X-Forwarded-For: 192.0.2.1")
    assert env["HTTP_X_FORWARDED_FOR"] == "192.0.2.1"


def test_underscore_header_dropped_on_trusted_path_too(trusted):
    env = env_with(trusted, b"X_Forwarded_For: 6.6.6.6")
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert "HTTP_X_FORWARDED_FOR" not in env


def test_forwarded_headers_ignored_from_untrusted_peer(untrusted):
    env = env_with(untrusted, b"X-Forwarded-For: 203.0.113.7", b"X-Forwarded-Proto: https")
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["wsgi.url_scheme"] == "http"


def test_forwarded_headers_ignored_when_peer_is_not_the_trusted_one(other_trusted):
    env = env_with(other_trusted, b"X-Forwarded-For: 203.0.113.7", b"X-Forwarded-Proto: https")
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["wsgi.url_scheme"] == "http"


def test_forwarded_headers_honoured_from_trusted_proxy(trusted):
    env = env_with(trusted, b"X-Forwarded-For: 203.0.113.7", b"X-Forwarded-Proto: https")
    assert env["REMOTE_ADDR"] == "203.0.113.7"
    assert env["wsgi.url_scheme"] == "https"


def test_forwarded_for_chain_takes_the_hop_before_the_proxy(trusted):
    """'client-claimed, real-client' as appended by one trusted proxy: the
    leftmost entry is whatever the client sent, so only the rightmost
    untrusted address may be used."""
    env = env_with(trusted, b"X-Forwarded-For: 198.51.100.1, 203.0.113.7")
    assert env["REMOTE_ADDR"] == "203.0.113.7"


def test_trusted_proxy_without_forwarded_headers(trusted):
    env = env_with(trusted)
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["wsgi.url_scheme"] == "http"


# ------------------------------------------- X-Forwarded-Host / X-Forwarded-Port
# As waitress's trusted_proxy_headers: the proxy's public host and port become
# HTTP_HOST / SERVER_NAME / SERVER_PORT, so the app (Zope's absolute_url)
# builds URLs with the address the client used, not the backend's.


def test_forwarded_host_and_proto_from_trusted_proxy(trusted):
    env = env_with(trusted, b"X-Forwarded-Host: www.example.org",
                   b"X-Forwarded-Proto: https", b"X-Forwarded-For: 203.0.113.7")
    assert env["HTTP_HOST"] == "www.example.org"
    assert env["SERVER_NAME"] == "www.example.org"
    assert env["SERVER_PORT"] == "443"
    assert env["wsgi.url_scheme"] == "https"
    assert env["REMOTE_ADDR"] == "203.0.113.7"


def test_forwarded_port_not_the_default_goes_into_host(trusted):
    env = env_with(trusted, b"X-Forwarded-Host: www.example.org",
                   b"X-Forwarded-Proto: https", b"X-Forwarded-Port: 8443")
    assert env["HTTP_HOST"] == "www.example.org:8443"
    assert env["SERVER_NAME"] == "www.example.org"
    assert env["SERVER_PORT"] == "8443"


def test_forwarded_host_with_port_wins_over_forwarded_port(trusted):
    env = env_with(trusted, b"X-Forwarded-Host: www.example.org:8080",
                   b"X-Forwarded-Port: 9999")
    assert env["HTTP_HOST"] == "www.example.org:8080"
    assert env["SERVER_NAME"] == "www.example.org"
    assert env["SERVER_PORT"] == "8080"
    assert env["wsgi.url_scheme"] == "http"


def test_forwarded_host_ipv6_literal(trusted):
    env = env_with(trusted, b"X-Forwarded-Host: [2001:db8::1]:8080")
    assert env["HTTP_HOST"] == "[2001:db8::1]:8080"
    assert env["SERVER_NAME"] == "[2001:db8::1]"
    assert env["SERVER_PORT"] == "8080"


def test_forwarded_host_rightmost_value_is_the_proxys(trusted):
    """A client-sent X-Forwarded-Host that the proxy appended to must not win."""
    env = env_with(trusted, b"X-Forwarded-Host: evil.example, www.example.org")
    assert env["HTTP_HOST"] == "www.example.org"
    assert env["SERVER_NAME"] == "www.example.org"


def test_malformed_forwarded_host_and_port_ignored(trusted):
    env = env_with(trusted, b"X-Forwarded-Host: bad/host", b"X-Forwarded-Port: 99999")
    assert env["HTTP_HOST"] == "h"
    assert env["SERVER_NAME"] != "bad/host"
    assert env["SERVER_PORT"] == str(trusted.port)
    assert trusted.wait_log(r"ignored X-Forwarded-Host \"bad/host\" from a trusted proxy")
    assert trusted.wait_log(r"ignored X-Forwarded-Port \"99999\" from a trusted proxy")


@pytest.mark.parametrize("which", ["untrusted", "other_trusted"])
def test_forwarded_host_and_port_ignored_from_untrusted_peer(request, which):
    srv = request.getfixturevalue(which)
    env = env_with(srv, b"X-Forwarded-Host: www.example.org:8443", b"X-Forwarded-Port: 8443")
    assert env["HTTP_HOST"] == "h"
    assert env["SERVER_NAME"] == "127.0.0.1"
    assert env["SERVER_PORT"] == str(srv.port)
    assert env["HTTP_X_FORWARDED_HOST"] == "www.example.org:8443"
