"""HTTPS: TLS policy (1.2/1.3 only), ALPN, session resumption, certificates
from the config or self-signed in the state dir, errors at start-up, and
SIGHUP reload without dropping connections.

Real clients: curl, Python's ssl module (with its own OpenSSL allowed to
offer TLS 1.0/1.1, so a refusal proves the server refused), the openssl
command line to make test certificates."""
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import warnings

import pytest

from zftest import TIMEOUT, curl

HTTPS_RE = r"https: listening on 127\.0\.0\.1:(\d+)"


def start_tls(factory, *args, state=True, **kw):
    """A started server with an https listener; .https_port is its port."""
    s = factory(*args, start=False, **kw)
    s.args += ["--https", "127.0.0.1:0"]
    if state:
        s.args += ["--state-dir", os.path.join(s.root, "state")]
    s.start()
    m = s.wait_log(HTTPS_RE)
    assert m, s.log()
    s.https_port = int(m.group(1))
    return s


def client_ctx(alpn=None, version=None, cafile=None):
    """A client context; without cafile it does not verify."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cafile:
        ctx.load_verify_locations(cafile)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if version is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            # let this client's OpenSSL offer TLS 1.0/1.1 at all
            ctx.set_ciphers("ALL:@SECLEVEL=0")
            ctx.minimum_version = version
            ctx.maximum_version = version
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    return ctx


def tls_connect(port, ctx, server_hostname=None, session=None):
    raw = socket.create_connection(("127.0.0.1", port), TIMEOUT)
    try:
        return ctx.wrap_socket(raw, server_hostname=server_hostname, session=session)
    except BaseException:
        raw.close()
        raise


def http1_over(sock, path="/hello", host="localhost"):
    """One HTTP/1.1 request on an established TLS socket; returns (status, body)."""
    sock.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, host)).encode())
    r = http.client.HTTPResponse(sock)
    r.begin()
    return r.status, r.read()


def peer_fingerprint(port, **kw):
    with tls_connect(port, client_ctx(), **kw) as t:
        return hashlib.sha256(t.getpeercert(binary_form=True)).hexdigest()


def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True,
                   timeout=60)


def make_cert(d, name, cn="test.example", ca=None):
    """A P-256 key and a certificate for cn (self-signed, or signed by ca=(name)).
    Returns (cert path, key path)."""
    key, crt = os.path.join(d, name + ".key"), os.path.join(d, name + ".pem")
    ext = os.path.join(d, name + ".ext")
    with open(ext, "w") as f:
        if cn.startswith("ca-"):
            f.write("basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n")
        else:
            f.write("subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\n" % cn)
    if ca is None:
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-subj", "/CN=" + cn, "-days", "2", "-keyout", key, "-out", crt,
                "-extensions", "v3", "-config", _req_config(d, ext), cwd=d)
    else:
        csr = os.path.join(d, name + ".csr")
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-subj", "/CN=" + cn, "-keyout", key, "-out", csr, cwd=d)
        openssl("x509", "-req", "-in", csr, "-CA", os.path.join(d, ca + ".pem"), "-CAkey",
                os.path.join(d, ca + ".key"), "-CAcreateserial", "-days", "2", "-extfile",
                ext, "-out", crt, cwd=d)
    return crt, key


def _req_config(d, ext):
    path = os.path.join(d, "req.cnf")
    with open(ext) as f:
        body = f.read()
    with open(path, "w") as f:
        f.write("[req]\ndistinguished_name=dn\n[dn]\n[v3]\n" + body)
    return path


@pytest.fixture
def certdir(tmp_path):
    return str(tmp_path)


# ------------------------------------------------------------------ basics


def test_curl_gets_http2_over_tls(server_factory):
    s = start_tls(server_factory)
    p = curl("-k", "--http2", "-o", "-", "-w", "\n%{http_version} %{http_code}",
             "https://127.0.0.1:%d/hello" % s.https_port)
    body, _, tail = p.stdout.rpartition(b"\n")
    assert body == b"Hello, world!"
    assert tail == b"2 200"
    # and HTTP/1.1 over TLS when the client asks for it
    p = curl("-k", "--http1.1", "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
             "https://127.0.0.1:%d/hello" % s.https_port)
    assert p.stdout == b"1.1 200"


def test_alpn_results(server_factory):
    s = start_tls(server_factory)
    cases = [(["h2", "http/1.1"], "h2"), (["http/1.1", "h2"], "h2"), (["http/1.1"], "http/1.1"),
             (["spdy/3", "foo"], None), (None, None)]
    for offer, expected in cases:
        with tls_connect(s.https_port, client_ctx(alpn=offer)) as t:
            assert t.selected_alpn_protocol() == expected, offer
            if expected != "h2":
                # no ALPN or http/1.1: the connection speaks HTTP/1.1
                assert http1_over(t) == (200, b"Hello, world!")


def test_alpn_without_http2(server_factory):
    s = start_tls(server_factory, "--set", "h2.enable=false")
    with tls_connect(s.https_port, client_ctx(alpn=["h2", "http/1.1"])) as t:
        assert t.selected_alpn_protocol() == "http/1.1"
        assert http1_over(t) == (200, b"Hello, world!")


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_old_tls_versions_refused(server_factory, version):
    s = start_tls(server_factory)
    with pytest.raises(ssl.SSLError) as e:
        tls_connect(s.https_port, client_ctx(version=getattr(ssl.TLSVersion, version))).close()
    # the server's protocol_version alert (not this client refusing to offer it)
    assert "PROTOCOL_VERSION" in str(e.value).upper() or "protocol version" in str(e.value)
    assert s.wait_log(r"tls: handshake failed: .*unsupported protocol")


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_modern_tls_versions_accepted(server_factory, version):
    s = start_tls(server_factory)
    with tls_connect(s.https_port, client_ctx(version=getattr(ssl.TLSVersion, version),
                                              alpn=["http/1.1"])) as t:
        assert t.version() == version.replace("_", ".")
        cipher = t.cipher()[0]
        # AEAD only: GCM or ChaCha20-Poly1305, never CBC
        assert "GCM" in cipher or "CHACHA20" in cipher, cipher
        assert http1_over(t) == (200, b"Hello, world!")


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_session_resumption(server_factory, version):
    s = start_tls(server_factory)
    ctx = client_ctx(version=getattr(ssl.TLSVersion, version), alpn=["http/1.1"])
    with tls_connect(s.https_port, ctx) as t:
        assert http1_over(t) == (200, b"Hello, world!")  # TLS 1.3 tickets come after
        session = t.session
        assert not t.session_reused
    with tls_connect(s.https_port, ctx, session=session) as t:
        assert t.session_reused
        assert http1_over(t) == (200, b"Hello, world!")


def test_environ_over_tls(server_factory):
    s = start_tls(server_factory)
    for proto, flag in (("HTTP/2", "--http2"), ("HTTP/1.1", "--http1.1")):
        p = curl("-k", flag, "https://127.0.0.1:%d/env" % s.https_port)
        env = json.loads(p.stdout)
        assert env["wsgi.url_scheme"] == "https"
        assert env["HTTPS"] == "on"
        assert env["SERVER_PROTOCOL"] == proto
        assert env["HTTP_HOST"] == "127.0.0.1:%d" % s.https_port
        assert env["SERVER_PORT"] == str(s.https_port)
    # plain HTTP stays plain
    p = curl("http://127.0.0.1:%d/env" % s.port)
    env = json.loads(p.stdout)
    assert env["wsgi.url_scheme"] == "http"
    assert env.get("HTTPS") in (None, "off")


def test_handshake_timeout(server_factory):
    s = start_tls(server_factory, "--set", "tls.handshake_timeout=1s")
    with socket.create_connection(("127.0.0.1", s.https_port), TIMEOUT) as c:
        c.settimeout(TIMEOUT)
        assert c.recv(100) == b""  # closed by the server, nothing sent
    assert s.wait_log(r"tls: handshake failed: no handshake within 1000 ms")


# ------------------------------------------------------------ certificates


def test_configured_certificate_verifies(server_factory, certdir):
    crt, key = make_cert(certdir, "site")
    s = start_tls(server_factory, "--cert", crt, "--key", key, state=False)
    with tls_connect(s.https_port, client_ctx(cafile=crt, alpn=["http/1.1"]),
                     server_hostname="test.example") as t:
        subject = dict(x[0] for x in t.getpeercert()["subject"])
        assert subject["commonName"] == "test.example"
        assert http1_over(t) == (200, b"Hello, world!")


def test_key_in_the_certificate_file(server_factory, certdir):
    crt, key = make_cert(certdir, "site")
    both = os.path.join(certdir, "both.pem")
    with open(both, "w") as f:
        f.write(open(crt).read() + open(key).read())
    s = start_tls(server_factory, "--cert", both, state=False)
    with tls_connect(s.https_port, client_ctx(cafile=crt), server_hostname="test.example"):
        pass


def test_chain_file_sent(server_factory, certdir):
    make_cert(certdir, "root", cn="ca-root")
    make_cert(certdir, "inter", cn="ca-inter", ca="root")
    crt, key = make_cert(certdir, "leaf", cn="test.example", ca="inter")
    root = os.path.join(certdir, "root.pem")
    # without the intermediate the client cannot build the chain
    s = start_tls(server_factory, "--cert", crt, "--key", key, state=False)
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_connect(s.https_port, client_ctx(cafile=root), server_hostname="test.example")
    s2 = start_tls(server_factory, "--cert", crt, "--key", key, "--cert-chain",
                   os.path.join(certdir, "inter.pem"), state=False)
    with tls_connect(s2.https_port, client_ctx(cafile=root), server_hostname="test.example"):
        pass


def _failed_start(factory, *args):
    s = factory(*args, "--https", "127.0.0.1:0", start=False)
    s.spawn()
    rc = s.wait(30)
    assert rc is not None, "zfront kept running with a bad TLS configuration"
    assert rc != 0
    return s.log()


def test_bad_certificate_path_fails_clearly(server_factory, certdir):
    crt, key = make_cert(certdir, "site")
    log = _failed_start(server_factory, "--cert", "/nonexistent/cert.pem", "--key", key)
    assert "cannot read tls.cert /nonexistent/cert.pem" in log
    log = _failed_start(server_factory, "--cert", crt, "--key", "/nonexistent/key.pem")
    assert "cannot read tls.key /nonexistent/key.pem" in log
    garbage = os.path.join(certdir, "garbage.pem")
    with open(garbage, "w") as f:
        f.write("not a certificate\n")
    log = _failed_start(server_factory, "--cert", garbage, "--key", key)
    assert "tls.cert %s is not a usable PEM certificate" % garbage in log


def test_mismatched_pair_fails_clearly(server_factory, certdir):
    crt, _ = make_cert(certdir, "one")
    _, other_key = make_cert(certdir, "two")
    log = _failed_start(server_factory, "--cert", crt, "--key", other_key)
    assert "tls.key %s does not match the certificate in %s" % (other_key, crt) in log


def test_self_signed_certificate_is_generated_and_kept(server_factory, certdir):
    state = os.path.join(certdir, "state")
    s = start_tls(server_factory, "--state-dir", state, state=False)
    path = os.path.join(state, "tls", "selfsigned-cert.pem")
    keypath = os.path.join(state, "tls", "selfsigned-key.pem")
    assert os.path.exists(path) and os.path.exists(keypath)
    assert os.stat(keypath).st_mode & 0o077 == 0, "private key readable by others"
    first = peer_fingerprint(s.https_port)
    # it is for localhost: a client trusting it verifies the name
    with tls_connect(s.https_port, client_ctx(cafile=path), server_hostname="localhost"):
        pass
    s.stop()
    s2 = start_tls(server_factory, "--state-dir", state, state=False)
    assert peer_fingerprint(s2.https_port) == first


def test_sighup_reloads_certificate_without_dropping(server_factory, certdir):
    crt_a, key_a = make_cert(certdir, "a")
    crt_b, key_b = make_cert(certdir, "b")
    live_crt, live_key = os.path.join(certdir, "live.pem"), os.path.join(certdir, "live.key")
    shutil.copy(crt_a, live_crt)
    shutil.copy(key_a, live_key)
    s = start_tls(server_factory, "--cert", live_crt, "--key", live_key, state=False)
    fp_a = peer_fingerprint(s.https_port)
    old = tls_connect(s.https_port, client_ctx(alpn=["http/1.1"]))
    try:
        assert http1_over(old) == (200, b"Hello, world!")
        shutil.copy(crt_b, live_crt)
        shutil.copy(key_b, live_key)
        s.signal(signal.SIGHUP)
        assert s.wait_log(r"tls: certificate reloaded")
        fp_b = peer_fingerprint(s.https_port)
        assert fp_b != fp_a
        # the connection made before the reload keeps working
        assert http1_over(old) == (200, b"Hello, world!")
    finally:
        old.close()
    # a broken file on reload: the current certificate stays
    with open(live_key, "w") as f:
        f.write("broken\n")
    s.signal(signal.SIGHUP)
    assert s.wait_log(r"tls: reload failed: keeping the previous certificate")
    assert peer_fingerprint(s.https_port) == fp_b
    assert s.alive()


def test_self_signed_certificate_is_a_server_leaf(server_factory, certdir):
    """Browsers (Firefox) refuse a CA certificate as a server certificate:
    the generated one must be a leaf for serverAuth with the local names."""
    import ipaddress

    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    state = os.path.join(certdir, "state")
    start_tls(server_factory, "--state-dir", state, state=False)
    with open(os.path.join(state, "tls", "selfsigned-cert.pem"), "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    ext = cert.extensions
    bc = ext.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca is False
    ku = ext.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature
    assert not ku.value.key_cert_sign and not ku.value.crl_sign
    eku = ext.get_extension_for_class(x509.ExtendedKeyUsage)
    assert list(eku.value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    san = ext.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}


def _s_client(port, alpn, sess, request=b"", reuse=False):
    """openssl s_client, TLS 1.2 without tickets: only the server's session
    cache can resume. With a request, the server closes (Connection: close);
    without, the client closes at once. Returns s_client's output."""
    args = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-tls1_2", "-no_ticket",
            "-alpn", alpn, "-sess_in" if reuse else "-sess_out", sess]
    if request:
        args.append("-ign_eof")  # read until the server closes
    p = subprocess.run(args, input=request, capture_output=True, timeout=TIMEOUT)
    return p.stdout.decode("latin-1")


@pytest.mark.parametrize("alpn,closer", [("http/1.1", "client"), ("http/1.1", "server"),
                                         ("h2", "client")])
def test_tls12_session_id_resumption(server_factory, certdir, alpn, closer):
    s = start_tls(server_factory)
    req = b""
    if closer == "server":
        req = b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    sess = os.path.join(certdir, "sess.pem")
    first = _s_client(s.https_port, alpn, sess, req)
    assert "New, TLSv1.2" in first, first
    assert "ALPN protocol: %s" % alpn in first, first
    if req:
        assert "Hello, world!" in first
    again = _s_client(s.https_port, alpn, sess, req, reuse=True)
    assert "Reused, TLSv1.2" in again, again
    if req:
        assert "Hello, world!" in again


def test_old_ca_self_signed_certificate_is_replaced(server_factory, certdir):
    """A CA certificate left in the state dir by an older zfront is replaced
    by a leaf; the key is not reused."""
    from cryptography import x509

    tlsdir = os.path.join(certdir, "state", "tls")
    os.makedirs(tlsdir)
    cert = os.path.join(tlsdir, "selfsigned-cert.pem")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "selfsigned-key.pem", "-out", "selfsigned-cert.pem", "-days", "30",
            "-subj", "/CN=localhost", "-addext", "basicConstraints=critical,CA:TRUE", cwd=tlsdir)
    s = start_tls(server_factory, "--state-dir", os.path.join(certdir, "state"), state=False)
    assert s.wait_log(r"tls: .*selfsigned-cert\.pem is a CA certificate .*replacing it")
    with open(cert, "rb") as f:
        bc = x509.load_pem_x509_certificate(f.read()).extensions.get_extension_for_class(
            x509.BasicConstraints)
    assert bc.value.ca is False
    with tls_connect(s.https_port, client_ctx(cafile=cert), server_hostname="localhost"):
        pass
