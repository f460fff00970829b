/* Worker pool: N threads taking jobs from one FIFO queue (and each from its
 * own queue). The pool knows no language: the application side gives each
 * thread its state through the thread hooks (python.c: a Python thread
 * state per worker). Workers never touch sockets; they hand results back to
 * the loop (see exchange.h).
 *
 * Admission: the shared queue holds at most server.max_queued jobs
 * (zf_pool_admit refuses the rest); a job that gives a cancel function may
 * be dropped unrun when it waited longer than server.queue_timeout (checked
 * when a worker takes it and by zf_pool_expire, which the loop calls on a
 * timer) or when the server stops (zf_pool_cancel_queued). A watchdog
 * thread logs, once per job, a worker busy on one job for longer than
 * server.stuck_after, with that thread's Python stack (through the
 * application side's stack hook). */
#ifndef ZF_POOL_H
#define ZF_POOL_H

#include "config.h"
#include "zfront.h"

struct zf_worker;
struct zf_job;

/* Runs on a worker thread; an application job enters its runtime itself
 * (python.c: zf_py_enter/zf_py_leave with the worker's thread state). The
 * job is owned by whoever queued it; run must not assume it lives on after
 * it hands it back. */
typedef void (*zf_job_fn)(struct zf_job *job, struct zf_worker *w);

/* Why a queued job is dropped without running. */
enum zf_job_cancel {
    ZF_JOB_EXPIRED,  /* waited longer than server.queue_timeout */
    ZF_JOB_SHUTDOWN, /* the server stops and will not run it */
};
/* Called once, on any thread but never under the pool's lock, for a job
 * taken out of the queue unrun; waited_ms is its time in the queue. The
 * job's owner then has it back. */
typedef void (*zf_job_cancel_fn)(struct zf_job *job, enum zf_job_cancel why, uint64_t waited_ms);

struct zf_job {
    struct zf_job *next;
    zf_job_fn run;
    zf_job_cancel_fn cancel; /* NULL: the job always runs */
    uint64_t queued_ms;      /* set by the pool when queued (zf_now_ms) */
};

/* server.* keys of the pool (zf_pool_keys, registered by main.c). */
struct zf_pool_config {
    long max_queued;           /* shared queue bound; 0: none */
    uint64_t queue_timeout_ms; /* 0: none */
    uint64_t stuck_after_ms;   /* 0: no watchdog */
};
extern struct zf_pool_config zf_pool_cfg;
extern const struct zf_cfg_key zf_pool_keys[];

/* Counters since start (zf_pool_get_stats). */
struct zf_pool_stats {
    size_t queued;        /* jobs waiting now (both queues) */
    size_t running;       /* jobs running now */
    size_t stuck;         /* workers now busy past stuck_after on one job */
    uint64_t refused;     /* zf_pool_admit: queue full */
    uint64_t expired;     /* dropped after queue_timeout */
    uint64_t cancelled;   /* dropped at shutdown */
    uint64_t stuck_total; /* stuck workers reported */
};

struct zf_worker {
    int index;
    struct zf_py_thread *py; /* the app side's state of this thread (set by the start hook) */
    unsigned long ident;     /* Python's threading ident of the thread */
    int own_last;            /* the last job came from the worker's own queue */
    uint64_t busy_since_ms;  /* under the pool lock: the running job began; 0 when idle */
    int stuck_reported;      /* under the pool lock: the watchdog logged this job */
    char doing[200];         /* under the pool lock: the running job, for SIGUSR1 */
};

/* What one worker does, as copied by zf_pool_workers. */
struct zf_worker_info {
    int index;
    unsigned long ident; /* Python's threading ident */
    uint64_t busy_ms;    /* 0: idle */
    char doing[200];
};

/* Hooks run on each worker thread when it starts (before its first job)
 * and when it ends (after its last). Set before zf_pool_start; NULL: none. */
void zf_pool_set_thread_hooks(void (*start)(struct zf_worker *w), void (*stop)(struct zf_worker *w));
/* The watchdog's way to show where a stuck worker is: logs the stack of the
 * thread whose application-side ident is `ident` (python.c: its Python
 * stack), prefixed by `what`. Called on the watchdog thread, never the
 * loop. Without it the watchdog logs the worker without a stack. */
void zf_pool_set_stack_hook(void (*log_stack)(unsigned long ident, int level, const char *what));
/* Starts n workers. Returns ZF_OK or ZF_ERROR. */
int zf_pool_start(int n);
/* Queues a job (any thread), whatever the queue holds. */
void zf_pool_push(struct zf_job *job);
/* Queues a job unless the shared queue already holds server.max_queued
 * jobs or the pool stopped admitting (zf_pool_cancel_queued). Any thread.
 * Returns ZF_OK (queued), ZF_AGAIN (queue full) or ZF_DECLINED (stopping);
 * on anything but ZF_OK the caller still owns the job. */
int zf_pool_admit(struct zf_job *job);
/* Cancels (ZF_JOB_EXPIRED) every cancellable job of the shared queue that
 * waited longer than server.queue_timeout. Any thread. Returns how many. */
size_t zf_pool_expire(void);
/* Shutdown: cancels (ZF_JOB_SHUTDOWN) every cancellable job still in the
 * shared queue, and from then on zf_pool_admit declines. Jobs running and
 * jobs queued for one worker (resumed responses) still run. Any thread.
 * Returns how many were cancelled. */
size_t zf_pool_cancel_queued(void);
/* Takes a cancellable job back out of the shared queue unrun (its client
 * went away, so it would only hold a queue slot and its request until a
 * worker got to it). Returns ZF_OK when it was still queued: the caller
 * owns it again and its cancel function is not called; ZF_DECLINED when it
 * is not in the shared queue (a worker took it, or it was never queued
 * there). Any thread. */
int zf_pool_withdraw(struct zf_job *job);
void zf_pool_get_stats(struct zf_pool_stats *st);
/* Queues a job for one worker only (a suspended response resumes on the
 * thread that started it: thread-local state of the app stays valid).
 * Any thread. */
void zf_pool_push_to(struct zf_job *job, int worker_index);
/* Worker thread: the next queued job for w, or NULL at once when there is
 * none. A job that runs Python takes it while it still holds the GIL, so a
 * busy pool does not pass the GIL (and the CPU) around between every two
 * requests. The job taken counts as the one w is running. */
struct zf_job *zf_pool_next_nowait(struct zf_worker *w);
/* Worker thread: describes the job it runs now ("GET /path ..."), for
 * zf_pool_workers. printf-style; truncated to fit. */
void zf_pool_set_doing(struct zf_worker *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Copies the state of up to max workers into out. Any thread. Returns how
 * many were copied. */
size_t zf_pool_workers(struct zf_worker_info *out, size_t max);
/* Number of jobs queued and running. */
size_t zf_pool_busy(void);
/* Stops taking jobs once the queue is empty and joins every worker and the
 * watchdog. Must be called from the thread that started the pool, without
 * the GIL, once the workers are idle (a worker stuck in the app cannot be
 * joined: the caller exits the process instead). */
void zf_pool_stop(void);

#endif
