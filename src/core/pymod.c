/* The built-in `zfront` Python module and the C types the WSGI bridge hands
 * to applications: zfront.file_wrapper (wsgi.file_wrapper), the wsgi.input
 * stream over a request body, and the wsgi.errors stream to the error log.
 *
 * The module is registered with PyImport_AppendInittab before the
 * interpreter starts. It is also a package: its __path__ points at
 * <python dir>/zfront, so zfront.loader and zfront.demo import from files.
 * Later issues add functions (publish, subscribe, enqueue, schedule) to
 * zfront_methods below. Everything here runs with the GIL held. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pyint.h"
#include "task.h"
#ifdef ZF_WITH_BUS
#include "../bus/bus.h"
#endif
#include <structmember.h>

/* ============================================================ file_wrapper */

static PyObject *fw_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"filelike", "block_size", NULL};
    PyObject *filelike;
    Py_ssize_t block_size = 8192;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|n:file_wrapper", kwlist, &filelike, &block_size))
        return NULL;
    if (block_size <= 0) {
        PyErr_SetString(PyExc_ValueError, "file_wrapper: block_size must be positive");
        return NULL;
    }
    struct zf__file_wrapper *self = (struct zf__file_wrapper *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    Py_INCREF(filelike);
    self->filelike = filelike;
    self->block_size = block_size;
    return (PyObject *)self;
}

static int fw_traverse(struct zf__file_wrapper *self, visitproc visit, void *arg)
{
    Py_VISIT(self->filelike);
    return 0;
}

static int fw_clear(struct zf__file_wrapper *self)
{
    Py_CLEAR(self->filelike);
    return 0;
}

static void fw_dealloc(struct zf__file_wrapper *self)
{
    PyObject_GC_UnTrack(self);
    fw_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Next block from filelike.read(block_size); NULL without an exception at
 * the end (an empty read). */
static PyObject *fw_next(struct zf__file_wrapper *self)
{
    if (!self->filelike)
        return NULL;
    PyObject *data = PyObject_CallMethod(self->filelike, "read", "n", self->block_size);
    if (!data)
        return NULL;
    if (!PyBytes_Check(data)) {
        PyErr_Format(PyExc_TypeError, "file_wrapper: read() returned %.100s, not bytes",
                     Py_TYPE(data)->tp_name);
        Py_DECREF(data);
        return NULL;
    }
    if (PyBytes_GET_SIZE(data) == 0) {
        Py_DECREF(data);
        return NULL;
    }
    return data;
}

static PyObject *fw_close(struct zf__file_wrapper *self, PyObject *unused)
{
    if (self->filelike && PyObject_HasAttrString(self->filelike, "close")) {
        PyObject *r = PyObject_CallMethod(self->filelike, "close", NULL);
        if (!r)
            return NULL;
        Py_DECREF(r);
    }
    Py_RETURN_NONE;
}

static PyObject *fw_fileno(struct zf__file_wrapper *self, PyObject *unused)
{
    return PyObject_CallMethod(self->filelike, "fileno", NULL);
}

static PyMethodDef fw_methods[] = {
    {"close", (PyCFunction)fw_close, METH_NOARGS, "Closes the wrapped file (if it has close())."},
    {"fileno", (PyCFunction)fw_fileno, METH_NOARGS, "The wrapped file's fileno()."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef fw_members[] = {
    {"filelike", T_OBJECT, offsetof(struct zf__file_wrapper, filelike), READONLY,
     "The wrapped file-like object."},
    {"block_size", T_PYSSIZET, offsetof(struct zf__file_wrapper, block_size), READONLY,
     "Bytes per iteration step."},
    {NULL, 0, 0, 0, NULL},
};

PyTypeObject zf__FileWrapperType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "zfront.file_wrapper",
    .tp_basicsize = sizeof(struct zf__file_wrapper),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "file_wrapper(filelike, block_size=8192)\n\n"
              "wsgi.file_wrapper: iterates filelike.read(block_size) blocks. When an app\n"
              "returns it over a regular file, zfront sends the file from the event loop\n"
              "(sendfile) and the worker thread is free at once.",
    .tp_new = fw_new,
    .tp_dealloc = (destructor)fw_dealloc,
    .tp_traverse = (traverseproc)fw_traverse,
    .tp_clear = (inquiry)fw_clear,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)fw_next,
    .tp_methods = fw_methods,
    .tp_members = fw_members,
};

/* ============================================================ wsgi.input */

/* Size of the read-ahead buffer for file-backed bodies, and the read size
 * from which the GIL is released around pread. */
#define INPUT_BUF (64 * 1024)

struct input {
    PyObject ob_base; /* PyObject_HEAD */
    const char *mem;  /* memory body, or NULL */
    int fd;           /* file body (unlinked temp file), or -1 */
    size_t len;
    size_t pos;   /* may be past len after a seek */
    int attached; /* 0 once the request ended: the body is gone */
    int closed;
    char *buf; /* read-ahead for file bodies */
    size_t buf_off, buf_len;
};

static PyTypeObject InputType;

PyObject *zf__input_new(const struct zf_body *body)
{
    struct input *self = PyObject_New(struct input, &InputType);
    if (!self)
        return NULL;
    self->fd = body->fd;
    self->mem = body->fd >= 0 ? NULL : body->mem;
    self->len = body->len;
    self->pos = 0;
    self->attached = 1;
    self->closed = 0;
    self->buf = NULL;
    self->buf_off = self->buf_len = 0;
    return (PyObject *)self;
}

void zf__input_detach(PyObject *obj)
{
    struct input *self = (struct input *)obj;
    self->attached = 0;
    self->mem = NULL;
    self->fd = -1;
    PyMem_Free(self->buf);
    self->buf = NULL;
    self->buf_len = 0;
}

static void input_dealloc(struct input *self)
{
    PyMem_Free(self->buf);
    PyObject_Free(self);
}

/* Returns 0 when the stream can be read, -1 with ValueError set. */
static int input_check(struct input *self)
{
    if (!self->attached) {
        PyErr_SetString(PyExc_ValueError,
                        "wsgi.input: the request has ended, its body is no longer available");
        return -1;
    }
    if (self->closed) {
        PyErr_SetString(PyExc_ValueError, "I/O operation on closed file (wsgi.input)");
        return -1;
    }
    return 0;
}

static size_t input_remaining(struct input *self)
{
    return self->pos < self->len ? self->len - self->pos : 0;
}

/* Reads exactly n bytes of the body file at off into dst. Big reads
 * release the GIL (small ones hit the page cache: not worth the switch).
 * Returns 0, or -1 with OSError set. */
static int input_pread(struct input *self, char *dst, size_t n, size_t off)
{
    int err = 0;
    PyThreadState *ts = n >= INPUT_BUF ? PyEval_SaveThread() : NULL;
    while (n > 0) {
        ssize_t r = pread(self->fd, dst, n, (off_t)off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            err = errno;
            break;
        }
        if (r == 0) {
            err = EIO; /* the spool file is shorter than the body it holds */
            break;
        }
        dst += r;
        off += (size_t)r;
        n -= (size_t)r;
    }
    if (ts)
        PyEval_RestoreThread(ts);
    if (err) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

/* Points *p at the bytes available at the current position (memory, or the
 * read-ahead buffer refilled from the file). Returns their count (0 at the
 * end) or -1 with an exception set. */
static Py_ssize_t input_avail(struct input *self, const char **p)
{
    size_t rem = input_remaining(self);
    if (rem == 0)
        return 0;
    if (self->mem) {
        *p = self->mem + self->pos;
        return (Py_ssize_t)rem;
    }
    if (!(self->buf && self->pos >= self->buf_off && self->pos < self->buf_off + self->buf_len)) {
        if (!self->buf && !(self->buf = PyMem_Malloc(INPUT_BUF))) {
            PyErr_NoMemory();
            return -1;
        }
        size_t n = rem < INPUT_BUF ? rem : INPUT_BUF;
        self->buf_len = 0;
        if (input_pread(self, self->buf, n, self->pos) < 0)
            return -1;
        self->buf_off = self->pos;
        self->buf_len = n;
    }
    *p = self->buf + (self->pos - self->buf_off);
    return (Py_ssize_t)(self->buf_off + self->buf_len - self->pos);
}

/* Copies n bytes (n <= remaining) from the current position to dst and
 * advances. Large file reads go straight to dst with the GIL released.
 * Returns 0 or -1 with an exception set. */
static int input_copy(struct input *self, char *dst, size_t n)
{
    while (n > 0) {
        int buffered =
            self->buf && self->pos >= self->buf_off && self->pos < self->buf_off + self->buf_len;
        if (!self->mem && !buffered && n >= INPUT_BUF) {
            if (input_pread(self, dst, n, self->pos) < 0)
                return -1;
            self->pos += n;
            return 0;
        }
        const char *p;
        Py_ssize_t k = input_avail(self, &p);
        if (k <= 0)
            return k < 0 ? -1 : 0;
        size_t take = (size_t)k < n ? (size_t)k : n;
        memcpy(dst, p, take);
        dst += take;
        n -= take;
        self->pos += take;
    }
    return 0;
}

/* Parses an optional size argument: an int, or None / absent for -1 (as
 * io's read(size=None) does). Returns 0 or -1 with an exception set. */
static int size_arg(PyObject *args, const char *fmt, Py_ssize_t *out)
{
    PyObject *o = Py_None;
    *out = -1;
    if (!PyArg_ParseTuple(args, fmt, &o))
        return -1;
    if (o == Py_None)
        return 0;
    *out = PyNumber_AsSsize_t(o, PyExc_OverflowError);
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

static PyObject *input_read(struct input *self, PyObject *args)
{
    Py_ssize_t size;
    if (size_arg(args, "|O:read", &size) < 0 || input_check(self) < 0)
        return NULL;
    size_t n = input_remaining(self);
    if (size >= 0 && (size_t)size < n)
        n = (size_t)size;
    if (self->mem) {
        PyObject *r = PyBytes_FromStringAndSize(self->mem + self->pos, (Py_ssize_t)n);
        if (r)
            self->pos += n;
        return r;
    }
    PyObject *r = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n);
    if (r && input_copy(self, PyBytes_AS_STRING(r), n) < 0)
        Py_CLEAR(r);
    return r;
}

static PyObject *input_readinto(struct input *self, PyObject *args)
{
    Py_buffer b;
    if (!PyArg_ParseTuple(args, "w*:readinto", &b))
        return NULL;
    if (input_check(self) < 0) {
        PyBuffer_Release(&b);
        return NULL;
    }
    size_t n = input_remaining(self);
    if ((size_t)b.len < n)
        n = (size_t)b.len;
    int rc = input_copy(self, b.buf, n);
    PyBuffer_Release(&b);
    return rc < 0 ? NULL : PyLong_FromSize_t(n);
}

/* One line (ending with b"\n" unless the body or the limit ends first).
 * size < 0 means no limit. Returns a new reference or NULL. */
static PyObject *input_line(struct input *self, Py_ssize_t size)
{
    size_t limit = input_remaining(self);
    if (size >= 0 && (size_t)size < limit)
        limit = (size_t)size;
    char *acc = NULL;
    size_t acc_len = 0, acc_cap = 0;
    PyObject *r = NULL;
    while (acc_len < limit) {
        const char *p;
        Py_ssize_t k = input_avail(self, &p);
        if (k < 0)
            goto out;
        if (k == 0)
            break;
        size_t want = limit - acc_len;
        size_t avail = (size_t)k < want ? (size_t)k : want;
        const char *nl = memchr(p, '\n', avail);
        size_t take = nl ? (size_t)(nl - p) + 1 : avail;
        if (acc_len == 0 && (nl || take == want)) {
            /* the whole line is contiguous: no copy through acc */
            r = PyBytes_FromStringAndSize(p, (Py_ssize_t)take);
            if (r)
                self->pos += take;
            goto out;
        }
        if (acc_len + take > acc_cap) {
            size_t cap = acc_cap ? acc_cap * 2 : 2 * INPUT_BUF;
            while (cap < acc_len + take)
                cap *= 2;
            char *np = PyMem_Realloc(acc, cap);
            if (!np) {
                PyErr_NoMemory();
                goto out;
            }
            acc = np;
            acc_cap = cap;
        }
        memcpy(acc + acc_len, p, take);
        acc_len += take;
        self->pos += take;
        if (nl)
            break;
    }
    r = PyBytes_FromStringAndSize(acc, (Py_ssize_t)acc_len);
out:
    PyMem_Free(acc);
    return r;
}

static PyObject *input_readline(struct input *self, PyObject *args)
{
    Py_ssize_t size;
    if (size_arg(args, "|O:readline", &size) < 0 || input_check(self) < 0)
        return NULL;
    return input_line(self, size);
}

static PyObject *input_readlines(struct input *self, PyObject *args)
{
    Py_ssize_t hint;
    if (size_arg(args, "|O:readlines", &hint) < 0 || input_check(self) < 0)
        return NULL;
    PyObject *list = PyList_New(0);
    Py_ssize_t total = 0;
    while (list) {
        PyObject *line = input_line(self, -1);
        if (!line) {
            Py_CLEAR(list);
            break;
        }
        Py_ssize_t n = PyBytes_GET_SIZE(line);
        if (n == 0) {
            Py_DECREF(line);
            break;
        }
        int rc = PyList_Append(list, line);
        Py_DECREF(line);
        if (rc < 0)
            Py_CLEAR(list);
        total += n;
        if (hint > 0 && total >= hint)
            break;
    }
    return list;
}

static PyObject *input_next(struct input *self)
{
    if (input_check(self) < 0)
        return NULL;
    PyObject *line = input_line(self, -1);
    if (line && PyBytes_GET_SIZE(line) == 0)
        Py_CLEAR(line); /* end: StopIteration */
    return line;
}

static PyObject *input_seek(struct input *self, PyObject *args)
{
    Py_ssize_t off;
    int whence = 0;
    if (!PyArg_ParseTuple(args, "n|i:seek", &off, &whence) || input_check(self) < 0)
        return NULL;
    Py_ssize_t base = whence == 0   ? 0
                      : whence == 1 ? (Py_ssize_t)self->pos
                      : whence == 2 ? (Py_ssize_t)self->len
                                    : -1;
    if (base < 0) {
        PyErr_Format(PyExc_ValueError, "seek: invalid whence (%d)", whence);
        return NULL;
    }
    if (base + off < 0) {
        PyErr_SetString(PyExc_ValueError, "seek: negative position");
        return NULL;
    }
    self->pos = (size_t)(base + off);
    return PyLong_FromSize_t(self->pos);
}

static PyObject *input_tell(struct input *self, PyObject *unused)
{
    if (input_check(self) < 0)
        return NULL;
    return PyLong_FromSize_t(self->pos);
}

/* fileno(): the descriptor of the spool file holding the body (bytes 0 to
 * len), for os.copy_file_range / os.sendfile / os.pread with explicit
 * offsets. Reads through the stream use pread, so neither side moves the
 * other's position. zfront owns the descriptor: it is closed when the
 * request ends (fileno() then raises ValueError, like every method). A body
 * in memory has none: io.UnsupportedOperation, as io.BytesIO raises. */
static PyObject *input_fileno(struct input *self, PyObject *unused)
{
    if (input_check(self) < 0)
        return NULL;
    if (self->fd >= 0)
        return PyLong_FromLong(self->fd);
    PyObject *io = PyImport_ImportModule("io");
    if (!io)
        return NULL;
    PyObject *exc = PyObject_GetAttrString(io, "UnsupportedOperation");
    Py_DECREF(io);
    if (!exc)
        return NULL;
    PyErr_SetString(exc, "fileno: wsgi.input holds this body in memory, not in a file");
    Py_DECREF(exc);
    return NULL;
}

static PyObject *input_true(PyObject *self, PyObject *unused)
{
    Py_RETURN_TRUE;
}

static PyObject *input_false(PyObject *self, PyObject *unused)
{
    Py_RETURN_FALSE;
}

static PyObject *input_close(struct input *self, PyObject *unused)
{
    self->closed = 1;
    Py_RETURN_NONE;
}

static PyObject *input_get_closed(struct input *self, void *unused)
{
    return PyBool_FromLong(self->closed || !self->attached);
}

static PyMethodDef input_methods[] = {
    {"read", (PyCFunction)input_read, METH_VARARGS, "read(size=-1) -> bytes"},
    {"readinto", (PyCFunction)input_readinto, METH_VARARGS, "readinto(buffer) -> int"},
    {"readline", (PyCFunction)input_readline, METH_VARARGS, "readline(size=-1) -> bytes"},
    {"readlines", (PyCFunction)input_readlines, METH_VARARGS, "readlines(hint=-1) -> list"},
    {"seek", (PyCFunction)input_seek, METH_VARARGS, "seek(offset, whence=0) -> int"},
    {"tell", (PyCFunction)input_tell, METH_NOARGS, "tell() -> int"},
    {"fileno", (PyCFunction)input_fileno, METH_NOARGS,
     "fileno() -> int: the spool file of a spooled body (read it with explicit offsets)"},
    {"seekable", input_true, METH_NOARGS, "True"},
    {"readable", input_true, METH_NOARGS, "True"},
    {"writable", input_false, METH_NOARGS, "False"},
    {"isatty", input_false, METH_NOARGS, "False"},
    {"close", (PyCFunction)input_close, METH_NOARGS, "Marks the stream closed."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef input_getset[] = {
    {"closed", (getter)input_get_closed, NULL, "True after close() or once the request ended.",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject InputType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "zfront.Input",
    .tp_basicsize = sizeof(struct input),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "wsgi.input: the complete request body (memory or a temp file).",
    .tp_dealloc = (destructor)input_dealloc,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)input_next,
    .tp_methods = input_methods,
    .tp_getset = input_getset,
};

/* ============================================================ wsgi.errors */

/* A partial line longer than this is logged without waiting for '\n'. */
#define ERRORS_MAX_LINE 8192

struct errors {
    PyObject ob_base;    /* PyObject_HEAD */
    struct zf_conn conn; /* copy: the stream may outlive the request */
    int level;           /* of the lines logged (ZF_LOG_ERROR by default) */
    char *pending;       /* partial last line */
    size_t len, cap;
};

static PyTypeObject ErrorsType;

PyObject *zf__errors_new(const struct zf_conn *conn)
{
    struct errors *self = PyObject_New(struct errors, &ErrorsType);
    if (!self)
        return NULL;
    self->conn = *conn;
    self->conn.action = NULL;
    self->level = ZF_LOG_ERROR;
    self->pending = NULL;
    self->len = self->cap = 0;
    return (PyObject *)self;
}

void zf__errors_set_level(PyObject *errors, int level)
{
    ((struct errors *)errors)->level = level;
}

static void errors_emit(struct errors *self)
{
    if (self->len && self->level <= zf_log_level)
        zf_log_text(self->level, &self->conn, self->pending, self->len);
    self->len = 0;
}

static void errors_dealloc(struct errors *self)
{
    errors_emit(self);
    PyMem_Free(self->pending);
    PyObject_Free(self);
}

/* Appends text and logs every complete line. Returns 0 or -1 (no memory). */
static int errors_add(struct errors *self, const char *p, size_t n)
{
    while (n > 0) {
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) + 1 : n;
        if (self->len + take > self->cap) {
            size_t cap = self->cap ? self->cap : 256;
            while (cap < self->len + take)
                cap *= 2;
            char *np = PyMem_Realloc(self->pending, cap);
            if (!np) {
                PyErr_NoMemory();
                return -1;
            }
            self->pending = np;
            self->cap = cap;
        }
        memcpy(self->pending + self->len, p, take);
        self->len += take;
        p += take;
        n -= take;
        if (nl || self->len >= ERRORS_MAX_LINE)
            errors_emit(self);
    }
    return 0;
}

static int errors_add_obj(struct errors *self, PyObject *s)
{
    if (PyBytes_Check(s))
        return errors_add(self, PyBytes_AS_STRING(s), (size_t)PyBytes_GET_SIZE(s));
    if (!PyUnicode_Check(s)) {
        PyErr_Format(PyExc_TypeError, "wsgi.errors.write() argument must be str, not %.100s",
                     Py_TYPE(s)->tp_name);
        return -1;
    }
    PyObject *b = PyUnicode_AsEncodedString(s, "utf-8", "backslashreplace");
    if (!b)
        return -1;
    int rc = errors_add(self, PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b));
    Py_DECREF(b);
    return rc;
}

static PyObject *errors_write(struct errors *self, PyObject *s)
{
    if (errors_add_obj(self, s) < 0)
        return NULL;
    return PyLong_FromSsize_t(PyUnicode_Check(s) ? PyUnicode_GET_LENGTH(s) : PyObject_Length(s));
}

static PyObject *errors_writelines(struct errors *self, PyObject *seq)
{
    PyObject *it = PyObject_GetIter(seq);
    if (!it)
        return NULL;
    PyObject *s;
    while ((s = PyIter_Next(it)) != NULL) {
        int rc = errors_add_obj(self, s);
        Py_DECREF(s);
        if (rc < 0)
            break;
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *errors_flush(struct errors *self, PyObject *unused)
{
    errors_emit(self);
    Py_RETURN_NONE;
}

static PyMethodDef errors_methods[] = {
    {"write", (PyCFunction)errors_write, METH_O, "write(str): lines go to the error log"},
    {"writelines", (PyCFunction)errors_writelines, METH_O, "writelines(iterable of str)"},
    {"flush", (PyCFunction)errors_flush, METH_NOARGS, "Logs a pending partial line."},
    {"writable", input_true, METH_NOARGS, "True"},
    {"isatty", input_false, METH_NOARGS, "False"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ErrorsType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "zfront.Errors",
    .tp_basicsize = sizeof(struct errors),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "wsgi.errors: each line written goes to zfront's error log.",
    .tp_dealloc = (destructor)errors_dealloc,
    .tp_methods = errors_methods,
};

/* ======================================================== shutdown hooks */

/* Callables registered with zfront.on_shutdown, in registration order
 * (a list, or NULL when none). */
static PyObject *shutdown_hooks;

static PyObject *zfront_on_shutdown(PyObject *self, PyObject *fn)
{
    (void)self;
    if (!PyCallable_Check(fn)) {
        PyErr_Format(PyExc_TypeError, "zfront.on_shutdown() needs a callable, not %.100s",
                     Py_TYPE(fn)->tp_name);
        return NULL;
    }
    if (!shutdown_hooks && !(shutdown_hooks = PyList_New(0)))
        return NULL;
    if (PyList_Append(shutdown_hooks, fn) < 0)
        return NULL;
    Py_INCREF(fn);
    return fn;
}

void zf__py_run_shutdown_hooks(void)
{
    /* A hook may register another one: run until none is left. */
    while (shutdown_hooks) {
        PyObject *hooks = shutdown_hooks;
        shutdown_hooks = NULL;
        for (Py_ssize_t i = PyList_GET_SIZE(hooks) - 1; i >= 0; i--) {
            PyObject *r = PyObject_CallNoArgs(PyList_GET_ITEM(hooks, i));
            if (r) {
                Py_DECREF(r);
                continue;
            }
            /* the hook's exception is kept aside while its name is made */
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            PyObject *name = PyObject_Repr(PyList_GET_ITEM(hooks, i));
            const char *s = name ? PyUnicode_AsUTF8(name) : NULL;
            char what[300];
            snprintf(what, sizeof what, "shutdown hook %s failed", s ? s : "?");
            Py_XDECREF(name);
            PyErr_Clear();
            PyErr_Restore(type, value, tb);
            zf__py_log_exception(ZF_LOG_ERROR, NULL, what);
        }
        Py_DECREF(hooks);
    }
}

/* ================================================================ enqueue */

/* True when s (n bytes) has no byte below 0x20 (but tab when tab_ok) and no
 * DEL: nothing that could split a header or a request line. */
static int clean_text(const char *s, Py_ssize_t n, int tab_ok)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && !(tab_ok && c == '\t')) || c == 0x7f)
            return 0;
    }
    return 1;
}

/* Adds each (name, value) of headers (a mapping or an iterable of pairs)
 * to t. Returns 0, or -1 with an exception set. */
static int enqueue_headers(struct zf_task *t, PyObject *headers)
{
    PyObject *items = PyMapping_Check(headers) && PyObject_HasAttrString(headers, "items")
                          ? PyMapping_Items(headers)
                          : PySequence_List(headers);
    if (!items)
        return -1;
    int rc = 0;
    for (Py_ssize_t i = 0; rc == 0 && i < PyList_GET_SIZE(items); i++) {
        PyObject *pair = PyList_GET_ITEM(items, i);
        const char *name, *value;
        Py_ssize_t nlen, vlen;
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 ||
            !PyUnicode_Check(PyTuple_GET_ITEM(pair, 0)) ||
            !PyUnicode_Check(PyTuple_GET_ITEM(pair, 1))) {
            PyErr_SetString(PyExc_TypeError,
                            "zfront.enqueue: headers must be a dict (or pairs) of str to str");
            rc = -1;
        } else if (!(name = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(pair, 0), &nlen)) ||
                   !(value = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(pair, 1), &vlen))) {
            rc = -1;
        } else if (nlen == 0 || !clean_text(name, nlen, 0) || strpbrk(name, " :") ||
                   !clean_text(value, vlen, 1)) {
            PyErr_Format(PyExc_ValueError, "zfront.enqueue: bad header %R", pair);
            rc = -1;
        } else if (zf_task_add_header(t, name, (size_t)nlen, value, (size_t)vlen) != ZF_OK) {
            PyErr_NoMemory();
            rc = -1;
        }
    }
    Py_DECREF(items);
    return rc;
}

static PyObject *zfront_enqueue(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"method", "path", "headers", "body", "queue", NULL};
    const char *method, *path, *queue = "default";
    Py_ssize_t plen;
    PyObject *headers = Py_None;
    Py_buffer body = {0};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "ss#|$Os*s:enqueue", kwlist, &method, &path, &plen,
                                     &headers, &body, &queue))
        return NULL;
    PyObject *ret = NULL;
    struct zf_task *t = NULL;
    int method_ok = *method != 0;
    for (const char *p = method; *p; p++)
        method_ok &= (*p >= 'A' && *p <= 'Z') || *p == '-' || *p == '_';
    if (!method_ok) {
        PyErr_Format(PyExc_ValueError, "zfront.enqueue: bad method %R", PyTuple_GET_ITEM(args, 0));
    } else if (plen == 0 || path[0] != '/' || !clean_text(path, plen, 0) || strchr(path, ' ')) {
        PyErr_Format(PyExc_ValueError,
                     "zfront.enqueue: the path must start with / and hold no spaces or control "
                     "characters: %R",
                     PyTuple_GET_ITEM(args, 1));
    } else if (!*queue || !clean_text(queue, (Py_ssize_t)strlen(queue), 0)) {
        PyErr_SetString(PyExc_ValueError, "zfront.enqueue: bad queue name");
    } else if (!(t = zf_task_new(queue, method, path, body.buf, body.buf ? (size_t)body.len : 0))) {
        PyErr_NoMemory();
    } else if (headers == Py_None || enqueue_headers(t, headers) == 0) {
        zf_task_submit(t);
        t = NULL;
        ret = Py_NewRef(Py_None);
    }
    zf_task_free(t);
    if (body.obj)
        PyBuffer_Release(&body);
    return ret;
}

/* zfront.bus_stats(): the bus counters (atomic reads, no loop involved). */
static PyObject *zfront_bus_stats(PyObject *self, PyObject *unused)
{
#ifdef ZF_WITH_BUS
    struct zf_bus_stats st;
    if (zf_bus_get_stats(&st) != ZF_OK)
        Py_RETURN_NONE;
    return Py_BuildValue(
        "{s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K}", "peers",
        (unsigned long long)st.peers, "subscribers", (unsigned long long)st.subscribers, "sent",
        (unsigned long long)st.sent, "received", (unsigned long long)st.received, "duplicates",
        (unsigned long long)st.duplicates, "dropped_malformed",
        (unsigned long long)st.dropped_malformed, "send_failed",
        (unsigned long long)st.send_failed, "gaps", (unsigned long long)st.gaps, "missed",
        (unsigned long long)st.missed, "origins", (unsigned long long)st.origins,
        "stale_removed", (unsigned long long)st.stale_removed, "restarts",
        (unsigned long long)st.restarts);
#else
    Py_RETURN_NONE;
#endif
}

/* ============================================================ the module */

/* Module functions. Later issues add enqueue and schedule here (each
 * queues work for the loop; none blocks). */
static PyMethodDef zfront_methods[] = {
    {"enqueue", (PyCFunction)(void (*)(void))zfront_enqueue, METH_VARARGS | METH_KEYWORDS,
     "enqueue(method, path, *, headers=None, body=b'', queue='default') -> None\n\n"
     "Queues an internal request (environ['zfront.channel'] == 'task') and returns\n"
     "at once. Called while a worker runs a request, the task is queued when that\n"
     "request's application call returned; from any other thread at once. Each\n"
     "queue runs tasks.concurrency tasks at a time, in order; tasks still queued at\n"
     "a stop are kept in server.state_dir for the next start. body: bytes or str\n"
     "(UTF-8). See docs/operations.md."},
    {"publish", (PyCFunction)(void (*)(void))zf__py_publish, METH_VARARGS | METH_KEYWORDS,
     "publish(topic, data, audience=None) -> bool\n\n"
     "Publishes data (made JSON with json.dumps) on topic to every subscriber:\n"
     "WebSocket clients and zfront.subscribe listeners. audience: None (everyone\n"
     "subscribed) or tokens (\"role:Editor\", \"user:bob\"): only clients holding\n"
     "one of them get it. Safe from any thread; never blocks (queued for the event\n"
     "loop). False when it could not be queued (the server is not running)."},
    {"subscribe", zf__py_subscribe, METH_VARARGS,
     "subscribe(pattern, callback) -> callback\n\n"
     "Calls callback(topic, data) on a worker thread for every event on pattern:\n"
     "an exact topic, or a prefix ending in '*' (\"content/*\", \"*\"). Listeners\n"
     "see every audience."},
    {"bus_stats", zfront_bus_stats, METH_NOARGS,
     "bus_stats() -> dict or None\n\n"
     "The bus counters (docs/protocols/bus.md): peers, subscribers, sent, received,\n"
     "duplicates, dropped_malformed, send_failed, gaps, missed, origins,\n"
     "stale_removed, restarts. None when this instance runs no bus."},
    {"on_shutdown", zfront_on_shutdown, METH_O,
     "on_shutdown(callable) -> callable\n\n"
     "Registers callable() to run once when zfront stops gracefully: after the\n"
     "workers finished their requests, before the interpreter is finalized\n"
     "(last registered runs first; the atexit handlers run after them, when\n"
     "Python finalizes). Usable as a decorator. Errors are logged and the\n"
     "other hooks still run."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef zfront_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "zfront",
    .m_doc = "zfront's built-in module: the server side of the embedded application.\n"
             "See docs/python-api.md.",
    .m_size = -1,
    .m_methods = zfront_methods,
};

static int dir_exists(const char *dir)
{
    char p[4096];
    struct stat st;
    snprintf(p, sizeof p, "%s/zfront", dir);
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

const char *zf__py_dir(void)
{
    const char *env = getenv("ZFRONT_PYTHONDIR");
    if (env && *env)
        return env;
    if (dir_exists(ZF_PYTHONDIR))
        return ZF_PYTHONDIR;
    return ZF_PYTHONDIR_INSTALLED;
}

/* Adds `obj` (a reference is stolen) to module m as name. Returns 0 / -1. */
static int add_obj(PyObject *m, const char *name, PyObject *obj)
{
    if (!obj)
        return -1;
    if (PyModule_AddObject(m, name, obj) < 0) {
        Py_DECREF(obj);
        return -1;
    }
    return 0;
}

PyObject *zf__pymod_init(void)
{
    if (PyType_Ready(&zf__FileWrapperType) < 0 || PyType_Ready(&InputType) < 0 ||
        PyType_Ready(&ErrorsType) < 0 || zf__wsgi_types_ready() < 0)
        return NULL;
    PyObject *m = PyModule_Create(&zfront_def);
    if (!m)
        return NULL;
    char pkg[4096];
    snprintf(pkg, sizeof pkg, "%s/zfront", zf__py_dir());
    Py_INCREF(&zf__FileWrapperType);
    Py_INCREF(&InputType);
    Py_INCREF(&ErrorsType);
    if (add_obj(m, "__version__", PyUnicode_FromString(ZF_VERSION)) < 0 ||
        add_obj(m, "__path__", Py_BuildValue("[s]", pkg)) < 0 ||
        add_obj(m, "file_wrapper", (PyObject *)&zf__FileWrapperType) < 0 ||
        add_obj(m, "Input", (PyObject *)&InputType) < 0 ||
        add_obj(m, "Errors", (PyObject *)&ErrorsType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
