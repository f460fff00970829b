/* Console sessions, Python side: the Session object that zfront.console
 * reads from and writes to, the call into zfront.console.run(), and the
 * interrupter thread.
 *
 * Session.read() and Session.write() wait with the GIL released, so a
 * console waiting for a keystroke or for a slow client never holds up the
 * app's workers. Ctrl-C becomes a KeyboardInterrupt in the console's own
 * thread through PyThreadState_SetAsyncExc, which needs the GIL: the loop
 * thread never takes it, so it hands the request to one small interrupter
 * thread (shared by all consoles) that does. */
#include "../../core/pyint.h" /* Python.h, zf__py_app, zf__py_log_exception */
#include <errno.h>
#include <signal.h>
#include <time.h>

#include "../../core/python.h"
#include "console.h"

/* ---- the Session object ---- */

typedef struct {
    PyObject_HEAD struct zf_ssh_console *cs;
} SessionObject;

static void session_dealloc(PyObject *self)
{
    SessionObject *s = (SessionObject *)self;
    PyTypeObject *tp = Py_TYPE(self);
    if (s->cs)
        zf__ssh_console_unref(s->cs);
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* read(max=4096) -> bytes: waits for input. b'' means the client sent EOF
 * or went away; None means an interrupt woke the wait (the caller loops,
 * and the pending KeyboardInterrupt is raised in its Python code). */
static PyObject *session_read(PyObject *self, PyObject *args)
{
    struct zf_ssh_console *cs = ((SessionObject *)self)->cs;
    Py_ssize_t max = 4096;
    if (!PyArg_ParseTuple(args, "|n:read", &max))
        return NULL;
    if (max <= 0 || max > 65536)
        max = 65536;
    char *buf = PyMem_RawMalloc((size_t)max);
    if (!buf)
        return PyErr_NoMemory();
    size_t n = 0;
    int eof = 0;
    Py_BEGIN_ALLOW_THREADS pthread_mutex_lock(&cs->mu);
    unsigned gen = cs->intr_gen;
    while (cs->in_len == cs->in_off && !cs->in_eof && !cs->closed && cs->intr_gen == gen)
        pthread_cond_wait(&cs->cond, &cs->mu);
    n = zf__ssh_console_take_locked(cs, buf, (size_t)max, &eof);
    pthread_mutex_unlock(&cs->mu);
    Py_END_ALLOW_THREADS PyObject *res;
    if (n > 0)
        res = PyBytes_FromStringAndSize(buf, (Py_ssize_t)n);
    else if (eof)
        res = PyBytes_FromStringAndSize("", 0);
    else
        res = Py_NewRef(Py_None);
    PyMem_RawFree(buf);
    return res;
}

/* Appends bytes to the output queue (mu held). Returns ZF_OK or ZF_ERROR
 * (out of memory). */
static int out_append(struct zf_ssh_console *cs, const char *p, size_t n, int is_stderr)
{
    struct zf_ssh_chunk *t = cs->out_tail;
    if (t && t->is_stderr == is_stderr && t->cap - t->len >= n) {
        memcpy(t->data + t->len, p, n);
        t->len += n;
    } else {
        size_t cap = n > 16384 ? n : 16384;
        struct zf_ssh_chunk *c = malloc(sizeof *c + cap);
        if (!c)
            return ZF_ERROR;
        c->next = NULL;
        c->is_stderr = is_stderr;
        c->len = n;
        c->off = 0;
        c->cap = cap;
        memcpy(c->data, p, n);
        if (t)
            t->next = c;
        else
            cs->out_head = c;
        cs->out_tail = c;
    }
    cs->out_bytes += n;
    return ZF_OK;
}

/* write(data, stderr=False): queues bytes for the client. Waits (GIL
 * released) while too much is queued for a slow client. Raises
 * BrokenPipeError once the session is closed. */
static PyObject *session_write(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"data", "stderr", NULL};
    struct zf_ssh_console *cs = ((SessionObject *)self)->cs;
    Py_buffer data;
    int is_stderr = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "y*|p:write", kwlist, &data, &is_stderr))
        return NULL;
    if (cs->pty)
        is_stderr = 0; /* a terminal has one stream */
    int closed = 0, oom = 0;
    Py_BEGIN_ALLOW_THREADS pthread_mutex_lock(&cs->mu);
    unsigned gen = cs->intr_gen;
    while (!cs->closed && cs->out_bytes >= ZF_SSH_OUT_MAX && cs->intr_gen == gen)
        pthread_cond_wait(&cs->cond, &cs->mu);
    closed = cs->closed;
    if (!closed && data.len > 0) {
        oom = out_append(cs, data.buf, (size_t)data.len, is_stderr) != ZF_OK;
        zf__ssh_console_post_flush_locked(cs);
    }
    pthread_mutex_unlock(&cs->mu);
    Py_END_ALLOW_THREADS PyBuffer_Release(&data);
    if (closed) {
        PyErr_SetString(PyExc_BrokenPipeError, "the SSH session is closed");
        return NULL;
    }
    if (oom)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* set_busy(flag): the console marks when user code runs, so Ctrl-C
 * becomes an interrupt instead of a keystroke. Called with the GIL held,
 * which is what makes the interrupter's check-and-raise atomic. */
static PyObject *session_set_busy(PyObject *self, PyObject *arg)
{
    struct zf_ssh_console *cs = ((SessionObject *)self)->cs;
    int flag = PyObject_IsTrue(arg);
    if (flag < 0)
        return NULL;
    pthread_mutex_lock(&cs->mu);
    int typed_ahead = zf__ssh_console_set_busy_locked(cs, flag);
    pthread_mutex_unlock(&cs->mu);
    if (typed_ahead) {
        PyErr_SetNone(PyExc_KeyboardInterrupt);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *session_size(PyObject *self, PyObject *unused)
{
    struct zf_ssh_console *cs = ((SessionObject *)self)->cs;
    pthread_mutex_lock(&cs->mu);
    int cols = cs->cols, rows = cs->rows;
    pthread_mutex_unlock(&cs->mu);
    return Py_BuildValue("(ii)", cols, rows);
}

static PyObject *session_closed(PyObject *self, PyObject *unused)
{
    struct zf_ssh_console *cs = ((SessionObject *)self)->cs;
    pthread_mutex_lock(&cs->mu);
    int closed = cs->closed;
    pthread_mutex_unlock(&cs->mu);
    return PyBool_FromLong(closed);
}

static PyMethodDef session_methods[] = {
    {"read", session_read, METH_VARARGS, "read(max=4096) -> bytes, b'' at EOF, None if woken"},
    {"write", (PyCFunction)(void (*)(void))session_write, METH_VARARGS | METH_KEYWORDS,
     "write(data, stderr=False)"},
    {"set_busy", session_set_busy, METH_O, "set_busy(flag): user code is running"},
    {"size", session_size, METH_NOARGS, "size() -> (columns, rows)"},
    {"closed", session_closed, METH_NOARGS, "closed() -> True once the client went away"},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot session_slots[] = {
    {Py_tp_dealloc, session_dealloc},
    {Py_tp_methods, session_methods},
    {Py_tp_doc, "An SSH console session (zfront's ssh module)."},
    {0, NULL},
};

static PyType_Spec session_spec = {
    .name = "zfront._ssh.Session",
    .basicsize = sizeof(SessionObject),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = session_slots,
};

static PyObject *session_type; /* created once, GIL held */

/* ---- running zfront.console ---- */

static void log_exception(struct zf_ssh_console *cs, const char *what)
{
    char head[160];
    snprintf(head, sizeof head, "ssh: %s (connection %llu)", what, (unsigned long long)cs->conn_id);
    zf__py_log_exception(ZF_LOG_ERROR, NULL, head);
}

int zf__ssh_console_run_python(struct zf_ssh_console *cs)
{
    pthread_mutex_lock(&cs->mu);
    cs->ident = PyThread_get_thread_ident();
    pthread_mutex_unlock(&cs->mu);

    if (!session_type) {
        PyObject *t = PyType_FromSpec(&session_spec);
        if (!t) {
            log_exception(cs, "cannot create the console session type");
            return 1;
        }
        if (session_type)
            Py_DECREF(t); /* another console made it meanwhile */
        else
            session_type = t;
    }
    PyTypeObject *tp = (PyTypeObject *)session_type;
    SessionObject *obj = (SessionObject *)tp->tp_alloc(tp, 0);
    if (!obj) {
        log_exception(cs, "cannot create a console session");
        return 1;
    }
    zf__ssh_console_ref(cs);
    obj->cs = cs;

    const char *mode = cs->mode == ZF_SSH_EXEC        ? "exec"
                       : cs->mode == ZF_SSH_SHELL_PTY ? "pty"
                                                      : "script";
    const char *hook =
        zf_ssh_cfg.namespace_hook && *zf_ssh_cfg.namespace_hook ? zf_ssh_cfg.namespace_hook : NULL;
    int status = 1;
    PyObject *mod = PyImport_ImportModule("zfront.console");
    PyObject *fn = mod ? PyObject_GetAttrString(mod, "run") : NULL;
    PyObject *args = fn ? PyTuple_Pack(1, (PyObject *)obj) : NULL;
    PyObject *app = zf__py_app ? zf__py_app : Py_None;
    PyObject *kw =
        args ? Py_BuildValue("{s:s,s:z,s:s,s:s,s:s,s:z,s:K,s:O,s:O}", "mode", mode, "command",
                             cs->command, "user", cs->user, "term", cs->term, "peer", cs->peer,
                             "namespace", hook, "conn_id", (unsigned long long)cs->conn_id, "app",
                             app, "pty", cs->pty ? Py_True : Py_False)
             : NULL;
    PyObject *res = kw ? PyObject_Call(fn, args, kw) : NULL;
    if (res) {
        long v = PyLong_Check(res) ? PyLong_AsLong(res) : 1;
        status = v >= 0 && v <= 255 ? (int)v : 1;
        if (PyErr_Occurred())
            PyErr_Clear();
    } else {
        log_exception(cs, "the console failed");
        static const char msg[] = "zfront: the console failed (see the server's error log)\r\n";
        pthread_mutex_lock(&cs->mu);
        if (!cs->closed && out_append(cs, msg, sizeof msg - 1, 1) == ZF_OK)
            zf__ssh_console_post_flush_locked(cs);
        pthread_mutex_unlock(&cs->mu);
    }
    Py_XDECREF(res);
    Py_XDECREF(kw);
    Py_XDECREF(args);
    Py_XDECREF(fn);
    Py_XDECREF(mod);
    Py_DECREF(obj);
    return status;
}

/* ---- the interrupter thread ---- */

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct zf_ssh_console *head; /* pending requests, one reference each */
    int stop;
    atomic_int running;
} intr = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, 0, 0};

void zf__ssh_interrupter_post(struct zf_ssh_console *cs)
{
    pthread_mutex_lock(&intr.mu);
    if (!cs->intr_queued) {
        cs->intr_queued = 1;
        zf__ssh_console_ref(cs);
        cs->intr_next = intr.head;
        intr.head = cs;
    }
    pthread_cond_signal(&intr.cond);
    pthread_mutex_unlock(&intr.mu);
}

void zf__ssh_interrupter_wake(void)
{
    pthread_mutex_lock(&intr.mu);
    pthread_cond_signal(&intr.cond);
    pthread_mutex_unlock(&intr.mu);
}

/* Loop thread: the interrupter thread is done (it posts nothing after). */
static void interrupter_gone_cb(void *arg)
{
    atomic_store(&intr.running, 0);
    zf_server_check_idle();
}

/* A small growable array of console references. */
struct cs_vec {
    struct zf_ssh_console **v;
    size_t n, cap;
};

static void vec_push(struct cs_vec *a, struct zf_ssh_console *cs)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 16;
        struct zf_ssh_console **v = realloc(a->v, cap * sizeof *v);
        if (!v) {
            zf__ssh_console_unref(cs); /* given up: the next request retries */
            return;
        }
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = cs;
}

/* Raises KeyboardInterrupt in each console of `work` that still runs
 * code, and empties `work`. Consoles whose client is gone but whose code
 * still runs (it caught the exception) go to `again` to be tried later;
 * the others are released. */
static void interrupt_all(struct zf_py_thread **py, struct cs_vec *work, struct cs_vec *again)
{
    if (!*py)
        *py = zf_py_thread_new();
    if (*py)
        zf_py_enter(*py);
    for (size_t i = 0; i < work->n; i++) {
        struct zf_ssh_console *cs = work->v[i];
        pthread_mutex_lock(&cs->mu);
        int run = cs->busy && !cs->finished;
        int keep = cs->closed && !cs->finished;
        unsigned long ident = cs->ident;
        pthread_mutex_unlock(&cs->mu);
        /* busy changes only while the console thread holds the GIL, and we
         * hold it: the exception cannot land after the code finished. */
        if (run && *py)
            PyThreadState_SetAsyncExc(ident, PyExc_KeyboardInterrupt);
        work->v[i] = NULL;
        if (keep)
            vec_push(again, cs);
        else
            zf__ssh_console_unref(cs);
    }
    work->n = 0;
    if (*py)
        zf_py_leave(*py);
}

static void *interrupter_main(void *arg)
{
    struct zf_py_thread *py = NULL;
    struct cs_vec work = {0}, retry = {0};
    pthread_setname_np(pthread_self(), "zf-ssh-intr");
    pthread_mutex_lock(&intr.mu);
    for (;;) {
        if (!intr.head) {
            if (intr.stop && retry.n == 0 && zf__ssh_console_in_python() == 0)
                break;
            if (retry.n) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_nsec += (zf__ssh_console_hard_stopped() ? 100 : 500) * 1000 * 1000L;
                if (ts.tv_nsec >= 1000000000L) {
                    ts.tv_sec++;
                    ts.tv_nsec -= 1000000000L;
                }
                pthread_cond_timedwait(&intr.cond, &intr.mu, &ts);
            } else {
                pthread_cond_wait(&intr.cond, &intr.mu);
            }
        }
        while (intr.head) {
            struct zf_ssh_console *cs = intr.head;
            intr.head = cs->intr_next;
            cs->intr_queued = 0;
            vec_push(&work, cs);
        }
        pthread_mutex_unlock(&intr.mu);
        for (size_t i = 0; i < retry.n; i++)
            vec_push(&work, retry.v[i]);
        retry.n = 0;
        if (work.n)
            interrupt_all(&py, &work, &retry);
        pthread_mutex_lock(&intr.mu);
    }
    pthread_mutex_unlock(&intr.mu);
    free(work.v);
    free(retry.v);
    if (py)
        zf_py_thread_free(py);
    if (zf__ssh_loop_call(interrupter_gone_cb, NULL) != ZF_OK)
        atomic_store(&intr.running, 0);
    return NULL;
}

int zf__ssh_interrupter_start(void)
{
    pthread_attr_t attr;
    pthread_t tid;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    intr.stop = 0;
    atomic_store(&intr.running, 1);
    int rc = pthread_create(&tid, &attr, interrupter_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        atomic_store(&intr.running, 0);
        zf_log(ZF_LOG_ERROR, NULL, "ssh: cannot start the interrupter thread: %s", strerror(rc));
        return ZF_ERROR;
    }
    return ZF_OK;
}

void zf__ssh_interrupter_stop(void)
{
    pthread_mutex_lock(&intr.mu);
    intr.stop = 1;
    pthread_cond_signal(&intr.cond);
    pthread_mutex_unlock(&intr.mu);
}

int zf__ssh_interrupter_running(void)
{
    return atomic_load(&intr.running);
}
