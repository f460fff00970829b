"""Helpers for the WebDAV demo-store tests (test_dav_*.py): start
`zfront --demo` with a fresh state directory and every listener on a free
port, and talk WebDAV to it with http.client."""
import os
import xml.etree.ElementTree as ET

DAV = "{DAV:}"


def start_demo(factory, name="dav", env=None, state=None, threads=None):
    """zfront --demo with its state in a temp dir (or `state`); returns the
    Server with `srv.state` and `srv.content` (the content folder) set."""
    srv = factory(start=False, app=None, python_path=False, name=name, env=env,
                  threads=threads)
    srv.state = state or os.path.join(srv.root, "state")
    srv.content = os.path.join(srv.state, "content")
    # every module the demo turns on gets a free port instead of its default;
    # a small big.bin keeps the start quick
    srv.env.setdefault("ZFRONT_DEMO_BIG_SIZE", "1m")
    srv.args += ["--demo", "--state-dir", srv.state, "--https", "127.0.0.1:0",
                 "--ssh", "127.0.0.1:0"]
    return srv.start()


def dav(srv, method, path, body=None, headers=None):
    """One request; returns (status, headers, body bytes)."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    return srv.request(method, path, body=body, headers=headers or {})


def multistatus(body):
    """A 207 body as {href: {prop tag: (status, element)}}."""
    out = {}
    root = ET.fromstring(body)
    assert root.tag == DAV + "multistatus", body
    for resp in root.findall(DAV + "response"):
        href = resp.find(DAV + "href").text
        props = out.setdefault(href, {})
        for ps in resp.findall(DAV + "propstat"):
            status = int(ps.find(DAV + "status").text.split()[1])
            for p in ps.find(DAV + "prop"):
                props[p.tag] = (status, p)
    return out


PROPFIND_ALL = '<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>'


def lockinfo(scope="exclusive", owner="tester"):
    return ('<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:%s/>'
            '</D:lockscope><D:locktype><D:write/></D:locktype><D:owner>%s</D:owner>'
            '</D:lockinfo>' % (scope, owner))
