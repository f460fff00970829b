"""WebDAV (RFC 4918, class 1 and 2) over the demo's content store.

``DavApp(store)`` is a WSGI application: GET/HEAD/PUT/DELETE/OPTIONS,
PROPFIND/PROPPATCH (live and dead properties), MKCOL, COPY/MOVE (Depth,
Overwrite), LOCK/UNLOCK (exclusive and shared write locks with timeouts) and
the If header (tagged and untagged lists, Not, state tokens and ETags).

Files are returned through ``environ['wsgi.file_wrapper']`` with
Content-Length, ETag, Last-Modified and Accept-Ranges, so zfront streams them
from its event loop (sendfile) and answers Range requests itself. Uploads are
never held in memory: a body zfront spooled to a file is linked into place
(or copied in the kernel) through ``wsgi.input.fileno()``, a body in memory
is read from ``wsgi.input`` in chunks into a temp file; either is renamed
into place. With ``ZFRONT_DEMO_DAV_DEBUG=1`` in the environment each PUT
writes which way its body went to ``wsgi.errors`` (see ``receive_body``).

There is no authentication: whoever reaches the port may edit (it is a
demo). XML request bodies are capped (``max_xml`` bytes, 413 above it) and
may not carry a DOCTYPE (400), so no entity tricks reach the parser.
"""

import errno
import html
import mimetypes
import os
import re
import stat
import time
import xml.etree.ElementTree as ET
from email.utils import formatdate, parsedate_to_datetime
from urllib.parse import quote, unquote_to_bytes, urlsplit

from .store import DEFAULT_LOCK_TIMEOUT, MAX_LOCK_TIMEOUT, StoreError, key

__all__ = ["DavApp", "METHODS"]

DAV = "DAV:"
ET.register_namespace("D", DAV)

METHODS = ("OPTIONS", "GET", "HEAD", "PUT", "DELETE", "PROPFIND", "PROPPATCH", "MKCOL",
           "COPY", "MOVE", "LOCK", "UNLOCK")
CHUNK = 1024 * 1024
DEFAULT_MAX_XML = 1024 * 1024

LIVE = ("creationdate", "displayname", "getcontentlength", "getcontenttype", "getetag",
        "getlastmodified", "resourcetype", "supportedlock", "lockdiscovery")
LIVE_NAMES = {"{DAV:}" + n for n in LIVE}


def D(name):
    return "{DAV:}" + name


class HTTPError(Exception):
    """Ends a request with `status` (e.g. "409 Conflict") and a short text,
    or an RFC 4918 error element (`condition`, a DAV: element name)."""

    def __init__(self, status, text=None, condition=None, hrefs=()):
        super().__init__(status)
        self.status = status
        self.text = text or status
        self.condition = condition
        self.hrefs = hrefs


def etag_of(st):
    return '"%x-%x"' % (st.st_size, st.st_mtime_ns)


def is_dir(st):
    return stat.S_ISDIR(st.st_mode)


def _xml_body(root):
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="utf-8",
                                                                      xml_declaration=False)


# ------------------------------------------------------------------ If header

_IF_TOKEN = re.compile(r'\s*(<[^>]*>|\(|\)|\[(?:W/)?"[^"]*"\]|Not\b)', re.I)


def parse_if(value):
    """Parses an If header (RFC 4918 10.4) into [(tag or None, [(negate,
    kind, value)])] where kind is "token" or "etag". Raises HTTPError 400."""
    pos, out, tag = 0, [], None
    tagged = None
    while True:
        while pos < len(value) and value[pos] in " \t":
            pos += 1
        if pos == len(value):
            break
        m = _IF_TOKEN.match(value, pos)
        if not m:
            raise HTTPError("400 Bad Request", "malformed If header")
        tok, pos = m.group(1), m.end()
        if tok.startswith("<"):
            if tagged is False:
                raise HTTPError("400 Bad Request", "If header mixes tagged and untagged lists")
            tagged, tag = True, tok[1:-1]
            continue
        if tok != "(":
            raise HTTPError("400 Bad Request", "malformed If header")
        if tagged is None:
            tagged = False
        if tagged and tag is None:
            raise HTTPError("400 Bad Request", "malformed If header")
        conds, negate = [], False
        while True:
            m = _IF_TOKEN.match(value, pos)
            if not m:
                raise HTTPError("400 Bad Request", "malformed If header")
            tok, pos = m.group(1), m.end()
            if tok == ")":
                break
            if tok.lower() == "not":
                negate = True
                continue
            if tok.startswith("<"):
                conds.append((negate, "token", tok[1:-1]))
            elif tok.startswith("["):
                conds.append((negate, "etag", tok[1:-1]))
            else:
                raise HTTPError("400 Bad Request", "malformed If header")
            negate = False
        if not conds:
            raise HTTPError("400 Bad Request", "empty list in If header")
        out.append((tag, conds))
    if not out:
        raise HTTPError("400 Bad Request", "empty If header")
    return out


def _etag_match(a, b):
    """Weak comparison (W/ prefixes ignored)."""
    return a.removeprefix("W/") == b.removeprefix("W/")


# ------------------------------------------------------------------ the app


class DavApp:
    """WebDAV over a Store. `max_xml`: the largest XML request body read."""

    def __init__(self, store, max_xml=DEFAULT_MAX_XML):
        self.store = store
        self.max_xml = max_xml

    def __call__(self, environ, start_response):
        method = environ["REQUEST_METHOD"]
        handler = getattr(self, "do_" + method, None) if method in METHODS else None
        try:
            if "#" in environ.get("REQUEST_URI", ""):
                raise HTTPError("400 Bad Request", "a request target has no fragment")
            if handler is None:
                raise HTTPError("405 Method Not Allowed", "%s is not allowed here" % method)
            req = Request(environ, self)
            return handler(req, start_response)
        except HTTPError as e:
            return self.error(environ, start_response, e)
        except StoreError as e:
            return self.error(environ, start_response, HTTPError("400 Bad Request", str(e)))

    def error(self, environ, start_response, e):
        headers = []
        if e.status.startswith("405"):
            headers.append(("Allow", ", ".join(METHODS)))
        if e.condition:
            root = ET.Element(D("error"))
            cond = ET.SubElement(root, D(e.condition))
            for h in e.hrefs:
                ET.SubElement(cond, D("href")).text = h
            body = _xml_body(root)
            ctype = "application/xml; charset=utf-8"
        else:
            body = (e.text + "\n").encode("utf-8")
            ctype = "text/plain; charset=utf-8"
        if environ["REQUEST_METHOD"] == "HEAD":
            body = b""
        start_response(e.status, [("Content-Type", ctype),
                                  ("Content-Length", str(len(body)))] + headers)
        return [body]

    # ------------------------------------------------------------ helpers

    def href(self, req, segs, collection):
        """The URL path of a resource, percent-encoded (a collection's ends
        with a slash)."""
        quoted = (quote(s.encode("utf-8", "surrogateescape"), safe="") for s in segs)
        path = req.script + "/" + "/".join(quoted)
        if collection and not path.endswith("/"):
            path += "/"
        return path

    def check_if(self, req):
        """Evaluates the If header (412 when it is false). Returns the set of
        lock tokens it submits."""
        lists = req.if_lists
        if lists is None:
            return set()
        submitted = {v for _, conds in lists for neg, kind, v in conds if kind == "token"}
        for tag, conds in lists:
            segs = req.segs if tag is None else req.segs_of_url(tag)
            if segs is not None and self._list_true(segs, conds):
                return submitted
        raise HTTPError("412 Precondition Failed", "the If header is false")

    def _list_true(self, segs, conds):
        st = self.store.stat(segs)
        tokens = None
        for negate, kind, value in conds:
            if kind == "token":
                if tokens is None:
                    tokens = {lock.token for lock in self.store.locks_covering(segs)}
                ok = value in tokens
            else:
                ok = st is not None and _etag_match(value, etag_of(st))
            if ok == negate:
                return False
        return True

    def check_locks(self, req, segs, submitted, create=False, deep=False):
        """423 unless every lock protecting a change to `segs` was submitted:
        locks covering it; for a create or delete also those covering its
        parent (its membership changes); with `deep` those below it."""
        groups = [self.store.locks_covering(segs)]
        if create and segs:
            groups.append(self.store.locks_covering(segs[:-1]))
        if deep:
            groups.extend([lock] for lock in self.store.locks_below(segs))
        for locks in groups:
            if locks and not submitted & {lock.token for lock in locks}:
                raise HTTPError("423 Locked", condition="lock-token-submitted",
                                hrefs=[self.href(req, segs, False)])

    def http_preconditions(self, req, st):
        """If-Match / If-None-Match on a write: 412 when false."""
        env = req.environ
        im = env.get("HTTP_IF_MATCH")
        if im is not None:
            if st is None or (im.strip() != "*" and
                              not any(t.strip() == etag_of(st) for t in im.split(","))):
                raise HTTPError("412 Precondition Failed", "If-Match is false")
        inm = env.get("HTTP_IF_NONE_MATCH")
        if inm is not None and st is not None:
            if inm.strip() == "*" or any(t.strip() == etag_of(st) for t in inm.split(",")):
                raise HTTPError("412 Precondition Failed", "If-None-Match is false")

    def read_xml(self, req):
        """The request body parsed (None when empty). 400 for bad XML, 413
        above max_xml."""
        data = req.read_body(self.max_xml)
        if not data.strip():
            return None
        if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
            raise HTTPError("400 Bad Request", "DOCTYPE and entities are not accepted")
        try:
            return ET.fromstring(data)
        except ET.ParseError as e:
            raise HTTPError("400 Bad Request", "invalid XML body: %s" % e)

    def parent_must_exist(self, segs):
        if not segs:
            raise HTTPError("409 Conflict", "the root has no parent")
        st = self.store.stat(segs[:-1])
        if st is None or not is_dir(st):
            raise HTTPError("409 Conflict", "the parent collection does not exist")

    # ------------------------------------------------------------ OPTIONS, GET

    def do_OPTIONS(self, req, start_response):
        start_response("200 OK", [("DAV", "1, 2"), ("MS-Author-Via", "DAV"),
                                  ("Allow", ", ".join(METHODS)), ("Content-Length", "0")])
        return []

    def do_GET(self, req, start_response):
        st = self.store.stat(req.segs)
        if st is None:
            raise HTTPError("404 Not Found", "not found: %s" % req.path)
        if is_dir(st):
            index = req.segs + ("index.html",)
            ist = self.store.stat(index)
            if ist is not None and not is_dir(ist):
                return self.send_file(req, start_response, index, ist)
            return self.listing(req, start_response, st)
        return self.send_file(req, start_response, req.segs, st)

    do_HEAD = do_GET

    def send_file(self, req, start_response, segs, st):
        etag = etag_of(st)
        validators = [("ETag", etag), ("Last-Modified", formatdate(st.st_mtime, usegmt=True))]
        if not_modified(req.environ, etag, st.st_mtime):
            start_response("304 Not Modified", validators)
            return []
        try:
            f = open(self.store.fs_path(segs), "rb")
        except OSError:
            raise HTTPError("404 Not Found", "not found: %s" % req.path)
        # the size of the file opened (it may have been replaced since stat)
        size = os.fstat(f.fileno()).st_size
        start_response("200 OK", [("Content-Type", content_type(segs[-1])),
                                  ("Content-Length", str(size)),
                                  ("Accept-Ranges", "bytes")] + validators)
        if req.method == "HEAD":
            f.close()
            return []
        wrapper = req.environ.get("wsgi.file_wrapper")
        if wrapper is not None:
            return wrapper(f, 64 * 1024)
        return _read_file(f)

    def listing(self, req, start_response, st):
        body = render_listing(self, req, req.segs).encode("utf-8")
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                                  ("Content-Length", str(len(body))),
                                  ("Last-Modified", formatdate(st.st_mtime, usegmt=True))])
        return [] if req.method == "HEAD" else [body]

    # ------------------------------------------------------------ PUT, DELETE, MKCOL

    def do_PUT(self, req, start_response):
        env = req.environ
        if "HTTP_CONTENT_RANGE" in env:
            raise HTTPError("400 Bad Request", "PUT with Content-Range is not supported")
        with self.store.lock:
            st = self.store.stat(req.segs)
            if st is not None and is_dir(st):
                raise HTTPError("405 Method Not Allowed", "cannot PUT to a collection")
            self.parent_must_exist(req.segs)
            self.http_preconditions(req, st)
            submitted = self.check_if(req)
            self.check_locks(req, req.segs, submitted, create=st is None)
        # copy the body outside the lock: a big upload does not stall others
        tmp, f = self.store.temp_file()
        try:
            with f:
                try:
                    how = receive_body(env["wsgi.input"], f, tmp)
                except OSError as e:
                    if e.errno in (errno.ENOSPC, errno.EDQUOT):
                        raise HTTPError("507 Insufficient Storage", "no space left") from e
                    raise
            if os.environ.get("ZFRONT_DEMO_DAV_DEBUG") == "1":
                env["wsgi.errors"].write("dav: PUT %s: body %s\n" % (env.get("PATH_INFO"), how))
            with self.store.lock:
                # check again: the world may have changed while we copied
                st = self.store.stat(req.segs)
                if st is not None and is_dir(st):
                    raise HTTPError("405 Method Not Allowed", "cannot PUT to a collection")
                self.parent_must_exist(req.segs)
                self.check_locks(req, req.segs, submitted, create=st is None)
                self.store.commit_file(tmp, req.segs)
                tmp = None
                new = self.store.stat(req.segs)
        finally:
            if tmp is not None:
                os.unlink(tmp)
        status = "204 No Content" if st is not None else "201 Created"
        headers = [("Content-Length", "0")]
        if new is not None:
            headers.append(("ETag", etag_of(new)))
        start_response(status, headers)
        return []

    def do_DELETE(self, req, start_response):
        with self.store.lock:
            st = self.store.stat(req.segs)
            if st is None:
                raise HTTPError("404 Not Found", "not found: %s" % req.path)
            if not req.segs:
                raise HTTPError("403 Forbidden", "the root cannot be deleted")
            self.http_preconditions(req, st)
            submitted = self.check_if(req)
            self.check_locks(req, req.segs, submitted, create=True, deep=True)
            self.store.delete(req.segs)
        start_response("204 No Content", [("Content-Length", "0")])
        return []

    def do_MKCOL(self, req, start_response):
        stream = req.environ.get("wsgi.input")
        if stream is not None and stream.read(1):
            raise HTTPError("415 Unsupported Media Type", "MKCOL with a body is not supported")
        with self.store.lock:
            if self.store.stat(req.segs) is not None:
                raise HTTPError("405 Method Not Allowed", "the resource exists")
            self.parent_must_exist(req.segs)
            submitted = self.check_if(req)
            self.check_locks(req, req.segs, submitted, create=True)
            self.store.make_collection(req.segs)
        start_response("201 Created", [("Content-Length", "0")])
        return []

    # ------------------------------------------------------------ COPY, MOVE

    def do_COPY(self, req, start_response):
        return self.copy_move(req, start_response, move=False)

    def do_MOVE(self, req, start_response):
        return self.copy_move(req, start_response, move=True)

    def copy_move(self, req, start_response, move):
        env = req.environ
        dest = env.get("HTTP_DESTINATION")
        if not dest:
            raise HTTPError("400 Bad Request", "Destination header missing")
        dsegs = req.segs_of_url(dest)
        if dsegs is None:
            raise HTTPError("502 Bad Gateway", "the destination is not on this server")
        self.store.fs_path(dsegs)  # 400 for an invalid name
        overwrite = env.get("HTTP_OVERWRITE", "T").strip().upper()
        if overwrite not in ("T", "F"):
            raise HTTPError("400 Bad Request", "Overwrite must be T or F")
        depth = req.depth(default="infinity")
        with self.store.lock:
            st = self.store.stat(req.segs)
            if st is None:
                raise HTTPError("404 Not Found", "not found: %s" % req.path)
            collection = is_dir(st)
            if collection and (depth == "1" or (move and depth != "infinity")):
                raise HTTPError("400 Bad Request", "Depth must be 0 or infinity")
            if dsegs == req.segs:
                raise HTTPError("403 Forbidden", "source and destination are the same")
            if not req.segs or (collection and dsegs[:len(req.segs)] == req.segs):
                raise HTTPError("403 Forbidden", "cannot copy or move into itself")
            if req.segs[:len(dsegs)] == dsegs:
                raise HTTPError("403 Forbidden", "the destination contains the source")
            self.parent_must_exist(dsegs)
            dst = self.store.stat(dsegs)
            submitted = self.check_if(req)
            if move:
                self.check_locks(req, req.segs, submitted, create=True, deep=True)
            if dst is not None:
                if overwrite == "F":
                    raise HTTPError("412 Precondition Failed", "the destination exists")
                if not dsegs:
                    raise HTTPError("403 Forbidden", "the root cannot be replaced")
                self.check_locks(req, dsegs, submitted, create=True, deep=True)
                self.store.delete(dsegs)
            else:
                self.check_locks(req, dsegs, submitted, create=True)
            if move:
                self.store.move(req.segs, dsegs)
            else:
                self.store.copy(req.segs, dsegs, depth_infinity=depth == "infinity")
        status = "204 No Content" if dst is not None else "201 Created"
        start_response(status, [("Content-Length", "0")])
        return []

    # ------------------------------------------------------------ PROPFIND, PROPPATCH

    def do_PROPFIND(self, req, start_response):
        depth = req.depth(default="infinity")
        body = self.read_xml(req)
        mode, wanted = "allprop", None
        if body is not None:
            if body.tag != D("propfind"):
                raise HTTPError("400 Bad Request", "the body is not a DAV:propfind")
            kids = list(body)
            first = kids[0].tag if kids else None
            if first == D("prop"):
                mode, wanted = "prop", [p.tag for p in kids[0]]
            elif first == D("propname"):
                mode = "propname"
            elif first == D("allprop"):
                mode = "allprop"
            else:
                raise HTTPError("400 Bad Request", "propfind needs prop, propname or allprop")
        with self.store.lock:
            st = self.store.stat(req.segs)
            if st is None:
                raise HTTPError("404 Not Found", "not found: %s" % req.path)
            root = ET.Element(D("multistatus"))
            self._propfind(req, root, req.segs, st, depth, mode, wanted)
        data = _xml_body(root)
        start_response("207 Multi-Status", [("Content-Type", "application/xml; charset=utf-8"),
                                            ("Content-Length", str(len(data)))])
        return [data]

    def _propfind(self, req, root, segs, st, depth, mode, wanted):
        collection = is_dir(st)
        resp = ET.SubElement(root, D("response"))
        ET.SubElement(resp, D("href")).text = self.href(req, segs, collection)
        found, missing = [], []
        dead = self.store.props(segs)
        if mode == "propname":
            names = [D(n) for n in self.live_names(collection)] + [n for n, _ in dead]
            found = [ET.Element(n) for n in names]
        elif mode == "allprop":
            found = [self.live_prop(req, segs, st, D(n)) for n in self.live_names(collection)]
            found += [ET.fromstring(v) for _, v in dead]
        else:
            deadmap = dict(dead)
            for name in wanted:
                if name in LIVE_NAMES:
                    el = self.live_prop(req, segs, st, name)
                elif name in deadmap:
                    el = ET.fromstring(deadmap[name])
                else:
                    el = None
                if el is None:
                    missing.append(ET.Element(name))
                else:
                    found.append(el)
        for els, status in ((found, "200 OK"), (missing, "404 Not Found")):
            if els or (status == "200 OK" and not missing):
                ps = ET.SubElement(resp, D("propstat"))
                prop = ET.SubElement(ps, D("prop"))
                prop.extend(els)
                ET.SubElement(ps, D("status")).text = "HTTP/1.1 " + status
        if collection and depth != "0":
            for name in self.store.children(segs):
                child = segs + (name,)
                cst = self.store.stat(child)
                if cst is not None:
                    self._propfind(req, root, child, cst,
                                   "0" if depth == "1" else depth, mode, wanted)

    @staticmethod
    def live_names(collection):
        if collection:
            return [n for n in LIVE if n not in ("getcontentlength", "getcontenttype",
                                                 "getetag")]
        return list(LIVE)

    def live_prop(self, req, segs, st, name):
        """The element of a live property, or None where it does not apply."""
        local = name[len("{DAV:}"):]
        collection = is_dir(st)
        el = ET.Element(name)
        if local == "creationdate":
            t = min(st.st_mtime, st.st_ctime)
            el.text = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
        elif local == "displayname":
            el.text = _display(segs[-1]) if segs else "/"
        elif local == "getlastmodified":
            el.text = formatdate(st.st_mtime, usegmt=True)
        elif local == "resourcetype":
            if collection:
                ET.SubElement(el, D("collection"))
        elif local == "supportedlock":
            for scope in ("exclusive", "shared"):
                entry = ET.SubElement(el, D("lockentry"))
                ET.SubElement(ET.SubElement(entry, D("lockscope")), D(scope))
                ET.SubElement(ET.SubElement(entry, D("locktype")), D("write"))
        elif local == "lockdiscovery":
            for lock in self.store.locks_covering(segs):
                el.append(self.activelock(req, lock))
        elif collection:
            return None
        elif local == "getcontentlength":
            el.text = str(st.st_size)
        elif local == "getcontenttype":
            el.text = content_type(segs[-1])
        elif local == "getetag":
            el.text = etag_of(st)
        return el

    def do_PROPPATCH(self, req, start_response):
        body = self.read_xml(req)
        if body is None or body.tag != D("propertyupdate"):
            raise HTTPError("400 Bad Request", "the body is not a DAV:propertyupdate")
        ops = []
        for op in body:
            if op.tag not in (D("set"), D("remove")):
                continue
            for prop in op.findall(D("prop")):
                for p in prop:
                    ops.append((p.tag, ET.tostring(p, encoding="utf-8")
                                if op.tag == D("set") else None))
        with self.store.lock:
            st = self.store.stat(req.segs)
            if st is None:
                raise HTTPError("404 Not Found", "not found: %s" % req.path)
            submitted = self.check_if(req)
            self.check_locks(req, req.segs, submitted)
            protected = {name for name, _ in ops if name in LIVE_NAMES}
            if not protected:
                self.store.patch_props(req.segs, ops)
        root = ET.Element(D("multistatus"))
        resp = ET.SubElement(root, D("response"))
        ET.SubElement(resp, D("href")).text = self.href(req, req.segs, is_dir(st))
        names = list(dict.fromkeys(name for name, _ in ops))
        groups = ([(names, "200 OK")] if not protected else
                  [([n for n in names if n in protected], "403 Forbidden"),
                   ([n for n in names if n not in protected], "424 Failed Dependency")])
        for group, status in groups:
            if not group:
                continue
            ps = ET.SubElement(resp, D("propstat"))
            prop = ET.SubElement(ps, D("prop"))
            for n in group:
                ET.SubElement(prop, n)
            ET.SubElement(ps, D("status")).text = "HTTP/1.1 " + status
            if status.startswith("403"):
                ET.SubElement(ET.SubElement(ps, D("error")),
                              D("cannot-modify-protected-property"))
        data = _xml_body(root)
        start_response("207 Multi-Status", [("Content-Type", "application/xml; charset=utf-8"),
                                            ("Content-Length", str(len(data)))])
        return [data]

    # ------------------------------------------------------------ LOCK, UNLOCK

    def activelock(self, req, lock):
        al = ET.Element(D("activelock"))
        ET.SubElement(ET.SubElement(al, D("locktype")), D("write"))
        ET.SubElement(ET.SubElement(al, D("lockscope")), D(lock.scope))
        ET.SubElement(al, D("depth")).text = "0" if lock.depth == 0 else "infinity"
        if lock.owner:
            al.append(ET.fromstring(lock.owner))
        left = max(0, int(lock.expires - time.time()))
        ET.SubElement(al, D("timeout")).text = "Second-%d" % left
        ET.SubElement(ET.SubElement(al, D("locktoken")), D("href")).text = lock.token
        segs = tuple(s for s in lock.path.split("/") if s)
        st = self.store.stat(segs)
        ET.SubElement(ET.SubElement(al, D("lockroot")), D("href")).text = self.href(
            req, segs, st is not None and is_dir(st))
        return al

    def lock_response(self, req, start_response, status, lock, new):
        root = ET.Element(D("prop"))
        ET.SubElement(root, D("lockdiscovery")).append(self.activelock(req, lock))
        data = _xml_body(root)
        headers = [("Content-Type", "application/xml; charset=utf-8"),
                   ("Content-Length", str(len(data)))]
        if new:
            headers.append(("Lock-Token", "<%s>" % lock.token))
        start_response(status, headers)
        return [data]

    def do_LOCK(self, req, start_response):
        timeout = req.timeout()
        body = self.read_xml(req)
        if body is None:
            return self.refresh(req, start_response, timeout)
        if body.tag != D("lockinfo"):
            raise HTTPError("400 Bad Request", "the body is not a DAV:lockinfo")
        scope_el = body.find(D("lockscope"))
        scope = None
        if scope_el is not None and len(scope_el):
            scope = {D("exclusive"): "exclusive", D("shared"): "shared"}.get(scope_el[0].tag)
        type_el = body.find(D("locktype"))
        if scope is None or type_el is None or type_el.find(D("write")) is None:
            raise HTTPError("400 Bad Request", "lockinfo needs a lockscope and a write locktype")
        owner_el = body.find(D("owner"))
        owner = ET.tostring(owner_el, encoding="utf-8") if owner_el is not None else None
        depth = req.depth(default="infinity")
        if depth == "1":
            raise HTTPError("400 Bad Request", "Depth must be 0 or infinity")
        with self.store.lock:
            st = self.store.stat(req.segs)
            submitted = self.check_if(req)
            existing = self.store.locks_covering(req.segs)
            if depth == "infinity" and st is not None and is_dir(st):
                existing += self.store.locks_below(req.segs)
            if existing and (scope == "exclusive" or
                             any(lock.scope == "exclusive" for lock in existing)):
                raise HTTPError("423 Locked", condition="no-conflicting-lock",
                                hrefs=[self.href(req, tuple(s for s in lock.path.split("/")
                                                            if s), False)
                                       for lock in existing])
            status = "200 OK"
            if st is None:  # a lock on an unmapped URL creates an empty resource
                self.parent_must_exist(req.segs)
                self.check_locks(req, req.segs, submitted, create=True)
                tmp, f = self.store.temp_file()
                f.close()
                self.store.commit_file(tmp, req.segs)
                status = "201 Created"
            lock = self.store.add_lock(req.segs, 0 if depth == "0" else -1, scope, owner,
                                       timeout)
        return self.lock_response(req, start_response, status, lock, True)

    def refresh(self, req, start_response, timeout):
        if req.if_lists is None:
            raise HTTPError("400 Bad Request", "a lock refresh needs an If header with the token")
        with self.store.lock:
            if self.store.stat(req.segs) is None:
                raise HTTPError("404 Not Found", "not found: %s" % req.path)
            submitted = self.check_if(req)
            for lock in self.store.locks_covering(req.segs):
                if lock.token in submitted:
                    self.store.refresh_lock(lock, timeout)
                    return self.lock_response(req, start_response, "200 OK", lock, False)
        raise HTTPError("412 Precondition Failed", condition="lock-token-matches-request-uri")

    def do_UNLOCK(self, req, start_response):
        token = req.environ.get("HTTP_LOCK_TOKEN", "").strip()
        if not (token.startswith("<") and token.endswith(">")):
            raise HTTPError("400 Bad Request", "Lock-Token header missing or malformed")
        token = token[1:-1]
        with self.store.lock:
            if self.store.stat(req.segs) is None:
                raise HTTPError("404 Not Found", "not found: %s" % req.path)
            lock = self.store.get_lock(token)
            if lock is None or not lock.covers(key(req.segs)):
                raise HTTPError("409 Conflict", condition="lock-token-matches-request-uri")
            self.store.remove_lock(token)
        start_response("204 No Content", [("Content-Length", "0")])
        return []


class Request:
    """The parts of a WSGI environ the DAV methods use."""

    def __init__(self, environ, app):
        self.environ = environ
        self.method = environ["REQUEST_METHOD"]
        self.script = environ.get("SCRIPT_NAME", "").rstrip("/")
        raw = environ.get("PATH_INFO") or "/"
        self.path = raw.encode("latin-1").decode("utf-8", "surrogateescape")
        self.segs = split(self.path)
        app.store.fs_path(self.segs)  # StoreError (400) for ".." and friends
        value = environ.get("HTTP_IF")
        self.if_lists = parse_if(value) if value is not None else None

    def segs_of_url(self, url):
        """The segments of a URL (absolute or a path) on this server, None
        when its path is not under SCRIPT_NAME. Only the path counts: a proxy
        in front may have changed the scheme and host."""
        path = urlsplit(url).path if "://" in url else url
        path = unquote_to_bytes(path).decode("utf-8", "surrogateescape")
        if self.script:
            if not (path == self.script or path.startswith(self.script + "/")):
                return None
            path = path[len(self.script):]
        return split(path)

    def depth(self, default):
        value = self.environ.get("HTTP_DEPTH", default).strip().lower()
        if value not in ("0", "1", "infinity"):
            raise HTTPError("400 Bad Request", "Depth must be 0, 1 or infinity")
        return value

    def timeout(self):
        """The lock timeout asked for (seconds), DEFAULT_LOCK_TIMEOUT when
        none is; Infinite is the store's maximum."""
        for part in self.environ.get("HTTP_TIMEOUT", "").split(","):
            part = part.strip()
            if part.lower() == "infinite":
                return MAX_LOCK_TIMEOUT
            if part.lower().startswith("second-") and part[7:].isdigit():
                return max(1, min(int(part[7:]), MAX_LOCK_TIMEOUT))
        return DEFAULT_LOCK_TIMEOUT

    def read_body(self, limit):
        """The body, at most `limit` bytes (413 above)."""
        stream = self.environ.get("wsgi.input")
        if stream is None:
            return b""
        data = stream.read(limit + 1)
        if len(data) > limit:
            raise HTTPError("413 Content Too Large", "the XML body is over %d bytes" % limit)
        return data


def _display(name):
    """A name for text: bytes that were not UTF-8 shown as U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def split(path):
    return tuple(s for s in path.split("/") if s)


def content_type(name):
    ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if ctype.startswith("text/") or ctype in ("application/xml", "application/json"):
        ctype += "; charset=utf-8"
    return ctype


def not_modified(environ, etag, mtime):
    inm = environ.get("HTTP_IF_NONE_MATCH")
    if inm is not None:
        return inm.strip() == "*" or any(_etag_match(t.strip(), etag) for t in inm.split(","))
    ims = environ.get("HTTP_IF_MODIFIED_SINCE")
    if ims:
        try:
            return int(mtime) <= parsedate_to_datetime(ims).timestamp()
        except (TypeError, ValueError):
            return False
    return False


def render_listing(app, req, segs, title=None):
    """An HTML page listing a collection (links, sizes, dates)."""
    rows = []
    if segs:
        rows.append('<li><a href="%s">..</a></li>' % html.escape(app.href(req, segs[:-1], True)))
    for name in app.store.children(segs):
        st = app.store.stat(segs + (name,))
        if st is None:
            continue
        d = is_dir(st)
        size = "" if d else " (%d bytes)" % st.st_size
        rows.append('<li><a href="%s">%s%s</a>%s</li>' % (
            html.escape(app.href(req, segs + (name,), d)), html.escape(_display(name)),
            "/" if d else "", size))
    title = title or "Index of %s" % app.href(req, segs, True)
    return LISTING.format(title=html.escape(title), rows="\n".join(rows))


LISTING = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>{title}</title></head>
<body>
<h1>{title}</h1>
<ul>
{rows}
</ul>
</body>
</html>
"""


def receive_body(stream, f, tmp):
    """Puts the rest of the request body `stream` into the upload temp file
    `f` (open, empty) at path `tmp`; returns how it went: "linked", "copied"
    or "read".

    When zfront spooled the body, ``stream.fileno()`` is its unlinked spool
    file (docs/python-api.md): "linked" gives that file a name at `tmp`
    (linkat of an O_TMPFILE file through /proc/self/fd: no copy at all; it
    needs the spool and the store on one file system), else "copied" copies
    it in the kernel (os.copy_file_range, explicit offsets). A body in memory,
    or a stream without fileno(), is "read" in CHUNK pieces."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        fd = None
    if fd is not None:
        start = stream.tell()
        end = stream.seek(0, 2)
        stream.seek(start)
        if start == 0 and _link_spool(fd, end, f, tmp):
            return "linked"
        if _copy_spool(fd, start, end, f):
            return "copied"
    while True:
        data = stream.read(CHUNK)
        if not data:
            return "read"
        f.write(data)


def _link_spool(fd, size, f, tmp):
    """Links the spool file `fd` (exactly `size` bytes) in place of the
    empty temp file at `tmp`, with its permissions. False when the kernel or
    the file systems don't allow it (nothing changed then)."""
    try:
        if os.fstat(fd).st_size != size:
            return False
        mode = os.fstat(f.fileno()).st_mode & 0o7777
        side = tmp + b".link"
        # linkat(/proc/self/fd, "N", side, AT_SYMLINK_FOLLOW): a dir fd makes
        # Python 3.11 call linkat with the follow flag (plain link() would
        # try to link the /proc symlink itself: EXDEV)
        proc = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.link(str(fd), side, src_dir_fd=proc, follow_symlinks=True)
        finally:
            os.close(proc)
    except OSError:  # EXDEV, ENOENT (not O_TMPFILE, or no /proc), EPERM, ...
        return False
    try:
        os.chmod(side, mode)
        os.replace(side, tmp)
    except OSError:
        os.unlink(side)
        raise
    return True


def _copy_spool(fd, start, end, f):
    """Copies bytes start..end of `fd` into `f` in the kernel. False when
    copy_file_range is not available for these files before anything was
    copied; other errors raise."""
    copy = getattr(os, "copy_file_range", None)
    if copy is None:
        return False
    dst = f.fileno()
    off = start
    while off < end:
        try:
            n = copy(fd, dst, min(end - off, 1 << 30), off, off - start)
        except OSError as e:
            if off == start and e.errno in (errno.EXDEV, errno.ENOSYS, errno.EINVAL,
                                            errno.EOPNOTSUPP):
                return False
            raise
        if n == 0:
            raise OSError(errno.EIO, "the spool file is shorter than the request body")
        off += n
    return True


def _read_file(f):
    try:
        while True:
            data = f.read(64 * 1024)
            if not data:
                break
            yield data
    finally:
        f.close()
