/* The embedded CPython: start and stop, per-thread states, the TOML config
 * reader and the application loaders, and the pool job that runs one
 * exchange through the application.
 *
 * The interpreter is Debian's libpython3.11 in isolated mode (no PYTHON*
 * environment variables, no user site) and UTF-8 mode, with its paths
 * computed as if it were /usr/bin/python3, so Debian's dist-packages are
 * importable. The Python halves of the loaders live in python/zfront/
 * (loader.py, config.py); this file calls into them. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "pyint.h"
#include "python.h"
#include "task.h"

/* The interpreter computes its prefix from this, finding Debian's stdlib
 * and dist-packages. */
#define ZF_PY_PROGRAM L"/usr/bin/python3"


PyObject *zf__py_app;
static PyThreadState *main_ts;

struct zf_py_thread {
    PyThreadState *ts;
    unsigned long ident;
};

/* Logs a failed PyStatus from start-up. */
static int status_error(PyStatus st, const char *what)
{
    zf_log(ZF_LOG_ERROR, NULL, "cannot start Python (%s): %s%s%s", what, st.func ? st.func : "",
           st.func ? ": " : "", st.err_msg ? st.err_msg : "?");
    return ZF_ERROR;
}

/* Pool thread hooks: each worker owns one Python thread state for its
 * whole life, so threading.local survives between jobs. */
static void worker_start(struct zf_worker *w)
{
    w->py = zf_py_thread_new();
    w->ident = zf_py_thread_ident(w->py);
}

static void worker_stop(struct zf_worker *w)
{
    zf_py_thread_free(w->py);
    w->py = NULL;
}

static const struct zf_app_jobs py_jobs = {zf_py_run_exchange, zf_py_resume_exchange};

int zf_py_init(const char *argv0)
{
    /* the core runs requests through Python, on threads that have a state */
    zf_pool_set_thread_hooks(worker_start, worker_stop);
    zf_pool_set_stack_hook(zf_py_log_thread_stack);
    zf_exchange_set_app(&py_jobs);
    /* Python does not install its own handlers (install_signal_handlers=0):
     * a write to a closed socket must return EPIPE, not kill the process. */
    signal(SIGPIPE, SIG_IGN);
    if (PyImport_AppendInittab("zfront", zf__pymod_init) < 0) {
        zf_log(ZF_LOG_ERROR, NULL, "cannot register the zfront module");
        return ZF_ERROR;
    }
    PyPreConfig pre;
    PyPreConfig_InitIsolatedConfig(&pre);
    pre.utf8_mode = 1; /* file names, open() and stdio in UTF-8 whatever the locale */
    PyStatus st = Py_PreInitialize(&pre);
    if (PyStatus_Exception(st))
        return status_error(st, "pre-initialization");

    PyConfig c;
    PyConfig_InitIsolatedConfig(&c);
    c.install_signal_handlers = 0;
    c.parse_argv = 0;
    c.buffered_stdio = 0; /* print() from the app reaches a log pipe at once */
    st = PyConfig_SetString(&c, &c.program_name, ZF_PY_PROGRAM);
    if (!PyStatus_Exception(st)) {
        char *args[1] = {(char *)(argv0 ? argv0 : "zfront")};
        st = PyConfig_SetBytesArgv(&c, 1, args);
    }
    if (!PyStatus_Exception(st))
        st = Py_InitializeFromConfig(&c);
    PyConfig_Clear(&c);
    if (PyStatus_Exception(st))
        return status_error(st, "initialization");
    char probe[4096];
    snprintf(probe, sizeof probe, "%s/zfront/loader.py", zf__py_dir());
    if (access(probe, R_OK) != 0) {
        zf_log(ZF_LOG_ERROR, NULL,
               "zfront's Python files are not in %s/zfront (set "
               "ZFRONT_PYTHONDIR to the directory holding zfront/loader.py)",
               zf__py_dir());
        return ZF_ERROR;
    }
    /* Importing zfront readies its types, which the bridge uses directly. */
    PyObject *mod = PyImport_ImportModule("zfront");
    if (!mod) {
        zf__py_log_exception(ZF_LOG_ERROR, NULL, "cannot import the zfront module");
        return ZF_ERROR;
    }
    Py_DECREF(mod);
    zf_log(ZF_LOG_DEBUG, NULL, "Python %s started, zfront package from %s", Py_GetVersion(),
           zf__py_dir());
    return ZF_OK;
}

void zf__py_log_exception(int level, const struct zf_conn *conn, const char *what)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (!type)
        return;
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb && value)
        PyException_SetTraceback(value, tb);
    PyObject *text = NULL;
    PyObject *mod = PyImport_ImportModule("traceback");
    if (mod) {
        PyObject *lines = PyObject_CallMethod(mod, "format_exception", "OOO", type,
                                              value ? value : Py_None, tb ? tb : Py_None);
        if (lines) {
            PyObject *sep = PyUnicode_FromString("");
            if (sep) {
                text = PyUnicode_Join(sep, lines);
                Py_DECREF(sep);
            }
            Py_DECREF(lines);
        }
        Py_DECREF(mod);
    }
    const char *s = text ? PyUnicode_AsUTF8(text) : NULL;
    PyErr_Clear();
    char head[512];
    int hn = snprintf(head, sizeof head, "%s:\n", what);
    if (hn < 0 || (size_t)hn >= sizeof head)
        hn = 0;
    size_t n = s ? strlen(s) : 0;
    char *buf = malloc((size_t)hn + n + 64);
    if (buf) {
        memcpy(buf, head, (size_t)hn);
        if (s)
            memcpy(buf + hn, s, n);
        else
            n = (size_t)snprintf(buf + hn, 64, "(the traceback could not be formatted)\n");
        zf_log_text(level, conn, buf, (size_t)hn + n);
        free(buf);
    }
    Py_XDECREF(text);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
}

/* Logs the current exception as one line "prefix: message" when it is a
 * zfront.loader.LoadError (a user mistake the loader recognised: a
 * traceback would only hide the message), with its traceback otherwise. */
static void log_load_error(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    int plain = 0;
    PyObject *loader = PyImport_ImportModule("zfront.loader");
    PyObject *load_error = loader ? PyObject_GetAttrString(loader, "LoadError") : NULL;
    PyErr_Clear();
    if (load_error && PyErr_GivenExceptionMatches(type, load_error))
        plain = 1;
    Py_XDECREF(load_error);
    Py_XDECREF(loader);
    if (plain) {
        PyObject *msg = value ? PyObject_Str(value) : NULL;
        const char *s = msg ? PyUnicode_AsUTF8(msg) : NULL;
        zf_log(ZF_LOG_ERROR, NULL, "%s", s ? s : "cannot load the application");
        Py_XDECREF(msg);
        PyErr_Clear();
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
        return;
    }
    PyErr_Restore(type, value, tb);
    zf__py_log_exception(ZF_LOG_ERROR, NULL, "cannot load the application");
}

/* Calls zfront.<module>.<func>(*args) (args: a new reference, stolen).
 * Returns a new reference or NULL with the exception set. */
static PyObject *call_zfront(const char *module, const char *func, PyObject *args)
{
    if (!args)
        return NULL;
    PyObject *r = NULL;
    PyObject *mod = PyImport_ImportModule(module);
    if (mod) {
        PyObject *f = PyObject_GetAttrString(mod, func);
        if (f) {
            r = PyObject_CallObject(f, args);
            Py_DECREF(f);
        }
        Py_DECREF(mod);
    }
    Py_DECREF(args);
    return r;
}

/* Feeds a list of (key, text) pairs to zf_config_set. Returns ZF_OK or
 * ZF_ERROR (each bad one logged). GIL held. */
static int set_items(PyObject *items, const char *source)
{
    int rc = ZF_OK;
    Py_ssize_t n = PyList_Check(items) ? PyList_GET_SIZE(items) : 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *key, *value;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(items, i), "ss", &key, &value)) {
            PyErr_Clear();
            rc = ZF_ERROR;
            continue;
        }
        if (zf_config_set(key, value, source) != ZF_OK)
            rc = ZF_ERROR;
    }
    return rc;
}

int zf_py_read_config(const char *path)
{
    zf_config_begin_source();
    PyObject *items = call_zfront("zfront.config", "read", Py_BuildValue("(s)", path));
    if (!items) {
        if (PyErr_ExceptionMatches(PyExc_ValueError) || PyErr_ExceptionMatches(PyExc_OSError)) {
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            PyObject *msg = value ? PyObject_Str(value) : NULL;
            const char *s = msg ? PyUnicode_AsUTF8(msg) : NULL;
            zf_log(ZF_LOG_ERROR, NULL, "%s", s ? s : path);
            Py_XDECREF(msg);
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(tb);
            PyErr_Clear();
        } else {
            char what[600];
            snprintf(what, sizeof what, "cannot read the config file %s", path);
            zf__py_log_exception(ZF_LOG_ERROR, NULL, what);
        }
        return ZF_ERROR;
    }
    int rc = set_items(items, path);
    Py_DECREF(items);
    return rc;
}

int zf_py_read_paste_server(const char *path)
{
    zf_config_begin_source();
    PyObject *r = call_zfront("zfront.loader", "paste_server_options", Py_BuildValue("(s)", path));
    PyObject *pairs, *ignored;
    if (!r || !PyArg_ParseTuple(r, "OO", &pairs, &ignored)) {
        log_load_error();
        Py_XDECREF(r);
        return ZF_ERROR;
    }
    char source[4200];
    snprintf(source, sizeof source, "%s [server:main]", path);
    int rc = set_items(pairs, source);
    Py_ssize_t n = PyList_Check(pairs) ? PyList_GET_SIZE(pairs) : 0;
    if (rc == ZF_OK && n > 0)
        zf_log(ZF_LOG_INFO, NULL, "%s: %zd setting(s) taken (command-line flags override them)",
               source, n);
    for (Py_ssize_t i = 0; PyList_Check(ignored) && i < PyList_GET_SIZE(ignored); i++) {
        const char *name = PyUnicode_AsUTF8(PyList_GET_ITEM(ignored, i));
        if (name)
            zf_log(ZF_LOG_INFO, NULL, "%s: option \"%s\" has no meaning for zfront: ignored",
                   source, name);
        PyErr_Clear();
    }
    Py_DECREF(r);
    return rc;
}

/* Puts the configured python_path entries, then the working directory,
 * at the front of sys.path (zfront.loader.setup_sys_path). Returns 0 or -1
 * with an exception set. */
static int setup_sys_path(void)
{
    PyObject *entries = PyList_New(0);
    if (!entries)
        return -1;
    for (size_t i = 0; i < zf_cfg.python_path.n; i++) {
        PyObject *s = PyUnicode_DecodeFSDefault(zf_cfg.python_path.v[i]);
        int rc = s ? PyList_Append(entries, s) : -1;
        Py_XDECREF(s);
        if (rc < 0) {
            Py_DECREF(entries);
            return -1;
        }
    }
    PyObject *r = call_zfront("zfront.loader", "setup_sys_path", Py_BuildValue("(N)", entries));
    Py_XDECREF(r);
    return r ? 0 : -1;
}

int zf_py_load_app(void)
{
    if (zf__wsgi_setup() != ZF_OK)
        return ZF_ERROR;
    if (setup_sys_path() < 0) {
        zf__py_log_exception(ZF_LOG_ERROR, NULL, "cannot set sys.path");
        return ZF_ERROR;
    }
    PyObject *app;
    if (zf_cfg.demo) {
        /* main.c gives --demo a state dir when none is configured */
        const char *dir = zf_cfg.state_dir && *zf_cfg.state_dir ? zf_cfg.state_dir : ".";
        app = call_zfront("zfront.loader", "load_demo", Py_BuildValue("(s)", dir));
    } else if (zf_cfg.app && *zf_cfg.app) {
        app = call_zfront("zfront.loader", "load_module", Py_BuildValue("(s)", zf_cfg.app));
    } else if (zf_cfg.paste && *zf_cfg.paste) {
        const char *name = zf_cfg.paste_name && *zf_cfg.paste_name ? zf_cfg.paste_name : "main";
        app = call_zfront("zfront.loader", "load_paste", Py_BuildValue("(ss)", zf_cfg.paste, name));
    } else if (zf_cfg.zope_conf && *zf_cfg.zope_conf) {
        app = call_zfront("zfront.loader", "load_zope", Py_BuildValue("(s)", zf_cfg.zope_conf));
    } else {
        zf_log(ZF_LOG_ERROR, NULL,
               "no application: give --app MODULE:CALLABLE, --paste INI, "
               "--zope-conf FILE or --demo");
        return ZF_ERROR;
    }
    if (!app) {
        log_load_error();
        return ZF_ERROR;
    }
    if (!PyCallable_Check(app)) {
        zf_log(ZF_LOG_ERROR, NULL, "the application is not callable (it is a %s)",
               Py_TYPE(app)->tp_name);
        Py_DECREF(app);
        return ZF_ERROR;
    }
    Py_XDECREF(zf__py_app);
    zf__py_app = app;
    PyObject *r = PyObject_Repr(app);
    zf_log(ZF_LOG_INFO, NULL, "application loaded: %s", r ? PyUnicode_AsUTF8(r) : "?");
    Py_XDECREF(r);
    PyErr_Clear();
    return ZF_OK;
}

/* The way the app was loaded, for loader hooks: "demo", "module", "paste",
 * "zope" or "". */
static const char *app_kind(void)
{
    if (zf_cfg.demo)
        return "demo";
    if (zf_cfg.app && *zf_cfg.app)
        return "module";
    if (zf_cfg.paste && *zf_cfg.paste)
        return "paste";
    if (zf_cfg.zope_conf && *zf_cfg.zope_conf)
        return "zope";
    return "";
}

int zf_py_startup_call(const char *func, long arg)
{
    if (!main_ts)
        return -1;
    PyEval_RestoreThread(main_ts);
    PyObject *r = call_zfront("zfront.loader", func, Py_BuildValue("(sl)", app_kind(), arg));
    int rc = r ? PyObject_IsTrue(r) : -1;
    if (rc < 0) {
        char what[128];
        snprintf(what, sizeof what, "zfront.loader.%s failed", func);
        zf__py_log_exception(ZF_LOG_ERROR, NULL, what);
    }
    Py_XDECREF(r);
    main_ts = PyEval_SaveThread();
    return rc;
}

void zf_py_release_main(void)
{
    main_ts = PyEval_SaveThread();
}

void zf_py_finalize(void)
{
    if (!Py_IsInitialized())
        return;
    if (main_ts)
        PyEval_RestoreThread(main_ts);
    main_ts = NULL;
    zf__py_run_shutdown_hooks();
    Py_CLEAR(zf__py_app);
    if (Py_FinalizeEx() < 0)
        zf_log(ZF_LOG_WARN, NULL, "Python finalization reported an error");
}

/* Must run on the thread that will use the state: Python records the
 * creating thread's id in it (PyThreadState_SetAsyncExc finds it so). */
struct zf_py_thread *zf_py_thread_new(void)
{
    struct zf_py_thread *t = zf_xcalloc(1, sizeof *t);
    t->ts = PyThreadState_New(PyInterpreterState_Main());
    if (!t->ts) {
        fprintf(stderr, "zfront: cannot create a Python thread state\n");
        abort();
    }
    t->ident = PyThread_get_thread_ident();
    return t;
}

void zf_py_thread_free(struct zf_py_thread *t)
{
    if (!t)
        return;
    PyEval_RestoreThread(t->ts);
    PyThreadState_Clear(t->ts);
    PyThreadState_DeleteCurrent(); /* also releases the GIL */
    free(t);
}

void zf_py_enter(struct zf_py_thread *t)
{
    PyEval_RestoreThread(t->ts);
}

void zf_py_leave(struct zf_py_thread *t)
{
    PyThreadState *ts = PyEval_SaveThread();
    (void)ts;
}

unsigned long zf_py_thread_ident(struct zf_py_thread *t)
{
    return t->ident;
}

/* Returns the formatted stack of the thread `ident` as a new str, None
 * when it runs no Python code, or NULL with an exception set. GIL held. */
static PyObject *thread_stack(unsigned long ident)
{
    PyObject *frames = NULL, *key = NULL, *lines = NULL, *text = NULL;
    PyObject *sys = PyImport_ImportModule("sys");
    PyObject *tb = sys ? PyImport_ImportModule("traceback") : NULL;
    if (tb)
        frames = PyObject_CallMethod(sys, "_current_frames", NULL);
    if (frames)
        key = PyLong_FromUnsignedLong(ident);
    if (key) {
        PyObject *frame = PyDict_GetItemWithError(frames, key); /* borrowed */
        if (!frame && !PyErr_Occurred())
            text = Py_NewRef(Py_None);
        else if (frame)
            lines = PyObject_CallMethod(tb, "format_stack", "O", frame);
    }
    if (lines) {
        PyObject *sep = PyUnicode_FromString("");
        if (sep) {
            text = PyUnicode_Join(sep, lines);
            Py_DECREF(sep);
        }
    }
    Py_XDECREF(lines);
    Py_XDECREF(key);
    Py_XDECREF(frames);
    Py_XDECREF(tb);
    Py_XDECREF(sys);
    return text;
}

/* Logs "what:" and a multi-line text (a stack) as one log entry. */
static void log_titled(int level, const char *what, const char *text)
{
    size_t hn = strlen(what), n = strlen(text);
    char *buf = malloc(hn + n + 3);
    if (!buf) {
        zf_log(level, NULL, "%s (no memory to show it)", what);
        return;
    }
    memcpy(buf, what, hn);
    memcpy(buf + hn, ":\n", 2);
    memcpy(buf + hn + 2, text, n + 1);
    zf_log_text(level, NULL, buf, hn + 2 + n);
    free(buf);
}

void zf_py_log_thread_stack(unsigned long ident, int level, const char *what)
{
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *text = thread_stack(ident);
    const char *s = text && text != Py_None ? PyUnicode_AsUTF8(text) : NULL;
    if (s) {
        log_titled(level, what, s);
    } else if (text == Py_None) {
        zf_log(level, NULL, "%s: the thread is not running Python code", what);
    } else {
        PyErr_Clear();
        zf_log(level, NULL, "%s: the stack could not be taken", what);
    }
    PyErr_Clear();
    Py_XDECREF(text);
    PyGILState_Release(g);
}

void zf_py_log_all_stacks(int level, const char *what, const struct zf_worker_info *workers,
                          size_t n)
{
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *names = PyDict_New();
    for (size_t i = 0; names && i < n; i++) {
        PyObject *k = PyLong_FromUnsignedLong(workers[i].ident);
        PyObject *v = PyUnicode_FromFormat("worker %d", workers[i].index);
        if (!k || !v || PyDict_SetItem(names, k, v) < 0)
            Py_CLEAR(names);
        Py_XDECREF(k);
        Py_XDECREF(v);
    }
    PyObject *text =
        names ? call_zfront("zfront.diag", "all_stacks", Py_BuildValue("(O)", names)) : NULL;
    Py_XDECREF(names);
    const char *s = text ? PyUnicode_AsUTF8(text) : NULL;
    if (s) {
        log_titled(level, what, s);
    } else {
        zf__py_log_exception(ZF_LOG_ERROR, NULL, "cannot take the Python stacks");
    }
    PyErr_Clear();
    Py_XDECREF(text);
    PyGILState_Release(g);
}

/* Runs one exchange's job with the GIL held: a new request or a resumed
 * response. */
static void run_locked(struct zf_job *job, struct zf_worker *w)
{
    struct zf_exchange *ex = (struct zf_exchange *)job;
    zf_pool_set_doing(w, "%s %s (channel %s, #%llu%s)", ex->method, ex->target,
                      ex->channel ? ex->channel : "http", (unsigned long long)ex->conn_id,
                      job->run == zf_py_resume_exchange ? ", resumed response" : "");
    if (job->run == zf_py_resume_exchange) {
        zf_task_defer_begin();
        zf_wsgi_ops.resume(ex, w);
        zf_task_defer_end();
    } else if (zf_exchange_aborted(ex)) {
        /* the client left while the request waited for a worker */
        zf_log(ZF_LOG_DEBUG, NULL, "#%llu client gone before the application ran",
               (unsigned long long)ex->conn_id);
        zf_exchange_finish(ex, 0);
    } else {
        /* tasks the app queues now run after this call returned (task.h) */
        zf_task_defer_begin();
        zf_wsgi_ops.handle(ex, w);
        zf_task_defer_end();
    }
}

/* Pool job: enters Python once, then runs this job and every exchange job
 * already queued for this worker before giving the GIL back (a busy pool
 * then hands the GIL around once per batch, not once per request). A job
 * of another kind found in the queue is run after leaving Python. */
static void run_batch(struct zf_job *job, struct zf_worker *w)
{
    zf_py_enter(w->py);
    while (job && (job->run == zf_py_run_exchange || job->run == zf_py_resume_exchange)) {
        run_locked(job, w);
        job = zf_pool_next_nowait(w);
    }
    zf_py_leave(w->py);
    if (job)
        job->run(job, w);
}

void zf_py_run_exchange(struct zf_job *job, struct zf_worker *w)
{
    run_batch(job, w);
}

void zf_py_resume_exchange(struct zf_job *job, struct zf_worker *w)
{
    run_batch(job, w);
}
