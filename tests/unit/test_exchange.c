/* The exchange between a worker and the loop: ordered output, spooling when
 * the loop does not take output, abort while the worker runs, and nothing
 * leaked (exchanges, descriptors). A plain thread plays the worker. */
#include <event2/event.h>
#include <errno.h>
#include <event2/thread.h>
#include <string.h>
#include <unistd.h>

#include "../../src/core/config.h"
#include "../../src/core/exchange.h"
#include "../../src/core/server.h"
#include "check.h"

enum { TOTAL = 200000, CHUNK = 5000 };

static struct event_base *base;
static char expect[TOTAL];
static char got[TOTAL];
static size_t got_len;
static int saw_file, file_segs, finished_ok, outputs;
static int hold_output; /* the "client" does not read until the worker is done */

static void take_all(struct zf_exchange *ex)
{
    int finished = 0, failed = 0;
    struct zf_segment *s;
    CHECK(zf_exchange_take_headers(ex));
    while ((s = zf_exchange_take(ex, &finished, &failed)) != NULL) {
        if (s->type == ZF_SEG_DATA) {
            memcpy(got + got_len, s->data, s->len);
        } else {
            saw_file = 1;
            file_segs++;
            CHECK_EQ_INT(pread(s->fd, got + got_len, s->len, s->offset), s->len);
        }
        got_len += s->len;
        zf_segment_free(s);
    }
    if (finished) {
        finished_ok = !failed;
        zf_exchange_release(ex);
        event_base_loopexit(base, NULL);
    }
}

static void on_output(struct zf_exchange *ex)
{
    outputs++;
    int finished = 0, failed = 0;
    if (hold_output) {
        /* peek only whether the worker is done: then read everything */
        pthread_mutex_lock(&ex->lock);
        finished = ex->done;
        failed = ex->failed;
        pthread_mutex_unlock(&ex->lock);
        (void)failed;
        if (!finished)
            return;
    }
    take_all(ex);
}

static const struct zf_exchange_ops ops = {on_output};

static void *worker(void *arg)
{
    struct zf_exchange *ex = arg;
    struct zf_headers h = {0};
    zf_headers_add(&h, "Content-Type", 12, "text/plain", 10);
    CHECK_EQ_INT(zf_exchange_send_headers(ex, 200, strdup("200 OK"), &h, -1), ZF_OK);
    for (size_t off = 0; off < TOTAL; off += CHUNK)
        CHECK_EQ_INT(zf_exchange_send_data(ex, expect + off, CHUNK), ZF_OK);
    zf_exchange_finish(ex, 1);
    return NULL;
}

static void run_one(int hold)
{
    hold_output = hold;
    got_len = 0;
    saw_file = file_segs = finished_ok = outputs = 0;
    struct zf_exchange *ex = zf_exchange_new(&ops, NULL, NULL);
    ex->refs++; /* what zf_exchange_dispatch does, without the pool */
    pthread_t t;
    pthread_create(&t, NULL, worker, ex);
    event_base_dispatch(base);
    pthread_join(t, NULL);
    /* the worker's final post may still be pending: let the loop see it */
    event_base_loop(base, EVLOOP_NONBLOCK);
    CHECK_EQ_INT(got_len, TOTAL);
    CHECK(memcmp(got, expect, TOTAL) == 0);
    CHECK(finished_ok);
    CHECK(outputs > 0);
}

static void *aborted_worker(void *arg)
{
    struct zf_exchange *ex = arg;
    struct zf_headers h = {0};
    usleep(50000); /* the loop aborts first */
    CHECK_EQ_INT(zf_exchange_send_headers(ex, 200, strdup("200 OK"), &h, -1), ZF_ERROR);
    CHECK(zf_exchange_aborted(ex));
    CHECK_EQ_INT(zf_exchange_send_data(ex, "x", 1), ZF_ERROR);
    zf_exchange_finish(ex, 0);
    return NULL;
}

static void on_never(struct zf_exchange *ex)
{
    (void)ex;
    CHECK(!"on_output after abort");
}
static const struct zf_exchange_ops never_ops = {on_never};

static void stop_loop(evutil_socket_t fd, short w, void *arg)
{
    (void)fd;
    (void)w;
    (void)arg;
    if (zf_exchange_count() == 0)
        event_base_loopexit(base, NULL);
}

/* ---- queueing rules, one thread playing both sides */

static void on_quiet(struct zf_exchange *ex)
{
    (void)ex;
}
static struct zf_exchange *evicted[4];
static size_t nevicted;
static void evict_rec(struct zf_exchange *ex)
{
    evicted[nevicted++] = ex;
    zf_exchange_abort(ex);
}
static const struct zf_exchange_ops quiet_ops = {on_quiet, evict_rec};

/* A new exchange as a worker holds it, headers sent. */
static struct zf_exchange *started(void)
{
    struct zf_exchange *ex = zf_exchange_new(&quiet_ops, NULL, NULL);
    ex->refs++;
    struct zf_headers h = {0};
    CHECK_EQ_INT(zf_exchange_send_headers(ex, 200, strdup("200 OK"), &h, -1), ZF_OK);
    return ex;
}

/* The worker's part ends; the loop drops its reference. */
static void worker_done(struct zf_exchange *ex, int ok)
{
    zf_exchange_finish(ex, ok);
    event_base_loop(base, EVLOOP_NONBLOCK);
}

static size_t queued_file_len(struct zf_exchange *ex)
{
    pthread_mutex_lock(&ex->lock);
    struct zf_segment *t = ex->seg_tail;
    size_t n = t && t->type == ZF_SEG_FILE ? t->len : 0;
    pthread_mutex_unlock(&ex->lock);
    return n;
}

static void test_big_chunk_in_memory(void)
{
    /* a chunk far over output_buffer is queued as it is, never spooled,
     * and leaves in pieces of at most ZF_TAKE_MAX */
    static char big[3 << 20];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (char)(i % 253);
    zf_cfg.output_buffer = 1u << 20;
    struct zf_exchange *ex = started();
    CHECK_EQ_INT(zf_exchange_send_data(ex, big, sizeof big), ZF_OK);
    CHECK(ex->spool_fd < 0);
    CHECK_EQ_INT(zf_exchange_spooled(), 0);
    CHECK(zf_exchange_buffered() >= sizeof big);
    CHECK(zf_exchange_congested(ex));
    worker_done(ex, 1);
    CHECK(zf_exchange_take_headers(ex));
    size_t off = 0, pieces = 0;
    int finished = 0, failed = 0;
    struct zf_segment *s;
    while ((s = zf_exchange_take(ex, &finished, &failed)) != NULL) {
        CHECK(s->type == ZF_SEG_DATA);
        CHECK(s->len <= ZF_TAKE_MAX);
        CHECK(off + s->len <= sizeof big && memcmp(s->data, big + off, s->len) == 0);
        off += s->len;
        pieces++;
        zf_segment_free(s);
    }
    CHECK_EQ_INT(off, sizeof big);
    CHECK_EQ_INT(pieces, (sizeof big + ZF_TAKE_MAX - 1) / ZF_TAKE_MAX);
    CHECK(finished && !failed);
    CHECK_EQ_INT(zf_exchange_buffered(), 0);
    zf_exchange_release(ex);
    CHECK_EQ_INT(zf_exchange_count(), 0);
}

static void test_spooled_writes_handed_over_at_once(void)
{
    /* once the queue is full, write() bytes spool; each is queued for the
     * loop at once, not per MiB (long-poll, server-sent events) */
    char buf[1000];
    memset(buf, 'x', sizeof buf);
    zf_cfg.output_buffer = sizeof buf;
    struct zf_exchange *ex = started();
    CHECK_EQ_INT(zf_exchange_send_data(ex, buf, sizeof buf), ZF_OK);
    CHECK(ex->spool_fd < 0);
    for (size_t i = 1; i <= 10; i++) {
        CHECK_EQ_INT(zf_exchange_send_data(ex, "0123456789", 10), ZF_OK);
        CHECK_EQ_INT(queued_file_len(ex), 10 * i);
        CHECK_EQ_INT(zf_exchange_spooled(), 10 * i);
    }
    zf_exchange_abort(ex); /* the client leaves: the spool no longer counts */
    CHECK_EQ_INT(zf_exchange_spooled(), 0);
    CHECK_EQ_INT(zf_exchange_buffered(), 0);
    errno = 0;
    CHECK_EQ_INT(zf_exchange_send_data(ex, "x", 1), ZF_ERROR);
    CHECK_EQ_INT(errno, ECONNABORTED);
    worker_done(ex, 0);
    CHECK_EQ_INT(zf_exchange_count(), 0);
}

static void test_body_waits_for_headers(void)
{
    /* the bridge queues the first bytes before the headers: the protocol
     * gets nothing until the headers are out, and a worker that ends
     * without headers leaves a finished exchange with no body to send */
    zf_cfg.output_buffer = 1u << 20;
    struct zf_exchange *ex = zf_exchange_new(&quiet_ops, NULL, NULL);
    ex->refs++;
    CHECK_EQ_INT(zf_exchange_send_data(ex, "abc", 3), ZF_OK);
    int finished = 1, failed = 1;
    CHECK(!zf_exchange_take_headers(ex));
    CHECK(zf_exchange_take(ex, &finished, &failed) == NULL);
    CHECK(!finished);
    struct zf_headers h = {0};
    CHECK_EQ_INT(zf_exchange_send_headers(ex, 200, strdup("200 OK"), &h, 3), ZF_OK);
    CHECK(zf_exchange_take_headers(ex));
    struct zf_segment *s = zf_exchange_take(ex, &finished, &failed);
    CHECK(s && s->len == 3 && memcmp(s->data, "abc", 3) == 0);
    zf_segment_free(s);
    worker_done(ex, 1);
    zf_exchange_release(ex);

    ex = zf_exchange_new(&quiet_ops, NULL, NULL);
    ex->refs++;
    CHECK_EQ_INT(zf_exchange_send_data(ex, "abc", 3), ZF_OK);
    worker_done(ex, 0);
    CHECK(zf_exchange_take(ex, &finished, &failed) == NULL);
    CHECK(finished && failed);
    zf_exchange_release(ex);
    CHECK_EQ_INT(zf_exchange_count(), 0);
}

static void test_budget_evicts_biggest(void)
{
    static char buf[6000];
    zf_cfg.output_buffer = 1u << 20;
    zf_cfg.max_buffered = 8000;
    struct zf_exchange *a = started(), *b = started();
    CHECK_EQ_INT(zf_exchange_send_data(a, buf, 5000), ZF_OK);
    CHECK_EQ_INT(zf_exchange_send_data(b, buf, 6000), ZF_OK);
    CHECK_EQ_INT(zf_exchange_buffered(), 11000);
    nevicted = 0;
    CHECK_EQ_INT(zf_exchange_enforce_budget(), 1);
    CHECK_EQ_INT(nevicted, 1);
    CHECK(evicted[0] == b);
    CHECK(zf_exchange_aborted(b) && !zf_exchange_aborted(a));
    CHECK_EQ_INT(zf_exchange_buffered(), 5000);
    CHECK_EQ_INT(zf_exchange_enforce_budget(), 0); /* within it now */
    /* the same through the worker's trigger: the loop evicts */
    CHECK_EQ_INT(zf_exchange_send_data(a, buf, 6000), ZF_OK);
    event_base_loop(base, EVLOOP_NONBLOCK);
    CHECK_EQ_INT(nevicted, 2);
    CHECK(evicted[1] == a);
    worker_done(a, 0);
    worker_done(b, 0);
    zf_cfg.max_buffered = 0;
    CHECK_EQ_INT(zf_exchange_count(), 0);
}

int main(void)
{
    static struct zf_server srv;
    zf_srv = &srv;
    zf_core_config_register();
    int fds = zf_test_count_fds();
    for (size_t i = 0; i < TOTAL; i++)
        expect[i] = (char)(i * 7 + i / 251);
    evthread_use_pthreads();
    base = event_base_new();
    CHECK_EQ_INT(zf_exchange_init_loop(base), ZF_OK);

    /* a reader that keeps up: everything in memory, in order */
    zf_cfg.output_buffer = 1u << 30;
    run_one(0);
    CHECK(!saw_file);
    CHECK_EQ_INT(zf_exchange_count(), 0);

    /* a reader that takes nothing until the end: the worker spools to a
     * file beyond output_buffer instead of waiting, content still exact */
    zf_cfg.output_buffer = 20000;
    run_one(1);
    CHECK(saw_file);
    /* spooled pieces merge into one queued segment: one descriptor, not one
     * per MiB, however long the client stalls */
    CHECK_EQ_INT(file_segs, 1);
    CHECK_EQ_INT(zf_exchange_count(), 0);

    /* the client goes away before the worker starts: sends fail, the
     * exchange is freed once the worker lets go, on_output is never called */
    struct zf_exchange *ex = zf_exchange_new(&never_ops, NULL, NULL);
    ex->refs++;
    pthread_t t;
    pthread_create(&t, NULL, aborted_worker, ex);
    zf_exchange_abort(ex);
    CHECK_EQ_INT(zf_exchange_count(), 1);
    struct event *tick = event_new(base, -1, EV_PERSIST, stop_loop, NULL);
    struct timeval tv = {0, 10000};
    event_add(tick, &tv);
    event_base_dispatch(base);
    pthread_join(t, NULL);
    event_free(tick);
    CHECK_EQ_INT(zf_exchange_count(), 0);

    /* target splitting, including absolute-form */
    ex = zf_exchange_new(&ops, NULL, NULL);
    const char *tg = "http://example.org:80/a%20b?x=1&y";
    CHECK_EQ_INT(zf_exchange_set_target(ex, "HEAD", 4, tg, strlen(tg)), ZF_OK);
    CHECK(strcmp(ex->path, "/a%20b") == 0);
    CHECK(strcmp(ex->query, "x=1&y") == 0);
    CHECK(ex->is_head);
    CHECK_EQ_INT(zf_exchange_set_target(ex, "GET", 3, "/", 1), ZF_OK);
    CHECK(strcmp(ex->path, "/") == 0 && strcmp(ex->query, "") == 0 && !ex->is_head);
    /* a fragment never reaches the app */
    CHECK_EQ_INT(zf_exchange_set_target(ex, "GET", 3, "/fz#frag", 8), ZF_OK);
    CHECK(strcmp(ex->path, "/fz") == 0 && strcmp(ex->query, "") == 0);
    CHECK(strcmp(ex->target, "/fz") == 0);
    CHECK_EQ_INT(zf_exchange_set_target(ex, "GET", 3, "/p?a=1#f?b", 10), ZF_OK);
    CHECK(strcmp(ex->path, "/p") == 0 && strcmp(ex->query, "a=1") == 0);
    tg = "http://h/x#y";
    CHECK_EQ_INT(zf_exchange_set_target(ex, "GET", 3, tg, strlen(tg)), ZF_OK);
    CHECK(strcmp(ex->path, "/x") == 0 && strcmp(ex->query, "") == 0);
    zf_exchange_release(ex);
    CHECK_EQ_INT(zf_exchange_count(), 0);

    test_big_chunk_in_memory();
    test_spooled_writes_handed_over_at_once();
    test_budget_evicts_biggest();
    test_body_waits_for_headers();

    zf_exchange_free_loop();
    event_base_free(base);
    zf_config_free();
    CHECK_EQ_INT(zf_test_count_fds(), fds);
    return zf_test_done("exchange");
}
