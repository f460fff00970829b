/* The hub from Python: zfront.publish (any thread, never blocks: the event
 * is queued for the loop) and zfront.subscribe (a listener the loop
 * subscribes to the hub; its callback runs on a worker, never on the
 * loop). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "hub.h"
#include "pool.h"
#include "pyint.h"
#include "python.h"
#include "server.h"

/* A Python listener: a hub subscriber that sees every audience. */
struct listener {
    struct zf_hub_subscriber sub; /* first: the hub hands it back */
    PyObject *callback;           /* strong reference, kept until exit */
    char *pattern;
    struct listener *next;
};

/* One event for one listener, run on a worker. */
struct listener_job {
    struct zf_job job; /* first: the pool queues it */
    struct listener *l;
    char *topic;
    char *data;
    size_t len;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct listener *pending; /* made before the loop ran: attached at start */
static struct listener *attached;
static int loop_ready;

static PyObject *json_func(const char *name)
{
    PyObject *mod = PyImport_ImportModule("json");
    if (!mod)
        return NULL;
    PyObject *f = PyObject_GetAttrString(mod, name);
    Py_DECREF(mod);
    return f;
}

/* ------------------------------------------------------------ publish */

/* audience: None, one str, or an iterable of str -> NULL-terminated array
 * (malloc'd, strings borrowed from *keep). Returns 0, or -1 with an
 * exception set. */
static int audience_array(PyObject *aud, PyObject **keep, const char ***out)
{
    *out = NULL;
    *keep = NULL;
    if (!aud || aud == Py_None)
        return 0;
    if (PyUnicode_Check(aud))
        *keep = PyTuple_Pack(1, aud);
    else
        *keep = PySequence_Tuple(aud);
    if (!*keep)
        return -1;
    Py_ssize_t n = PyTuple_GET_SIZE(*keep);
    const char **v = calloc((size_t)n + 1, sizeof *v);
    if (!v) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PyTuple_GET_ITEM(*keep, i);
        if (!PyUnicode_Check(t) || !(v[i] = PyUnicode_AsUTF8(t)) || !*v[i]) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "audience tokens must be non-empty str");
            free(v);
            return -1;
        }
    }
    *out = v;
    return 0;
}

PyObject *zf__py_publish(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *names[] = {"topic", "data", "audience", NULL};
    const char *topic;
    PyObject *data, *aud = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "sO|O:publish", names, &topic, &data, &aud))
        return NULL;
    if (!*topic) {
        PyErr_SetString(PyExc_ValueError, "zfront.publish: empty topic");
        return NULL;
    }
    PyObject *dumps = json_func("dumps");
    PyObject *text = dumps ? PyObject_CallOneArg(dumps, data) : NULL;
    Py_XDECREF(dumps);
    if (!text)
        return NULL;
    Py_ssize_t len;
    const char *p = PyUnicode_AsUTF8AndSize(text, &len);
    PyObject *keep = NULL;
    const char **audience = NULL;
    int rc = ZF_ERROR;
    if (p && audience_array(aud, &keep, &audience) == 0) {
        if (zf_hub_cfg.max_event && (uint64_t)len > zf_hub_cfg.max_event)
            PyErr_Format(PyExc_ValueError,
                         "zfront.publish: event of %zd bytes is larger than "
                         "hub.max_event",
                         len);
        else
            rc = zf_hub_publish(topic, p, (size_t)len, audience);
    }
    free(audience);
    Py_XDECREF(keep);
    Py_DECREF(text);
    if (PyErr_Occurred())
        return NULL;
    /* ZF_ERROR here: out of memory or no loop (start-up, shutdown) */
    return PyBool_FromLong(rc == ZF_OK);
}

/* ------------------------------------------------------------ subscribe */

static void run_listener(struct zf_job *job, struct zf_worker *w)
{
    struct listener_job *j = (struct listener_job *)job;
    zf_py_enter(w->py);
    PyObject *loads = json_func("loads");
    PyObject *value =
        loads ? PyObject_CallFunction(loads, "s#", j->data, (Py_ssize_t)j->len) : NULL;
    PyObject *r = value ? PyObject_CallFunction(j->l->callback, "sO", j->topic, value) : NULL;
    if (!r) {
        char what[200];
        snprintf(what, sizeof what, "zfront.subscribe listener for \"%s\" failed on \"%.100s\"",
                 j->l->pattern, j->topic);
        zf__py_log_exception(ZF_LOG_ERROR, NULL, what);
    }
    Py_XDECREF(r);
    Py_XDECREF(value);
    Py_XDECREF(loads);
    zf_py_leave(w->py);
    free(j->topic);
    free(j->data);
    free(j);
}

/* Loop thread: hands the event to a worker (copied: events are loop-only). */
static void on_event(struct zf_hub_subscriber *s, struct zf_hub_event *ev)
{
    struct listener_job *j = calloc(1, sizeof *j);
    if (j && (j->topic = strdup(ev->topic)) && (j->data = malloc(ev->len + 1))) {
        memcpy(j->data, ev->data, ev->len + 1);
        j->len = ev->len;
        j->l = (struct listener *)s;
        j->job.run = run_listener;
        zf_pool_push(&j->job);
        return;
    }
    zf_log(ZF_LOG_ERROR, NULL, "out of memory: event on \"%s\" not given to a listener", ev->topic);
    if (j)
        free(j->topic);
    free(j);
}

static void attach(void *arg)
{
    struct listener *l = arg;
    if (zf_hub_subscribe(&l->sub, l->pattern, NULL) != ZF_OK)
        zf_log(ZF_LOG_ERROR, NULL, "cannot subscribe a listener to \"%s\"", l->pattern);
    pthread_mutex_lock(&lock);
    l->next = attached;
    attached = l;
    pthread_mutex_unlock(&lock);
}

void zf__py_hub_attach(void)
{
    pthread_mutex_lock(&lock);
    struct listener *l = pending;
    pending = NULL;
    loop_ready = 1;
    pthread_mutex_unlock(&lock);
    while (l) {
        struct listener *next = l->next;
        attach(l);
        l = next;
    }
}

PyObject *zf__py_subscribe(PyObject *self, PyObject *args)
{
    const char *pattern;
    PyObject *cb;
    if (!PyArg_ParseTuple(args, "sO:subscribe", &pattern, &cb))
        return NULL;
    if (!*pattern || !PyCallable_Check(cb)) {
        PyErr_SetString(PyExc_TypeError,
                        "zfront.subscribe(pattern, callback): a non-empty pattern and a callable");
        return NULL;
    }
    struct listener *l = calloc(1, sizeof *l);
    if (!l || !(l->pattern = strdup(pattern))) {
        free(l);
        return PyErr_NoMemory();
    }
    zf_hub_subscriber_init(&l->sub, on_event, NULL);
    l->sub.all_audiences = 1;
    Py_INCREF(cb);
    l->callback = cb;
    pthread_mutex_lock(&lock);
    int ready = loop_ready;
    if (!ready) {
        l->next = pending;
        pending = l;
    }
    pthread_mutex_unlock(&lock);
    if (ready && zf_loop_call(attach, l) != ZF_OK) {
        Py_DECREF(cb);
        free(l->pattern);
        free(l);
        PyErr_SetString(PyExc_RuntimeError, "zfront.subscribe: the server is stopping");
        return NULL;
    }
    Py_INCREF(cb);
    return cb;
}
