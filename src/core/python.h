/* The embedded CPython (Debian's libpython3.11) and the application bridge.
 *
 * Threads: zf_py_init, zf_py_read_config, zf_py_load_app run on the main
 * thread before the loop starts, which then gives up the GIL for good
 * (zf_py_release_main). The loop thread never takes the GIL. Worker threads
 * (and later SSH console threads) each own one zf_py_thread and enter
 * Python only through zf_py_enter/zf_py_leave. */
#ifndef ZF_PYTHON_H
#define ZF_PYTHON_H

#include "exchange.h"
#include "pool.h"
#include "zfront.h"

/* Registers the built-in `zfront` module and starts the interpreter.
 * Returns ZF_OK or ZF_ERROR (logged). */
int zf_py_init(const char *argv0);
/* Reads a TOML config file with tomllib and feeds every key to
 * zf_config_set. Returns ZF_OK or ZF_ERROR (logged). */
int zf_py_read_config(const char *path);
/* Applies the [server:main] options of a PasteDeploy ini that zfront
 * honours (waitress's, as Plone writes them: zfront.loader.
 * paste_server_options) to the config, logging the ones it ignores.
 * Returns ZF_OK or ZF_ERROR (logged). */
int zf_py_read_paste_server(const char *path);
/* Loads the application named by the config (app, paste, zope_conf or
 * demo). Returns ZF_OK or ZF_ERROR (logged with the traceback). */
int zf_py_load_app(void);
/* Main thread gives up the GIL after start-up. */
void zf_py_release_main(void);
/* Main thread, from a module's start() (after the app is loaded, before
 * the loop runs: no request is being served, so taking the GIL here stalls
 * nothing): calls zfront.loader.<func>(app_kind, arg), where app_kind says
 * how the app was loaded ("module", "paste", "zope", "demo"). Returns the
 * truth value of its result (1/0), or -1 when it raised (logged). */
int zf_py_startup_call(const char *func, long arg);
/* Main thread takes the GIL back, runs the Python shutdown hooks
 * (zfront.on_shutdown; Py_FinalizeEx then runs the atexit ones) and
 * finalizes. Call it only after the
 * workers stopped: hooks may close what requests use (Zope's database). */
void zf_py_finalize(void);

struct zf_py_thread;
/* A thread state for a non-Python thread (workers, consoles). Called
 * without the GIL. */
struct zf_py_thread *zf_py_thread_new(void);
void zf_py_thread_free(struct zf_py_thread *t);
/* Takes/gives back the GIL with the thread's own state, so threading.local
 * survives between jobs. */
void zf_py_enter(struct zf_py_thread *t);
void zf_py_leave(struct zf_py_thread *t);
/* Python's threading.get_ident() value of the calling thread. */
unsigned long zf_py_thread_ident(struct zf_py_thread *t);
/* Logs `what`, then the Python stack of the thread whose threading ident
 * is `ident` (sys._current_frames, formatted by traceback), or says that
 * the thread runs no Python code. Takes the GIL for the time it needs
 * (PyGILState), so it must run on a thread that holds neither the GIL nor
 * any lock a GIL holder may wait for: never on the loop thread. */
void zf_py_log_thread_stack(unsigned long ident, int level, const char *what);

/* Logs `what`, then the Python stack of every thread that runs Python code
 * (zfront.diag.all_stacks), the workers named by their index. Same thread
 * rules as zf_py_log_thread_stack: never on the loop thread. */
void zf_py_log_all_stacks(int level, const char *what, const struct zf_worker_info *workers,
                          size_t n);

/* The application bridge: WSGI today; a future ASGI bridge is another
 * implementation of this struct, not a branch in every function. */
struct zf_app_ops {
    const char *name;
    /* Worker thread, GIL held: run the exchange's request through the app
     * and produce its response with zf_exchange_send_*, ending with
     * zf_exchange_finish. */
    void (*handle)(struct zf_exchange *ex, struct zf_worker *w);
    /* Worker thread, GIL held: carry on with a response the bridge
     * suspended (zf_exchange_suspend) on this same worker. */
    void (*resume)(struct zf_exchange *ex, struct zf_worker *w);
};
extern const struct zf_app_ops zf_wsgi_ops;

/* Pool job that runs an exchange through the loaded app (enters and leaves
 * Python around it). */
void zf_py_run_exchange(struct zf_job *job, struct zf_worker *w);
/* Pool job that resumes a suspended exchange (zf_app_ops.resume). */
void zf_py_resume_exchange(struct zf_job *job, struct zf_worker *w);

/* Loop thread, once the loop exists: subscribes the zfront.subscribe
 * listeners registered before (while the app was loading). pyhub.c. */
void zf__py_hub_attach(void);

/* The directory holding the Python package and its static files
 * (<dir>/zfront/...); see pyint.h. Any thread, no GIL needed. */
const char *zf__py_dir(void);

#endif
