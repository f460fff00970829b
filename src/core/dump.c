/* SIGUSR1: the state dump. The C part (what each worker does) is read under
 * the pool's lock on the loop thread; the Python stacks are taken by a
 * detached thread, since taking them needs the GIL. */
#include <event2/buffer.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "dump.h"
#include "log.h"
#include "pool.h"
#include "python.h"
#include "server.h"

static atomic_int dumping;

struct dump {
    struct zf_worker_info *workers;
    size_t n;
};

/* Each active module's stats hook ("name: value" lines), one log line each
 * as "SIGUSR1: stat name: value". Loop thread. */
static void dump_module_stats(void)
{
    struct evbuffer *b = zf_srv ? evbuffer_new() : NULL;
    if (!b)
        return;
    for (size_t i = 0; i < zf_srv->nactive; i++)
        if (zf_srv->active[i]->stats)
            zf_srv->active[i]->stats(zf_srv, b);
    char *line;
    while ((line = evbuffer_readln(b, NULL, EVBUFFER_EOL_LF))) {
        zf_log(ZF_LOG_WARN, NULL, "SIGUSR1: stat %s", line);
        free(line);
    }
    evbuffer_free(b);
}

static void *dump_main(void *arg)
{
    struct dump *d = arg;
    zf_py_log_all_stacks(ZF_LOG_WARN, "SIGUSR1: Python stacks", d->workers, d->n);
    zf_log(ZF_LOG_WARN, NULL, "SIGUSR1: end of the dump");
    free(d->workers);
    free(d);
    atomic_store(&dumping, 0);
    return NULL;
}

void zf_dump_state(void)
{
    if (atomic_exchange(&dumping, 1)) {
        zf_log(ZF_LOG_WARN, NULL, "SIGUSR1: the previous dump still runs: ignored");
        return;
    }
    struct dump *d = calloc(1, sizeof *d);
    size_t max = zf_cfg.threads > 0 ? (size_t)zf_cfg.threads : 1;
    if (d)
        d->workers = calloc(max, sizeof *d->workers);
    if (!d || !d->workers) {
        free(d);
        atomic_store(&dumping, 0);
        zf_log(ZF_LOG_ERROR, NULL, "SIGUSR1: out of memory");
        return;
    }
    d->n = zf_pool_workers(d->workers, max);
    struct zf_pool_stats st;
    zf_pool_get_stats(&st);
    zf_log(ZF_LOG_WARN, NULL,
           "SIGUSR1: state dump: %zu worker(s), %zu busy, %zu job(s) queued, %zu stuck", d->n,
           st.running, st.queued, st.stuck);
    for (size_t i = 0; i < d->n; i++) {
        struct zf_worker_info *w = &d->workers[i];
        if (w->busy_ms)
            zf_log(ZF_LOG_WARN, NULL, "SIGUSR1: worker %d: busy for %.1f s on %s", w->index,
                   (double)w->busy_ms / 1000.0, w->doing[0] ? w->doing : "a job");
        else
            zf_log(ZF_LOG_WARN, NULL, "SIGUSR1: worker %d: idle", w->index);
    }
    dump_module_stats();
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &attr, dump_main, d);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        zf_log(ZF_LOG_ERROR, NULL, "SIGUSR1: cannot start the stack dump thread: %s", strerror(rc));
        free(d->workers);
        free(d);
        atomic_store(&dumping, 0);
    }
}

int zf_dump_wait(unsigned timeout_ms)
{
    for (unsigned waited = 0; atomic_load(&dumping); waited += 10) {
        if (waited >= timeout_ms)
            return ZF_AGAIN;
        usleep(10 * 1000);
    }
    return ZF_OK;
}
