/* The worker pool: a FIFO job queue served by N threads. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pool.h"

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct zf_job *head, *tail;
    size_t queued;
    size_t running;
    int stopping;
    int n;
    pthread_t *threads;
    struct zf_worker *workers;
    struct own_queue {
        struct zf_job *head, *tail;
    } * own; /* per worker: jobs only that worker may run */
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static struct {
    void (*start)(struct zf_worker *w);
    void (*stop)(struct zf_worker *w);
} hooks;

void zf_pool_set_thread_hooks(void (*start)(struct zf_worker *w), void (*stop)(struct zf_worker *w))
{
    hooks.start = start;
    hooks.stop = stop;
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

/* Waits for the next job; NULL when the pool stops and both queues are
 * empty. The worker alternates between its own queue (resumed responses)
 * and the shared one (new requests), so neither can starve the other. */
static struct zf_job *next_job(struct zf_worker *w, int wait)
{
    struct own_queue *q = &pool.own[w->index];
    pthread_mutex_lock(&pool.lock);
    while (wait && !pool.head && !q->head && !pool.stopping)
        pthread_cond_wait(&pool.cond, &pool.lock);
    struct zf_job *job = NULL;
    if (w->own_last || !q->head)
        job = pop(&pool.head, &pool.tail);
    w->own_last = 0;
    if (!job) {
        job = pop(&q->head, &q->tail);
        w->own_last = job != NULL;
    }
    if (job) {
        pool.queued--;
        if (wait)
            pool.running++; /* a job taken without waiting replaces the one running */
    }
    pthread_mutex_unlock(&pool.lock);
    return job;
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
        pthread_mutex_unlock(&pool.lock);
    }
    if (hooks.stop)
        hooks.stop(w);
    return NULL;
}

int zf_pool_start(int n)
{
    if (n < 1)
        n = 1;
    pool.n = n;
    pool.stopping = 0;
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
    zf_log(ZF_LOG_INFO, NULL, "started %d worker thread%s", n, n == 1 ? "" : "s");
    return ZF_OK;
}

void zf_pool_push(struct zf_job *job)
{
    job->next = NULL;
    pthread_mutex_lock(&pool.lock);
    if (pool.tail)
        pool.tail->next = job;
    else
        pool.head = job;
    pool.tail = job;
    pool.queued++;
    pthread_cond_signal(&pool.cond);
    pthread_mutex_unlock(&pool.lock);
}

void zf_pool_push_to(struct zf_job *job, int worker_index)
{
    job->next = NULL;
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
    pthread_mutex_unlock(&pool.lock);
    for (int i = 0; i < pool.n; i++)
        pthread_join(pool.threads[i], NULL);
    free(pool.threads);
    free(pool.workers);
    free(pool.own);
    pool.threads = NULL;
    pool.workers = NULL;
    pool.own = NULL;
    pool.n = 0;
}
