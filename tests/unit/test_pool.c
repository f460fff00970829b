/* The worker pool's admission rules: the shared queue bound, expiry after
 * the queue timeout (by a scan and when a worker takes a job), the shutdown
 * drain, and the watchdog's one report per stuck job. Plain threads stand in
 * for Python: no thread hooks, and a stack hook that counts its calls. */
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "../../src/core/pool.c"

#include "check.h"

static atomic_int stacks_logged;
static void test_log_stack(unsigned long ident, int level, const char *what)
{
    (void)ident;
    (void)level;
    (void)what;
    atomic_fetch_add(&stacks_logged, 1);
}

struct tjob {
    struct zf_job job; /* first */
    atomic_int ran, cancelled, why;
    int block_ms;
    int until_reported; /* also block until the watchdog reported it (at most 5 s) */
};

static void t_run(struct zf_job *job, struct zf_worker *w)
{
    (void)w;
    struct tjob *t = (struct tjob *)job;
    if (t->block_ms)
        usleep((useconds_t)t->block_ms * 1000);
    for (int i = 0; t->until_reported && i < 500 && atomic_load(&stacks_logged) == 0; i++)
        usleep(10000);
    atomic_fetch_add(&t->ran, 1);
}

static void t_cancel(struct zf_job *job, enum zf_job_cancel why, uint64_t waited_ms)
{
    (void)waited_ms;
    struct tjob *t = (struct tjob *)job;
    atomic_store(&t->why, (int)why);
    atomic_fetch_add(&t->cancelled, 1);
}

static void tjob_init(struct tjob *t, int cancellable)
{
    memset(t, 0, sizeof *t);
    t->job.run = t_run;
    t->job.cancel = cancellable ? t_cancel : NULL;
}

/* Empties the shared queue without running anything (no workers yet). */
static int drain_shared(void)
{
    int n = 0;
    pthread_mutex_lock(&pool.lock);
    while (pop(&pool.head, &pool.tail)) {
        pool.queued--;
        pool.shared_queued--;
        n++;
    }
    pthread_mutex_unlock(&pool.lock);
    return n;
}

static void test_bound(void)
{
    struct tjob j[4];
    zf_pool_cfg.max_queued = 2;
    for (int i = 0; i < 4; i++)
        tjob_init(&j[i], 1);
    CHECK_EQ_INT(zf_pool_admit(&j[0].job), ZF_OK);
    CHECK_EQ_INT(zf_pool_admit(&j[1].job), ZF_OK);
    CHECK_EQ_INT(zf_pool_admit(&j[2].job), ZF_AGAIN);
    /* zf_pool_push (internal jobs) is not bounded, but counts */
    zf_pool_push(&j[3].job);
    CHECK_EQ_INT(pool.shared_queued, 3);
    struct zf_pool_stats st;
    zf_pool_get_stats(&st);
    CHECK_EQ_INT(st.refused, 1);
    CHECK_EQ_INT(st.queued, 3);
    CHECK_EQ_INT(drain_shared(), 3);
    zf_pool_cfg.max_queued = 0; /* no bound */
    CHECK_EQ_INT(zf_pool_admit(&j[2].job), ZF_OK);
    CHECK_EQ_INT(drain_shared(), 1);
}

/* A job taken back from the middle or the end of the queue leaves the
 * rest in order with a correct tail; one not queued, or not cancellable,
 * is refused. Nothing is run or cancelled. */
static void test_withdraw(void)
{
    struct tjob a, b, c, fixed, never;
    tjob_init(&a, 1);
    tjob_init(&b, 1);
    tjob_init(&c, 1);
    tjob_init(&fixed, 0);
    tjob_init(&never, 1);
    zf_pool_push(&a.job);
    zf_pool_push(&b.job);
    zf_pool_push(&fixed.job);
    zf_pool_push(&c.job);
    CHECK_EQ_INT(zf_pool_withdraw(&b.job), ZF_OK);
    CHECK_EQ_INT(zf_pool_withdraw(&b.job), ZF_DECLINED); /* not queued any more */
    CHECK_EQ_INT(zf_pool_withdraw(&never.job), ZF_DECLINED);
    CHECK_EQ_INT(zf_pool_withdraw(&fixed.job), ZF_DECLINED);
    CHECK_EQ_INT(zf_pool_withdraw(&c.job), ZF_OK); /* the tail */
    CHECK_EQ_INT(pool.shared_queued, 2);
    CHECK(pool.head == &a.job && a.job.next == &fixed.job && pool.tail == &fixed.job);
    zf_pool_push(&c.job); /* appending after the new tail works */
    CHECK(fixed.job.next == &c.job && pool.tail == &c.job);
    CHECK_EQ_INT(drain_shared(), 3);
    CHECK_EQ_INT(a.ran + b.ran + c.ran + a.cancelled + b.cancelled + c.cancelled, 0);
}

/* Old cancellable jobs leave the queue, a non-cancellable one and young
 * ones stay, in order, and the queue's tail is still right. */
static void test_expire(void)
{
    struct tjob old1, keep, old2, young, later;
    tjob_init(&old1, 1);
    tjob_init(&keep, 0);
    tjob_init(&old2, 1);
    tjob_init(&young, 1);
    tjob_init(&later, 1);
    zf_pool_cfg.queue_timeout_ms = 1000;
    zf_pool_push(&old1.job);
    zf_pool_push(&keep.job);
    zf_pool_push(&old2.job);
    zf_pool_push(&young.job);
    uint64_t now = zf_now_ms();
    old1.job.queued_ms = keep.job.queued_ms = old2.job.queued_ms = now - 5000;
    CHECK_EQ_INT(zf_pool_expire(), 2);
    CHECK_EQ_INT(old1.cancelled, 1);
    CHECK_EQ_INT(old2.cancelled, 1);
    CHECK_EQ_INT(old1.why, ZF_JOB_EXPIRED);
    CHECK_EQ_INT(keep.cancelled + young.cancelled, 0);
    CHECK(pool.head == &keep.job && keep.job.next == &young.job && pool.tail == &young.job);
    zf_pool_push(&later.job);
    CHECK(young.job.next == &later.job && pool.tail == &later.job);
    CHECK_EQ_INT(pool.shared_queued, 3);
    /* the last job expires: the tail moves back */
    later.job.queued_ms = young.job.queued_ms = now - 5000;
    CHECK_EQ_INT(zf_pool_expire(), 2);
    CHECK(pool.head == &keep.job && pool.tail == &keep.job && keep.job.next == NULL);
    CHECK_EQ_INT(drain_shared(), 1);
    zf_pool_cfg.queue_timeout_ms = 0; /* off: nothing expires */
    zf_pool_push(&old1.job);
    old1.job.queued_ms = 1;
    CHECK_EQ_INT(zf_pool_expire(), 0);
    CHECK_EQ_INT(drain_shared(), 1);
}

static void wait_for(atomic_int *v, int want)
{
    for (int i = 0; i < 500 && atomic_load(v) < want; i++)
        usleep(10000);
}

/* With workers: a request that outwaited queue_timeout behind a busy worker
 * is cancelled when the worker takes it, even if no scan ran; a stuck job
 * is reported once; the shutdown drain cancels what is queued and declines
 * what comes after, and jobs for one worker still run. */
static void test_workers(void)
{
    struct tjob busy, late, fresh, queued, refused;
    struct zf_pool_stats st;
    zf_pool_get_stats(&st);
    uint64_t expired_before = st.expired;
    zf_pool_cfg.queue_timeout_ms = 100;
    zf_pool_cfg.stuck_after_ms = 40;
    CHECK_EQ_INT(zf_pool_start(1), ZF_OK);
    tjob_init(&busy, 0);
    busy.block_ms = 200;
    busy.until_reported = 1;
    tjob_init(&late, 1);
    zf_pool_push(&busy.job);
    CHECK_EQ_INT(zf_pool_admit(&late.job), ZF_OK);
    wait_for(&busy.ran, 1);
    wait_for(&late.cancelled, 1);
    CHECK_EQ_INT(busy.ran, 1);
    CHECK_EQ_INT(late.ran, 0);
    CHECK_EQ_INT(late.cancelled, 1);
    CHECK_EQ_INT(late.why, ZF_JOB_EXPIRED);
    CHECK_EQ_INT(stacks_logged, 1); /* one report for the long job, not one per scan */
    zf_pool_get_stats(&st);
    CHECK_EQ_INT(st.expired, expired_before + 1);
    CHECK_EQ_INT(st.stuck_total, 1);

    tjob_init(&fresh, 1);
    CHECK_EQ_INT(zf_pool_admit(&fresh.job), ZF_OK);
    wait_for(&fresh.ran, 1);
    CHECK_EQ_INT(fresh.ran, 1);

    /* shutdown drain */
    tjob_init(&busy, 0);
    busy.block_ms = 100;
    tjob_init(&queued, 1);
    tjob_init(&refused, 1);
    zf_pool_push(&busy.job);
    usleep(20000);
    zf_pool_cfg.queue_timeout_ms = 0;
    CHECK_EQ_INT(zf_pool_admit(&queued.job), ZF_OK);
    CHECK_EQ_INT(zf_pool_cancel_queued(), 1);
    CHECK_EQ_INT(queued.cancelled, 1);
    CHECK_EQ_INT(queued.why, ZF_JOB_SHUTDOWN);
    CHECK_EQ_INT(zf_pool_admit(&refused.job), ZF_DECLINED);
    struct tjob own;
    tjob_init(&own, 1);
    zf_pool_push_to(&own.job, 0);
    wait_for(&own.ran, 1);
    CHECK_EQ_INT(own.ran, 1);
    while (zf_pool_busy() > 0)
        usleep(10000);
    zf_pool_stop();
    CHECK_EQ_INT(queued.ran + refused.ran + refused.cancelled, 0);
}

int main(void)
{
    zf_log_open("-", "error");
    zf_pool_set_stack_hook(test_log_stack);
    test_bound();
    test_withdraw();
    test_expire();
    test_workers();
    return zf_test_done("pool");
}
