/* The worker pool: a FIFO job queue served by N threads, its admission
 * limits (queue bound, queue wait limit) and the stuck-worker watchdog. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "log.h"
#include "metrics.h"
#include "pool.h"

struct zf_pool_config zf_pool_cfg;

const struct zf_cfg_key zf_pool_keys[] = {
    {"server.max_queued", ZF_CFG_INT, &zf_pool_cfg.max_queued, "1024", "--max-queued",
     "Requests that may wait for a worker; beyond it a request is answered 503 with "
     "Retry-After at once, by the server, without running the application (0: no bound)."},
    {"server.queue_timeout", ZF_CFG_MSEC, &zf_pool_cfg.queue_timeout_ms, "30s", "--queue-timeout",
     "A request that waited longer than this for a worker is answered 503 with Retry-After "
     "instead of running (0: no limit)."},
    {"server.stuck_after", ZF_CFG_MSEC, &zf_pool_cfg.stuck_after_ms, "60s", "--stuck-after",
     "A worker busy on one request for longer than this is logged once, with its Python "
     "stack (0: no watchdog)."},
    {NULL, 0, NULL, NULL, NULL, NULL},
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct zf_job *head, *tail;
    size_t queued;        /* both queues */
    size_t shared_queued; /* the shared queue only (what max_queued bounds) */
    size_t running;
    int stopping;
    int declining; /* zf_pool_cancel_queued ran: admit no more */
    int n;
    pthread_t *threads;
    struct zf_worker *workers;
    struct own_queue {
        struct zf_job *head, *tail;
    } *own; /* per worker: jobs only that worker may run */
    struct zf_pool_stats st;
    /* the watchdog */
    pthread_t watchdog;
    int watchdog_on;
    pthread_cond_t watch_cond; /* CLOCK_MONOTONIC */
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static struct {
    void (*start)(struct zf_worker *w);
    void (*stop)(struct zf_worker *w);
    void (*log_stack)(unsigned long ident, int level, const char *what);
} hooks;

void zf_pool_set_thread_hooks(void (*start)(struct zf_worker *w), void (*stop)(struct zf_worker *w))
{
    hooks.start = start;
    hooks.stop = stop;
}

void zf_pool_set_stack_hook(void (*log_stack)(unsigned long ident, int level, const char *what))
{
    hooks.log_stack = log_stack;
}

static struct zf_job *pop(struct zf_job **head, struct zf_job **tail)
{
    struct zf_job *job = *head;
    if (job) {
        *head = job->next;
        if (!*head)
            *tail = NULL;
        job->next = NULL;
    }
    return job;
}

/* Under the lock: true when a job taken from the shared queue waited too
 * long to run (and may be dropped). */
static int too_old(const struct zf_job *job, uint64_t now)
{
    return job->cancel && zf_pool_cfg.queue_timeout_ms > 0 &&
           now - job->queued_ms > zf_pool_cfg.queue_timeout_ms;
}

/* Calls cancel on each job of a list (linked by next), outside the lock. */
static void cancel_list(struct zf_job *list, enum zf_job_cancel why, uint64_t now)
{
    while (list) {
        struct zf_job *next = list->next;
        list->next = NULL;
        list->cancel(list, why, now - list->queued_ms);
        list = next;
    }
}

/* Waits for the next job; NULL when the pool stops and both queues are
 * empty. The worker alternates between its own queue (resumed responses)
 * and the shared one (new requests), so neither can starve the other. A
 * request found to have waited past server.queue_timeout is cancelled
 * (answered 503 by its owner) instead of being returned. */
static struct zf_job *next_job(struct zf_worker *w, int wait)
{
    struct own_queue *q = &pool.own[w->index];
    for (;;) {
        struct zf_job *expired = NULL, **etail = &expired;
        struct zf_job *job = NULL;
        int from_shared = 0;
        uint64_t now = zf_now_ms();
        pthread_mutex_lock(&pool.lock);
        while (wait && !pool.head && !q->head && !pool.stopping)
            pthread_cond_wait(&pool.cond, &pool.lock);
        if (w->own_last || !q->head) {
            now = zf_now_ms();
            while ((job = pop(&pool.head, &pool.tail)) != NULL) {
                pool.queued--;
                pool.shared_queued--;
                if (!too_old(job, now)) {
                    from_shared = 1;
                    break;
                }
                pool.st.expired++;
                *etail = job;
                etail = &job->next;
            }
        }
        w->own_last = 0;
        if (!job) {
            job = pop(&q->head, &q->tail);
            w->own_last = job != NULL;
            if (job)
                pool.queued--;
        }
        if (job) {
            if (wait)
                pool.running++; /* a job taken without waiting replaces the one running */
            w->busy_since_ms = now;
            w->stuck_reported = 0;
        }
        pthread_mutex_unlock(&pool.lock);
        if (from_shared) /* resumed responses (own queue) are not new waits */
            zf_histogram_observe(&zf__metrics_queue_wait,
                                 (now > job->queued_ms ? now - job->queued_ms : 0) * 1000);
        /* only expired requests were queued: answer them, then wait again */
        cancel_list(expired, ZF_JOB_EXPIRED, now);
        if (job || !wait || !expired)
            return job;
    }
}

struct zf_job *zf_pool_next_nowait(struct zf_worker *w)
{
    return next_job(w, 0);
}

static void *worker_main(void *arg)
{
    struct zf_worker *w = arg;
    if (hooks.start)
        hooks.start(w);
    struct zf_job *job;
    while ((job = next_job(w, 1)) != NULL) {
        job->run(job, w);
        pthread_mutex_lock(&pool.lock);
        pool.running--;
        w->busy_since_ms = 0;
        pthread_mutex_unlock(&pool.lock);
    }
    if (hooks.stop)
        hooks.stop(w);
    return NULL;
}

/* ------------------------------------------------------------ the watchdog */

/* A stuck worker seen by one scan. */
struct stuck {
    int index;
    unsigned long ident;
    uint64_t busy_ms;
};

/* The watchdog thread: every quarter of stuck_after (at most once a second)
 * looks for workers busy on one job past stuck_after, and logs each once
 * with its Python stack. Taking the stack needs the GIL, which only this
 * thread (never the loop) waits for. */
static void *watchdog_main(void *arg)
{
    (void)arg;
    uint64_t period = zf_pool_cfg.stuck_after_ms / 4;
    if (period < 10)
        period = 10;
    if (period > 1000)
        period = 1000;
    struct stuck *found = zf_xcalloc((size_t)pool.n, sizeof *found);
    pthread_mutex_lock(&pool.lock);
    while (!pool.stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += (time_t)(period / 1000);
        ts.tv_nsec += (long)(period % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&pool.watch_cond, &pool.lock, &ts);
        if (pool.stopping)
            break;
        uint64_t now = zf_now_ms();
        int n = 0;
        for (int i = 0; i < pool.n; i++) {
            struct zf_worker *w = &pool.workers[i];
            if (w->busy_since_ms && !w->stuck_reported &&
                now - w->busy_since_ms >= zf_pool_cfg.stuck_after_ms) {
                w->stuck_reported = 1;
                pool.st.stuck_total++;
                found[n++] = (struct stuck){i, w->ident, now - w->busy_since_ms};
            }
        }
        uint64_t total = pool.st.stuck_total;
        pthread_mutex_unlock(&pool.lock);
        for (int i = 0; i < n; i++) {
            char what[256];
            snprintf(what, sizeof what,
                     "worker %d has been busy on one request for %.1f s (server.stuck_after "
                     "%.1f s; stuck workers reported so far: %llu); its Python stack",
                     found[i].index, (double)found[i].busy_ms / 1000.0,
                     (double)zf_pool_cfg.stuck_after_ms / 1000.0, (unsigned long long)total);
            if (hooks.log_stack)
                hooks.log_stack(found[i].ident, ZF_LOG_WARN, what);
            else
                zf_log(ZF_LOG_WARN, NULL, "%s: not available", what);
        }
        pthread_mutex_lock(&pool.lock);
    }
    pthread_mutex_unlock(&pool.lock);
    free(found);
    return NULL;
}

static void start_watchdog(void)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&pool.watch_cond, &ca);
    pthread_condattr_destroy(&ca);
    int rc = pthread_create(&pool.watchdog, NULL, watchdog_main, NULL);
    if (rc != 0) {
        /* the server still works, it only cannot tell about stuck workers */
        zf_log(ZF_LOG_ERROR, NULL, "cannot start the stuck-worker watchdog: %s", strerror(rc));
        pthread_cond_destroy(&pool.watch_cond);
        return;
    }
    pool.watchdog_on = 1;
}

/* -------------------------------------------------------------- the pool */

int zf_pool_start(int n)
{
    if (n < 1)
        n = 1;
    pool.n = n;
    pool.stopping = 0;
    pool.declining = 0;
    pool.threads = zf_xcalloc((size_t)n, sizeof *pool.threads);
    pool.workers = zf_xcalloc((size_t)n, sizeof *pool.workers);
    pool.own = zf_xcalloc((size_t)n, sizeof *pool.own);
    for (int i = 0; i < n; i++) {
        pool.workers[i].index = i;
        int rc = pthread_create(&pool.threads[i], NULL, worker_main, &pool.workers[i]);
        if (rc != 0) {
            zf_log(ZF_LOG_ERROR, NULL, "cannot start worker thread %d: %s", i, strerror(rc));
            pool.n = i;
            return ZF_ERROR;
        }
    }
    if (zf_pool_cfg.stuck_after_ms > 0)
        start_watchdog();
    zf_log(ZF_LOG_INFO, NULL, "started %d worker thread%s", n, n == 1 ? "" : "s");
    return ZF_OK;
}

/* Under the lock: appends to the shared queue. */
static void append(struct zf_job *job)
{
    job->next = NULL;
    job->queued_ms = zf_now_ms();
    if (pool.tail)
        pool.tail->next = job;
    else
        pool.head = job;
    pool.tail = job;
    pool.queued++;
    pool.shared_queued++;
    pthread_cond_signal(&pool.cond);
}

void zf_pool_push(struct zf_job *job)
{
    pthread_mutex_lock(&pool.lock);
    append(job);
    pthread_mutex_unlock(&pool.lock);
}

int zf_pool_admit(struct zf_job *job)
{
    int rc = ZF_OK;
    pthread_mutex_lock(&pool.lock);
    if (pool.declining) {
        rc = ZF_DECLINED;
    } else if (zf_pool_cfg.max_queued > 0 && pool.shared_queued >= (size_t)zf_pool_cfg.max_queued) {
        pool.st.refused++;
        rc = ZF_AGAIN;
    } else {
        append(job);
    }
    pthread_mutex_unlock(&pool.lock);
    return rc;
}

/* Under the lock: unlinks the cancellable jobs of the shared queue that
 * match (all of them, or those queued before `before` when all is 0) and
 * returns them as a list. The queue is in arrival order, so an expiry scan
 * stops at the first job young enough. */
static struct zf_job *unlink_cancellable(int all, uint64_t before, size_t *count)
{
    struct zf_job *out = NULL, **otail = &out;
    struct zf_job **pp = &pool.head, *prev = NULL;
    *count = 0;
    while (*pp) {
        struct zf_job *job = *pp;
        if (!all && job->queued_ms >= before)
            break;
        if (!job->cancel) {
            prev = job;
            pp = &job->next;
            continue;
        }
        *pp = job->next;
        if (pool.tail == job)
            pool.tail = prev;
        job->next = NULL;
        *otail = job;
        otail = &job->next;
        pool.queued--;
        pool.shared_queued--;
        (*count)++;
    }
    return out;
}

size_t zf_pool_expire(void)
{
    if (zf_pool_cfg.queue_timeout_ms == 0)
        return 0;
    uint64_t now = zf_now_ms();
    if (now <= zf_pool_cfg.queue_timeout_ms)
        return 0;
    size_t n;
    pthread_mutex_lock(&pool.lock);
    /* strictly older than the limit, as a worker judges it (too_old) */
    struct zf_job *list = unlink_cancellable(0, now - zf_pool_cfg.queue_timeout_ms, &n);
    pool.st.expired += n;
    pthread_mutex_unlock(&pool.lock);
    cancel_list(list, ZF_JOB_EXPIRED, now);
    return n;
}

size_t zf_pool_cancel_queued(void)
{
    size_t n;
    pthread_mutex_lock(&pool.lock);
    pool.declining = 1;
    struct zf_job *list = unlink_cancellable(1, 0, &n);
    pool.st.cancelled += n;
    pthread_mutex_unlock(&pool.lock);
    cancel_list(list, ZF_JOB_SHUTDOWN, zf_now_ms());
    return n;
}

int zf_pool_withdraw(struct zf_job *job)
{
    int rc = ZF_DECLINED;
    pthread_mutex_lock(&pool.lock);
    struct zf_job *prev = NULL;
    for (struct zf_job **pp = &pool.head; job->cancel && *pp; prev = *pp, pp = &(*pp)->next) {
        if (*pp != job)
            continue;
        *pp = job->next;
        if (pool.tail == job)
            pool.tail = prev;
        job->next = NULL;
        pool.queued--;
        pool.shared_queued--;
        rc = ZF_OK;
        break;
    }
    pthread_mutex_unlock(&pool.lock);
    return rc;
}

void zf_pool_get_stats(struct zf_pool_stats *st)
{
    pthread_mutex_lock(&pool.lock);
    *st = pool.st;
    st->queued = pool.queued;
    st->running = pool.running;
    st->stuck = 0;
    for (int i = 0; i < pool.n; i++)
        st->stuck += pool.workers[i].busy_since_ms && pool.workers[i].stuck_reported;
    pthread_mutex_unlock(&pool.lock);
}

void zf_pool_push_to(struct zf_job *job, int worker_index)
{
    job->next = NULL;
    job->queued_ms = zf_now_ms();
    pthread_mutex_lock(&pool.lock);
    struct own_queue *q = &pool.own[worker_index];
    if (q->tail)
        q->tail->next = job;
    else
        q->head = job;
    q->tail = job;
    pool.queued++;
    /* only that worker can take it: wake them all, it is among them */
    pthread_cond_broadcast(&pool.cond);
    pthread_mutex_unlock(&pool.lock);
}

void zf_pool_set_doing(struct zf_worker *w, const char *fmt, ...)
{
    char buf[sizeof w->doing];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&pool.lock);
    memcpy(w->doing, buf, sizeof buf);
    pthread_mutex_unlock(&pool.lock);
}

size_t zf_pool_workers(struct zf_worker_info *out, size_t max)
{
    uint64_t now = zf_now_ms();
    size_t n = 0;
    pthread_mutex_lock(&pool.lock);
    for (int i = 0; i < pool.n && n < max; i++, n++) {
        struct zf_worker *w = &pool.workers[i];
        out[n].index = i;
        out[n].ident = w->ident;
        out[n].busy_ms = w->busy_since_ms ? now - w->busy_since_ms : 0;
        if (w->busy_since_ms && out[n].busy_ms == 0)
            out[n].busy_ms = 1;
        snprintf(out[n].doing, sizeof out[n].doing, "%s", w->busy_since_ms ? w->doing : "");
    }
    pthread_mutex_unlock(&pool.lock);
    return n;
}

size_t zf_pool_busy(void)
{
    pthread_mutex_lock(&pool.lock);
    size_t n = pool.queued + pool.running;
    pthread_mutex_unlock(&pool.lock);
    return n;
}

void zf_pool_stop(void)
{
    pthread_mutex_lock(&pool.lock);
    pool.stopping = 1;
    pthread_cond_broadcast(&pool.cond);
    if (pool.watchdog_on)
        pthread_cond_signal(&pool.watch_cond);
    pthread_mutex_unlock(&pool.lock);
    for (int i = 0; i < pool.n; i++)
        pthread_join(pool.threads[i], NULL);
    if (pool.watchdog_on) {
        pthread_join(pool.watchdog, NULL);
        pthread_cond_destroy(&pool.watch_cond);
        pool.watchdog_on = 0;
    }
    free(pool.threads);
    free(pool.workers);
    free(pool.own);
    pool.threads = NULL;
    pool.workers = NULL;
    pool.own = NULL;
    pool.n = 0;
}
