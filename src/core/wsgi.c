/* The WSGI bridge (PEP 3333): runs one exchange through the application on
 * a worker thread, GIL held.
 *
 * The environ is built from the exchange; start_response and write() are
 * methods of a small C object pointing at this request's state on the
 * worker's stack, cut off when the request ends (a stale start_response
 * kept by the app then raises instead of touching freed memory).
 *
 * File fast path (invariant 2): when the app returns zfront.file_wrapper
 * over a regular file, or any iterable whose fileno() is a regular file,
 * and nothing was written yet, the worker hands a dup() of the descriptor
 * to the loop (zf_exchange_send_file), answering a single Range itself, and
 * is free at once. Everything else is iterated and queued with
 * zf_exchange_send_data, which never blocks on the client. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "pyint.h"
#include "python.h"
#include "range.h"

/* What the app gets when it fails before sending anything. */
static const char error_body[] = "500 Internal Server Error\n\n"
                                 "The application failed; the details are in the server's "
                                 "error log.\n";

/* Connection-level fields an application must not set (RFC 9110 7.6.1);
 * the protocol does its own framing. Kept here, not taken from the HTTP
 * module: the core does not depend on any protocol. */
static const char *const hop_by_hop[] = {
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
};

/* ========================================================= request state */

struct wsgi_req {
    struct zf_exchange *ex; /* not to be touched once finished */
    struct zf_conn conn;    /* for log lines; built from the exchange */
    PyObject *input;
    /* from start_response: pending until sent */
    int started;
    int status;
    char *status_line;
    struct zf_headers headers;
    int64_t cl; /* Content-Length the app gave (or we computed), -1 */
    int accept_ranges;
    /* progress */
    int sent_headers;
    int wrote;      /* write() was called */
    int errored;    /* the app failed: a 500 went out, or the body was cut */
    int gone;       /* the client went away (a send failed) */
    int send_errno; /* a send failed on our side (spool: disk full, no descriptor...) */
    int body_done;  /* the iterable ended normally: every byte it made was queued */
    int ok;         /* for zf_exchange_finish */
    int finished;   /* zf_exchange_finish was called */
    int warned_cl;  /* "more than Content-Length" logged */
    uint64_t body_bytes;
    /* kept across a suspension (zf_exchange_suspend): the worker that runs
     * it, the app's objects, and the iteration in progress */
    int worker;
    PyObject *errors, *environ, *responder, *sr, *result, *it;
    int single;
    size_t kept; /* bytes of the last chunk the iterator still references */
};

/* May a response with this status carry a Content-Length we computed? */
static int cl_allowed(int status)
{
    return status >= 200 && status != 204 && status != 304;
}

/* Publishes the pending status and headers. Returns ZF_OK or ZF_ERROR
 * (client gone). */
static int send_headers(struct wsgi_req *r)
{
    r->sent_headers = 1;
    char *line = r->status_line;
    r->status_line = NULL;
    if (zf_exchange_send_headers(r->ex, r->status, line, &r->headers, r->cl) != ZF_OK) {
        r->ok = 0;
        r->gone = 1;
        return ZF_ERROR;
    }
    return ZF_OK;
}

/* Sends body bytes, the headers first if needed, never more than the
 * Content-Length (HEAD: nothing). Returns ZF_OK or ZF_ERROR (client gone). */
static int emit(struct wsgi_req *r, const char *p, size_t n)
{
    if (r->ex->is_head || n == 0)
        return r->sent_headers ? ZF_OK : send_headers(r);
    if (r->cl >= 0 && r->body_bytes + n > (uint64_t)r->cl) {
        if (!r->warned_cl)
            zf_log(ZF_LOG_WARN, &r->conn,
                   "the application sent more than its Content-Length (%lld): cut",
                   (long long)r->cl);
        r->warned_cl = 1;
        n = (size_t)((uint64_t)r->cl - r->body_bytes);
        if (n == 0)
            return r->sent_headers ? ZF_OK : send_headers(r);
    }
    /* First bytes that go to the spool file (the queue is already full:
     * wsgi.output_buffer 0) are queued before the headers are published
     * (the protocol takes nothing before the headers): when the spool
     * fails, nothing went out and the client gets a 500 instead of a 200
     * without its body. Otherwise the headers go first, so the protocol
     * can start the response while the body is copied (HTTP/2 then tends
     * to end the stream with the last DATA frame). A big chunk is copied:
     * other threads may run meanwhile (the caller holds a reference to the
     * bytes). */
    if (!r->sent_headers && !zf_exchange_congested(r->ex) && send_headers(r) != ZF_OK)
        return ZF_ERROR;
    int rc;
    int err;
    errno = 0;
    if (n >= 64 * 1024) {
        PyThreadState *ts = PyEval_SaveThread();
        rc = zf_exchange_send_data(r->ex, p, n);
        err = errno;
        PyEval_RestoreThread(ts);
    } else {
        rc = zf_exchange_send_data(r->ex, p, n);
        err = errno;
    }
    if (rc != ZF_OK) {
        /* the client left, or our side failed (spool), which the app and
         * the log must see as such */
        r->ok = 0;
        if (zf_exchange_aborted(r->ex)) {
            r->gone = 1;
        } else {
            r->send_errno = err ? err : EIO;
            if (!r->sent_headers)
                zf_log(ZF_LOG_ERROR, &r->conn,
                       "cannot queue the start of the response body (%s): nothing was sent, "
                       "the client gets a 500",
                       strerror(r->send_errno));
        }
        return ZF_ERROR;
    }
    r->body_bytes += n;
    if (!r->sent_headers && send_headers(r) != ZF_OK)
        return ZF_ERROR;
    return ZF_OK;
}

/* Answers 500 with a short body (nothing was sent yet). */
static void send_500(struct wsgi_req *r)
{
    zf_headers_free(&r->headers);
    free(r->status_line);
    r->status_line = strdup("500 Internal Server Error");
    r->status = 500;
    r->started = 1;
    r->cl = (int64_t)(sizeof error_body - 1);
    r->body_bytes = 0;
    const char ct[] = "text/plain; charset=utf-8";
    if (!r->status_line || zf_headers_add(&r->headers, "Content-Type", 12, ct, sizeof ct - 1)) {
        r->ok = 0;
        return;
    }
    emit(r, error_body, sizeof error_body - 1);
}

/* The app (or its iterable, or close()) raised: the exception is logged
 * and cleared. Before any header went out the client gets a 500; after,
 * the body is marked incomplete (the protocol closes the connection). A
 * failure caused by the client leaving is not an application error. */
static void app_failed(struct wsgi_req *r, const char *what)
{
    if (!r->finished && (r->gone || zf_exchange_aborted(r->ex))) {
        PyErr_Clear();
        zf_log(ZF_LOG_INFO, &r->conn, "response stopped: the client went away");
        r->gone = 1;
        r->ok = 0;
        return;
    }
    zf__py_log_exception(ZF_LOG_ERROR, &r->conn, what);
    if (r->finished || r->errored)
        return;
    r->errored = 1;
    if (!r->sent_headers)
        send_500(r);
    else
        r->ok = 0;
}

/* ======================================================= start_response */

struct responder {
    PyObject ob_base;     /* PyObject_HEAD */
    struct wsgi_req *req; /* NULL once the request ended */
};

static int is_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* Encodes a str as latin-1; sets ValueError naming `what` when it cannot
 * be. Returns a new bytes reference or NULL. */
static PyObject *latin1(PyObject *s, const char *what)
{
    if (!PyUnicode_Check(s)) {
        PyErr_Format(PyExc_TypeError, "start_response: %s must be str, not %.100s", what,
                     Py_TYPE(s)->tp_name);
        return NULL;
    }
    PyObject *b = PyUnicode_AsLatin1String(s);
    if (!b) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "start_response: %s %R is not latin-1", what, s);
    }
    return b;
}

/* Checks and converts the app's status and headers into *out (status,
 * status_line, headers, cl, accept_ranges). Returns 0, or -1 with an
 * exception set (out is then cleaned up). */
static int parse_response(struct wsgi_req *r, PyObject *status, PyObject *headers,
                          struct wsgi_req *out)
{
    PyObject *sb = latin1(status, "the status");
    if (!sb)
        return -1;
    const char *s = PyBytes_AS_STRING(sb);
    Py_ssize_t sn = PyBytes_GET_SIZE(sb);
    int valid = sn >= 4 && s[0] >= '1' && s[0] <= '9' && s[1] >= '0' && s[1] <= '9' &&
                s[2] >= '0' && s[2] <= '9' && s[3] == ' ';
    for (Py_ssize_t i = 4; valid && i < sn; i++)
        if (((unsigned char)s[i] < 0x20 && s[i] != '\t') || s[i] == 0x7f)
            valid = 0;
    if (!valid || s[0] == '1') {
        PyErr_Format(PyExc_ValueError,
                     "start_response: invalid status %R (expected \"NNN Reason\", NNN >= 200)",
                     status);
        Py_DECREF(sb);
        return -1;
    }
    out->status = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
    out->status_line = strdup(s);
    Py_DECREF(sb);
    out->cl = -1;
    out->accept_ranges = 0;
    if (!out->status_line) {
        PyErr_NoMemory();
        return -1;
    }
    if (!PyList_Check(headers) && !PyTuple_Check(headers)) {
        PyErr_Format(PyExc_TypeError, "start_response: headers must be a list, not %.100s",
                     Py_TYPE(headers)->tp_name);
        return -1;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(headers);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(headers, i);
        if (!(PyTuple_Check(item) || PyList_Check(item)) || PySequence_Fast_GET_SIZE(item) != 2) {
            PyErr_Format(PyExc_TypeError,
                         "start_response: each header must be a (name, value) tuple, not %R", item);
            return -1;
        }
        PyObject *nb = latin1(PySequence_Fast_GET_ITEM(item, 0), "a header name");
        PyObject *vb = nb ? latin1(PySequence_Fast_GET_ITEM(item, 1), "a header value") : NULL;
        if (!vb) {
            Py_XDECREF(nb);
            return -1;
        }
        const char *name = PyBytes_AS_STRING(nb), *value = PyBytes_AS_STRING(vb);
        size_t nlen = (size_t)PyBytes_GET_SIZE(nb), vlen = (size_t)PyBytes_GET_SIZE(vb);
        int bad = nlen == 0;
        for (size_t k = 0; k < nlen && !bad; k++)
            bad = !is_tchar((unsigned char)name[k]);
        if (bad || memchr(value, '\r', vlen) || memchr(value, '\n', vlen) ||
            memchr(value, 0, vlen)) {
            PyErr_Format(PyExc_ValueError, "start_response: invalid header %R", item);
            goto fail;
        }
        int hop = 0;
        for (size_t k = 0; k < ZF_ARRAY_LEN(hop_by_hop); k++)
            hop |= strcasecmp(name, hop_by_hop[k]) == 0;
        if (hop) {
            zf_log(ZF_LOG_WARN, &r->conn, "dropped the application's hop-by-hop header \"%s\"",
                   name);
        } else if (strcasecmp(name, "content-length") == 0) {
            /* The protocol writes Content-Length from ex->content_length. */
            const char *p = value;
            while (*p == ' ' || *p == '\t')
                p++;
            char *end;
            errno = 0;
            long long v = *p >= '0' && *p <= '9' ? strtoll(p, &end, 10) : -1;
            while (v >= 0 && (*end == ' ' || *end == '\t'))
                end++;
            if (v < 0 || errno || *end || (out->cl >= 0 && out->cl != v)) {
                PyErr_Format(PyExc_ValueError, "start_response: invalid Content-Length %R", item);
                goto fail;
            }
            out->cl = v;
        } else {
            if (strcasecmp(name, "accept-ranges") == 0 && strcasecmp(value, "bytes") == 0)
                out->accept_ranges = 1;
            if (zf_headers_add(&out->headers, name, nlen, value, vlen) != ZF_OK) {
                PyErr_NoMemory();
                goto fail;
            }
        }
        Py_DECREF(nb);
        Py_DECREF(vb);
        continue;
    fail:
        Py_DECREF(nb);
        Py_DECREF(vb);
        return -1;
    }
    /* 204 has no Content-Length; a 304's may only repeat the 200's length
     * (RFC 9110 8.6), which the app's value (often 0) is not known to be */
    if (out->status == 204 || out->status == 304)
        out->cl = -1;
    return 0;
}

static PyObject *start_response(struct responder *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"status", "headers", "exc_info", NULL};
    PyObject *status, *headers, *exc_info = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|O:start_response", kwlist, &status, &headers,
                                     &exc_info))
        return NULL;
    struct wsgi_req *r = self->req;
    if (!r || r->finished) {
        PyErr_SetString(PyExc_RuntimeError, "start_response called after the request ended");
        return NULL;
    }
    if (exc_info != Py_None) {
        if (r->sent_headers) {
            /* too late to change the response: re-raise the app's error */
            PyObject *t, *v, *tb;
            if (!PyArg_ParseTuple(exc_info, "OOO", &t, &v, &tb))
                return NULL;
            Py_INCREF(t);
            Py_INCREF(v);
            Py_INCREF(tb);
            PyErr_Restore(t, v, tb);
            return NULL;
        }
    } else if (r->started) {
        PyErr_SetString(PyExc_RuntimeError, "start_response called a second time without exc_info");
        return NULL;
    }
    struct wsgi_req parsed = {0};
    if (parse_response(r, status, headers, &parsed) < 0) {
        free(parsed.status_line);
        zf_headers_free(&parsed.headers);
        return NULL;
    }
    free(r->status_line);
    zf_headers_free(&r->headers);
    r->status = parsed.status;
    r->status_line = parsed.status_line;
    r->headers = parsed.headers;
    r->cl = parsed.cl;
    r->accept_ranges = parsed.accept_ranges;
    r->started = 1;
    return PyObject_GetAttrString((PyObject *)self, "write");
}

/* write(data): the PEP 3333 imperative API. Sends the headers first. */
static PyObject *responder_write(struct responder *self, PyObject *data)
{
    struct wsgi_req *r = self->req;
    if (!r || r->finished) {
        PyErr_SetString(PyExc_RuntimeError, "write() called after the request ended");
        return NULL;
    }
    if (!r->started) {
        PyErr_SetString(PyExc_RuntimeError, "write() called before start_response()");
        return NULL;
    }
    if (!PyBytes_Check(data)) {
        PyErr_Format(PyExc_TypeError, "write() argument must be bytes, not %.100s",
                     Py_TYPE(data)->tp_name);
        return NULL;
    }
    r->wrote = 1;
    if (!r->gone && !r->errored && !r->send_errno &&
        emit(r, PyBytes_AS_STRING(data), (size_t)PyBytes_GET_SIZE(data)) == ZF_OK)
        Py_RETURN_NONE;
    if (r->send_errno) {
        /* not the client's doing: say what failed */
        PyObject *msg = PyUnicode_FromFormat("cannot spool the response to %s: %s", zf_cfg.tmp_dir,
                                             strerror(r->send_errno));
        if (msg) {
            PyObject *exc = PyObject_CallFunction(PyExc_OSError, "iO", r->send_errno, msg);
            if (exc) {
                PyErr_SetObject(PyExc_OSError, exc);
                Py_DECREF(exc);
            }
            Py_DECREF(msg);
        }
        return NULL;
    }
    PyErr_SetString(PyExc_ConnectionAbortedError, "the client went away");
    return NULL;
}

static PyMethodDef responder_methods[] = {
    {"start_response", (PyCFunction)(void (*)(void))start_response, METH_VARARGS | METH_KEYWORDS,
     "start_response(status, headers, exc_info=None)"},
    {"write", (PyCFunction)responder_write, METH_O, "write(data: bytes)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ResponderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "zfront.Responder",
    .tp_basicsize = sizeof(struct responder),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "start_response and write() of one request.",
    .tp_methods = responder_methods,
};

int zf__wsgi_types_ready(void)
{
    return PyType_Ready(&ResponderType);
}

/* ======================================================== file fast path */

/* Returns the fd of obj.fileno() when it is a regular file (*st filled),
 * else -1 (any exception cleared: the app then iterates normally). */
static int regular_fileno(PyObject *obj, struct stat *st)
{
    PyObject *fo = PyObject_CallMethod(obj, "fileno", NULL);
    if (!fo) {
        PyErr_Clear();
        return -1;
    }
    long fd = PyLong_Check(fo) ? PyLong_AsLong(fo) : -1;
    Py_DECREF(fo);
    PyErr_Clear();
    if (fd < 0 || fd > 0x7fffffff || fstat((int)fd, st) != 0 || !S_ISREG(st->st_mode))
        return -1;
    return (int)fd;
}

/* Current position of a file object: its tell() (which knows about Python's
 * read buffer), else the descriptor's offset. */
static int64_t file_position(PyObject *obj, int fd)
{
    if (PyObject_HasAttrString(obj, "tell")) {
        PyObject *t = PyObject_CallMethod(obj, "tell", NULL);
        long long v = t ? PyLong_AsLongLong(t) : -1;
        Py_XDECREF(t);
        if (v >= 0 && !PyErr_Occurred())
            return v;
        PyErr_Clear();
    }
    off_t o = lseek(fd, 0, SEEK_CUR);
    return o < 0 ? 0 : (int64_t)o;
}

/* Replaces the pending status line and adds Content-Range for a 206/416.
 * Returns 0 or -1 (out of memory). */
static int set_range_status(struct wsgi_req *r, int status, const char *range_value)
{
    char *line = strdup(status == 206 ? "206 Partial Content" : "416 Range Not Satisfiable");
    if (!line)
        return -1;
    free(r->status_line);
    r->status_line = line;
    r->status = status;
    return zf_headers_add(&r->headers, "Content-Range", 13, range_value, strlen(range_value));
}

/* Applies a Range request to the file window [*off, *off + *len): only for
 * a 200 the app marked "Accept-Ranges: bytes", a GET with one Range, and an
 * If-Range (if any) equal to the app's strong ETag or its Last-Modified. */
static void apply_range(struct wsgi_req *r, int64_t *off, int64_t *len)
{
    struct zf_exchange *ex = r->ex;
    const char *range = zf_headers_get(&ex->req_headers, "Range");
    if (!zf_cfg.ranges || r->status != 200 || !r->accept_ranges || !range ||
        strcmp(ex->method, "GET") != 0)
        return;
    const char *if_range = zf_headers_get(&ex->req_headers, "If-Range");
    if (if_range) {
        const char *etag = zf_headers_get(&r->headers, "ETag");
        const char *lm = zf_headers_get(&r->headers, "Last-Modified");
        int match = (etag && strncmp(etag, "W/", 2) != 0 && strcmp(if_range, etag) == 0) ||
                    (lm && strcmp(if_range, lm) == 0);
        if (!match)
            return;
    }
    uint64_t start, rlen;
    char buf[96];
    int rc = zf_range_parse(range, (uint64_t)*len, &start, &rlen);
    if (rc == ZF_OK) {
        snprintf(buf, sizeof buf, "bytes %llu-%llu/%llu", (unsigned long long)start,
                 (unsigned long long)(start + rlen - 1), (unsigned long long)*len);
        if (set_range_status(r, 206, buf) == 0) {
            *off += (int64_t)start;
            *len = (int64_t)rlen;
        }
    } else if (rc == ZF_ERROR) {
        snprintf(buf, sizeof buf, "bytes */%llu", (unsigned long long)*len);
        if (set_range_status(r, 416, buf) == 0)
            *len = 0;
    }
}

/* Keeps environ["REMOTE_USER"] as the app left it (Zope sets it once it
 * authenticated the request) in the exchange for the access log, as
 * Paste's TransLogger logs it. Call before zf_exchange_finish. At most
 * 1 KiB is kept: an access-log line is 8 KiB in all. */
static void keep_remote_user(struct wsgi_req *r)
{
    PyObject *u = r->environ ? PyDict_GetItemString(r->environ, "REMOTE_USER") : NULL;
    if (!u || !PyUnicode_Check(u))
        return;
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(u, &n);
    if (!s) {
        PyErr_Clear();
        return;
    }
    if (n == 0)
        return;
    free(r->ex->remote_user);
    r->ex->remote_user = strndup(s, n > 1024 ? 1024 : (size_t)n);
}

/* Hands a file response to the loop. Returns 1 when done (the exchange is
 * finished: the caller only closes the iterable), 0 when result is not a
 * regular file (iterate it instead). */
static int file_response(struct wsgi_req *r, PyObject *result)
{
    PyObject *target = result;
    if (Py_IS_TYPE(result, &zf__FileWrapperType))
        target = ((struct zf__file_wrapper *)result)->filelike;
    if (!target || !PyObject_HasAttrString(target, "fileno"))
        return 0;
    struct stat st;
    int fd = regular_fileno(target, &st);
    if (fd < 0)
        return 0;
    int64_t size = st.st_size;
    int64_t off = file_position(target, fd);
    if (off > size)
        off = size;
    int64_t len = size - off;
    if (!cl_allowed(r->status))
        return 0; /* no body for 204/304: let iteration handle it */
    if (r->cl >= 0 && r->cl < len)
        len = r->cl;
    else if (r->cl > len)
        zf_log(ZF_LOG_WARN, &r->conn,
               "the file is shorter (%lld bytes) than the application's Content-Length "
               "(%lld): sending what exists",
               (long long)len, (long long)r->cl);
    apply_range(r, &off, &len);
    r->cl = len;
    int dupfd = -1;
    if (len > 0 && !r->ex->is_head) {
        dupfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
        if (dupfd < 0) {
            zf_log(ZF_LOG_WARN, &r->conn, "cannot dup the response file (%s): iterating it",
                   strerror(errno));
            return 0;
        }
    }
    zf__input_detach(r->input);
    if (send_headers(r) == ZF_OK && dupfd >= 0) {
        if (zf_exchange_send_file(r->ex, dupfd, (off_t)off, (size_t)len) != ZF_OK)
            r->ok = 0;
    } else if (dupfd >= 0) {
        close(dupfd);
    }
    keep_remote_user(r);
    r->finished = 1;
    zf_exchange_finish(r->ex, r->ok);
    return 1;
}

/* ============================================================= iteration */

/* Iterates the app's result and queues the chunks. Errors go through
 * app_failed. */
/* Starts iterating the app's result: works out whether it is a single
 * chunk (then its length is the Content-Length), and answers HEAD without
 * iterating when it can. Returns 1 when there is something to iterate. */
static int iterate_start(struct wsgi_req *r)
{
    struct zf_exchange *ex = r->ex;
    PyObject *result = r->result;
    PyTypeObject *tp = Py_TYPE(result);
    if (r->cl < 0 && !r->wrote &&
        ((tp->tp_as_sequence && tp->tp_as_sequence->sq_length) ||
         (tp->tp_as_mapping && tp->tp_as_mapping->mp_length))) {
        Py_ssize_t n = PyObject_Length(result);
        if (n < 0)
            PyErr_Clear();
        r->single = n == 1;
    }
    if (ex->is_head && r->started && (r->cl >= 0 || !r->single)) {
        r->body_done = emit(r, NULL, 0) == ZF_OK; /* HEAD: the headers are all there is */
        return 0;
    }
    r->it = PyObject_GetIter(result);
    if (!r->it) {
        app_failed(r, "the application's return value is not iterable");
        return 0;
    }
    return 1;
}

/* Iterates the app's result into the exchange. When the client does not
 * keep up (more than wsgi.output_buffer queued), the response is suspended
 * instead of spooled: the worker is free for other requests and this one
 * resumes on the same thread once the client took half of it. Returns 1
 * when suspended (r must then not be touched), 0 when the body is done or
 * failed. */
static int iterate(struct wsgi_req *r)
{
    struct zf_exchange *ex = r->ex;
    for (;;) {
        if (zf_exchange_aborted(ex)) {
            r->ok = 0;
            r->gone = 1;
            break;
        }
        if (r->sent_headers && zf_exchange_congested(ex)) {
            ex->app_state = r;
            /* the iterator may keep its last chunk while suspended */
            if (r->kept)
                zf_exchange_app_holds(ex, r->kept);
            if (zf_exchange_suspend(ex, r->worker, zf_py_resume_exchange) == ZF_OK)
                return 1;
        }
        PyObject *chunk = PyIter_Next(r->it);
        if (r->kept) {
            zf_exchange_app_holds(ex, 0); /* the iterator moved on */
            r->kept = 0;
        }
        if (!chunk) {
            if (PyErr_Occurred())
                app_failed(r, "application error while iterating the response");
            else
                r->body_done = 1;
            break;
        }
        if (!PyBytes_Check(chunk)) {
            PyErr_Format(PyExc_TypeError, "the application's iterable yielded %.100s, not bytes",
                         Py_TYPE(chunk)->tp_name);
            Py_DECREF(chunk);
            app_failed(r, "application error");
            break;
        }
        size_t n = (size_t)PyBytes_GET_SIZE(chunk);
        if (n == 0 && !r->single) {
            Py_DECREF(chunk);
            continue;
        }
        if (!r->started) {
            Py_DECREF(chunk);
            PyErr_SetString(PyExc_RuntimeError,
                            "the application yielded body data before calling start_response()");
            app_failed(r, "application error");
            break;
        }
        if (r->single && !r->sent_headers && r->cl < 0 && cl_allowed(r->status))
            r->cl = (int64_t)n;
        int rc = emit(r, PyBytes_AS_STRING(chunk), n);
        /* someone else (a generator's local) still references it */
        r->kept = Py_REFCNT(chunk) > 1 ? n : 0;
        Py_DECREF(chunk);
        if (rc == ZF_OK && ex->is_head && r->sent_headers) {
            r->body_done = 1;
            break;
        }
        if (rc != ZF_OK || r->errored) {
            if (r->send_errno)
                zf_log(ZF_LOG_ERROR, &r->conn, "response cut: cannot queue its body (%s)",
                       strerror(r->send_errno));
            break;
        }
    }
    return 0;
}

/* Calls result.close() when it has one: always, also after errors. A
 * close() that raises after the body went out complete is logged, and the
 * response still ends properly: the client got everything the app made. */
static void close_result(struct wsgi_req *r, PyObject *result)
{
    if (!PyObject_HasAttrString(result, "close"))
        return;
    PyObject *rv = PyObject_CallMethod(result, "close", NULL);
    if (rv)
        Py_DECREF(rv);
    else if (r->body_done && r->sent_headers && r->ok && !r->errored)
        zf__py_log_exception(ZF_LOG_ERROR, &r->conn,
                             "application error in close() of its response (the response was "
                             "complete and is sent as it is)");
    else
        app_failed(r, "application error in close() of its response");
}

/* Sends what is still owed after the body: the headers of an empty body,
 * or the verdict on a body shorter than its Content-Length. */
static void complete(struct wsgi_req *r)
{
    if (r->finished || !r->ok || r->errored)
        return;
    if (!r->sent_headers) {
        if (!r->started) {
            PyErr_SetString(PyExc_RuntimeError,
                            "the application returned without calling start_response()");
            app_failed(r, "application error");
            return;
        }
        if (r->cl < 0 && cl_allowed(r->status) && r->body_bytes == 0)
            r->cl = 0;
        emit(r, NULL, 0);
        return;
    }
    if (r->cl >= 0 && r->body_bytes < (uint64_t)r->cl && !r->ex->is_head) {
        zf_log(ZF_LOG_ERROR, &r->conn,
               "the application sent %llu bytes of its Content-Length %lld: response cut",
               (unsigned long long)r->body_bytes, (long long)r->cl);
        r->ok = 0;
    }
}

/* The log identity of the request: built from the exchange's own fields,
 * which stay valid while the worker holds it (ex->conn may go away). */
static void make_conn(struct zf_conn *c, const struct zf_exchange *ex)
{
    memset(c, 0, sizeof *c);
    c->id = ex->conn_id;
    c->proto = ex->channel ? ex->channel : "http";
    c->action = "running the application";
    snprintf(c->peer_addr, sizeof c->peer_addr, "%s", ex->remote_addr);
    c->peer_port = ex->remote_port;
    snprintf(c->peer, sizeof c->peer, strchr(ex->remote_addr, ':') ? "[%s]:%d" : "%s:%d",
             ex->remote_addr, ex->remote_port);
}

/* Ends the request: close() of the result, what is still owed, finish, and
 * the release of everything r holds (r itself too). */
static void wsgi_end(struct wsgi_req *r)
{
    struct zf_exchange *ex = r->ex;
    if (r->result)
        close_result(r, r->result);
    if (!r->finished) {
        complete(r);
        if (r->input)
            zf__input_detach(r->input);
        keep_remote_user(r);
        r->finished = 1;
        zf_exchange_finish(ex, r->ok);
    }
    if (r->responder)
        ((struct responder *)r->responder)->req = NULL;
    Py_XDECREF(r->it);
    Py_XDECREF(r->result);
    Py_XDECREF(r->sr);
    Py_XDECREF(r->responder);
    Py_XDECREF(r->environ);
    Py_XDECREF(r->errors);
    Py_XDECREF(r->input);
    free(r->status_line);
    zf_headers_free(&r->headers);
    if (PyErr_Occurred()) /* nothing may leak into the next request */
        zf__py_log_exception(ZF_LOG_ERROR, &r->conn, "unexpected pending exception");
    PyMem_Free(r);
}

/* Worker thread, GIL held: runs ex through the app. Always ends with
 * zf_exchange_finish (after which ex is not touched) and always calls the
 * result's close() — unless the response is suspended, when
 * wsgi_resume carries on later on this same thread. */
static void wsgi_handle(struct zf_exchange *ex, struct zf_worker *w)
{
    struct wsgi_req *r = PyMem_Calloc(1, sizeof *r);
    if (!r) {
        zf_log(ZF_LOG_ERROR, NULL, "#%llu out of memory for a request",
               (unsigned long long)ex->conn_id);
        zf_exchange_finish(ex, 0);
        return;
    }
    r->ex = ex;
    r->cl = -1;
    r->ok = 1;
    r->worker = w ? w->index : 0;
    make_conn(&r->conn, ex);
    r->input = zf__input_new(&ex->body);
    r->errors = r->input ? zf__errors_new(&r->conn) : NULL;
    if (r->errors)
        zf__errors_set_level(r->errors, ex->errors_level);
    r->environ = r->errors ? zf__wsgi_environ(ex, &r->conn, r->input, r->errors) : NULL;
    r->responder = r->environ ? (PyObject *)PyObject_New(struct responder, &ResponderType) : NULL;
    if (r->responder) {
        ((struct responder *)r->responder)->req = r;
        r->sr = PyObject_GetAttrString(r->responder, "start_response");
    }
    if (!r->sr || !zf__py_app) {
        if (!zf__py_app && !PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "no application loaded");
        app_failed(r, "cannot prepare the request for the application");
    } else {
        r->result = PyObject_CallFunctionObjArgs(zf__py_app, r->environ, r->sr, NULL);
        if (!r->result)
            app_failed(r, "application error");
    }
    if (r->result &&
        !(r->started && !r->wrote && !r->sent_headers && file_response(r, r->result)) &&
        iterate_start(r) && iterate(r))
        return; /* suspended: ex->app_state holds r */
    wsgi_end(r);
}

/* Worker thread (the one that suspended it), GIL held: carries on with a
 * suspended response. */
static void wsgi_resume(struct zf_exchange *ex, struct zf_worker *w)
{
    (void)w;
    struct wsgi_req *r = ex->app_state;
    if (iterate(r))
        return;
    wsgi_end(r);
}

const struct zf_app_ops zf_wsgi_ops = {
    .name = "wsgi",
    .handle = wsgi_handle,
    .resume = wsgi_resume,
};
