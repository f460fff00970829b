/* Worker pool: N threads taking jobs from one FIFO queue (and each from its
 * own queue). The pool knows no language: the application side gives each
 * thread its state through the thread hooks (python.c: a Python thread
 * state per worker). Workers never touch sockets; they hand results back to
 * the loop (see exchange.h). */
#ifndef ZF_POOL_H
#define ZF_POOL_H

#include "zfront.h"

struct zf_worker;
struct zf_job;

/* Runs on a worker thread; an application job enters its runtime itself
 * (python.c: zf_py_enter/zf_py_leave with the worker's thread state). The
 * job is owned by whoever queued it; run must not assume it lives on after
 * it hands it back. */
typedef void (*zf_job_fn)(struct zf_job *job, struct zf_worker *w);

struct zf_job {
    struct zf_job *next;
    zf_job_fn run;
};

struct zf_worker {
    int index;
    struct zf_py_thread *py; /* the app side's state of this thread (set by the start hook) */
    unsigned long ident;     /* Python's threading ident of the thread */
    int own_last;            /* the last job came from the worker's own queue */
};

/* Hooks run on each worker thread when it starts (before its first job)
 * and when it ends (after its last). Set before zf_pool_start; NULL: none. */
void zf_pool_set_thread_hooks(void (*start)(struct zf_worker *w), void (*stop)(struct zf_worker *w));
/* Starts n workers. Returns ZF_OK or ZF_ERROR. */
int zf_pool_start(int n);
/* Queues a job (any thread). */
void zf_pool_push(struct zf_job *job);
/* Queues a job for one worker only (a suspended response resumes on the
 * thread that started it: thread-local state of the app stays valid).
 * Any thread. */
void zf_pool_push_to(struct zf_job *job, int worker_index);
/* Worker thread: the next queued job for w, or NULL at once when there is
 * none. A job that runs Python takes it while it still holds the GIL, so a
 * busy pool does not pass the GIL (and the CPU) around between every two
 * requests. The job taken counts as the one w is running. */
struct zf_job *zf_pool_next_nowait(struct zf_worker *w);
/* Number of jobs queued and running. */
size_t zf_pool_busy(void);
/* Stops taking jobs once the queue is empty and joins every worker. Must be
 * called from the thread that started the pool, without the GIL. */
void zf_pool_stop(void);

#endif
