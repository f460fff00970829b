/* The worker pool and a tiny application for the fuzz targets that run
 * requests (fuzz_h2.c, fuzz_ws.c): zf_pool_admit queues the job, and the
 * harness runs the queue on its own thread (run_jobs) between input chunks,
 * as a worker would (zf_exchange_send_headers/send_data/finish post to the
 * loop through the exchange layer's wake-up event). The app answers from
 * the request path: ".../204" 204 without a body; ".../big" 200 KB;
 * ".../fail" 10 bytes, then fails mid-body; anything else 200 with a JSON
 * body of (request body length % 3000) bytes. Included once per target. */
#ifndef ZF_FUZZ_APP_H
#define ZF_FUZZ_APP_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/core/exchange.h"
#include "../../src/core/log.h"
#include "../../src/core/pool.h"

static int verbose;

static struct zf_job *queue_head, **queue_tail = &queue_head;

int zf_pool_admit(struct zf_job *job)
{
    job->next = NULL;
    *queue_tail = job;
    queue_tail = &job->next;
    return ZF_OK;
}

static void app_run(struct zf_job *job, struct zf_worker *w)
{
    (void)w;
    struct zf_exchange *ex = (struct zf_exchange *)job;
    /* the path, or the topic of a WebSocket message to the app */
    const char *p = zf_headers_get(&ex->req_headers, "Zfront-Topic");
    if (!p)
        p = ex->path ? ex->path : "";
    if (verbose)
        fprintf(stderr, "fuzz: app: %s %s, body %zu bytes\n", ex->method, p, ex->body.len);
    struct zf_headers h = {0};
    zf_headers_add(&h, "Content-Type", 12, "text/plain", 10);
    if (strstr(p, "204")) {
        if (zf_exchange_send_headers(ex, 204, strdup("204 No Content"), &h, 0) == ZF_OK)
            zf_exchange_finish(ex, 1);
        else
            zf_exchange_finish(ex, 0);
        return;
    }
    size_t size = strstr(p, "big") ? 200 * 1024 : ex->body.len % 3000;
    int ok = strstr(p, "fail") == NULL;
    if (zf_exchange_send_headers(ex, 200, strdup("200 OK"), &h, ok ? (int64_t)size : -1) != ZF_OK) {
        zf_exchange_finish(ex, 0);
        return;
    }
    static char chunk[16384];
    memset(chunk, ' ', sizeof chunk);
    chunk[0] = '"';
    if (size > 1)
        chunk[(size - 1) % sizeof chunk] = '"'; /* a JSON string when it fits one chunk */
    for (size_t sent = 0; sent < size;) {
        size_t k = size - sent < sizeof chunk ? size - sent : sizeof chunk;
        if (!ok)
            k = k > 10 ? 10 : k;
        if (zf_exchange_send_data(ex, chunk, k) != ZF_OK)
            break;
        sent += k;
        if (!ok)
            break;
    }
    zf_exchange_finish(ex, ok);
}

static const struct zf_app_jobs app = {app_run, app_run};

static void run_jobs(void)
{
    while (queue_head) {
        struct zf_job *job = queue_head;
        queue_head = job->next;
        if (!queue_head)
            queue_tail = &queue_head;
        job->run(job, NULL);
    }
}

/* The set-up both targets share (LLVMFuzzerInitialize): logging by
 * ZF_FUZZ_VERBOSE, a loop with the exchange layer's wake-up, this app, and
 * the core limits the requests run under. Returns the loop (aborts when it
 * cannot be made). */
static struct event_base *fuzz_app_init(void)
{
    verbose = getenv("ZF_FUZZ_VERBOSE") != NULL;
    zf_log_level = verbose ? ZF_LOG_DEBUG : -1;
    struct event_base *b = event_base_new();
    if (!b || zf_exchange_init_loop(b) != ZF_OK)
        abort();
    zf_exchange_set_app(&app);
    zf_cfg.output_buffer = 256 * 1024;
    zf_cfg.tmp_dir = "/tmp";
    zf_pool_cfg.max_queued = 1000;
    return b;
}

#endif
