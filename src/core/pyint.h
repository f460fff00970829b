/* Internal interface between the three files of the embedded-Python side:
 * python.c (interpreter, loading), pymod.c (the built-in `zfront` module and
 * its C types) and wsgi.c (the WSGI bridge). Include only from those files:
 * it pulls in Python.h. Every function here runs with the GIL held. */
#ifndef ZF_PYINT_H
#define ZF_PYINT_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "exchange.h"
#include "log.h"
#include "spool.h"

/* The loaded application callable (a new reference owned by python.c), or
 * NULL before zf_py_load_app succeeded. */
extern PyObject *zf__py_app;

/* Init function of the built-in `zfront` module (PyImport_AppendInittab). */
PyObject *zf__pymod_init(void);

/* Main thread, at a graceful stop (workers joined, interpreter not yet
 * finalized): runs the zfront.on_shutdown hooks, last registered first. A
 * failing hook is logged with its traceback; the others still run. The
 * atexit handlers are left to Py_FinalizeEx, which runs them right after
 * (once the app's non-daemon threads ended, as in any Python program). */
void zf__py_run_shutdown_hooks(void);

/* zfront.publish / zfront.subscribe (pyhub.c). */
PyObject *zf__py_publish(PyObject *self, PyObject *args, PyObject *kw);
PyObject *zf__py_subscribe(PyObject *self, PyObject *args);

/* The directory holding the Python package sources (<dir>/zfront/...):
 * ZFRONT_PYTHONDIR, else the source tree's python/, else the installed
 * copy. Static string. */
const char *zf__py_dir(void);

/* Logs the current Python exception (with its traceback) at `level` and
 * clears it. `what` is a one-line context ("application error"). conn may
 * be NULL. */
void zf__py_log_exception(int level, const struct zf_conn *conn, const char *what);

/* zfront.file_wrapper: the type is exact-checked by the bridge for the file
 * fast path. */
extern PyTypeObject zf__FileWrapperType;
struct zf__file_wrapper {
    PyObject ob_base;   /* PyObject_HEAD */
    PyObject *filelike; /* strong reference */
    Py_ssize_t block_size;
};

/* wsgi.input over a complete request body. The object does not own the
 * body: the bridge must call zf__input_detach before the exchange is
 * finished (reads then raise ValueError). Returns a new reference or NULL
 * with an exception set. */
PyObject *zf__input_new(const struct zf_body *body);
void zf__input_detach(PyObject *input);

/* wsgi.errors: writes complete lines to the error log, each prefixed like
 * every line about `conn` (copied: the object may outlive the request).
 * Returns a new reference or NULL with an exception set. */
PyObject *zf__errors_new(const struct zf_conn *conn);
/* The level of the lines an errors stream logs (a request filter may lower
 * it for a request: ex->errors_level). */
void zf__errors_set_level(PyObject *errors, int level);

/* Bridge types that live in wsgi.c; pymod.c readies them at import.
 * Returns 0 or -1 with an exception set. */
int zf__wsgi_types_ready(void);
/* Prepares the bridge from the configuration (trusted proxy addresses).
 * Main thread, before the workers start. Returns ZF_OK or ZF_ERROR
 * (logged). */
int zf__wsgi_setup(void);

/* Builds the environ for ex (environ.c). input/errors are the request's
 * wsgi.input and wsgi.errors objects (borrowed). Returns a new reference,
 * or NULL with an exception set. */
PyObject *zf__wsgi_environ(struct zf_exchange *ex, const struct zf_conn *c, PyObject *input,
                           PyObject *errors);

#endif
