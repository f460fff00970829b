/* The protocol-neutral exchange: request in, response queue out, and the
 * wake-up that carries worker output to the loop thread. */
#include <errno.h>
#include <malloc.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "config.h"
#include "exchange.h"
#include "filter.h"

/* While the loop is behind, small chunks are copied into the room left in
 * the queued tail segment, allocated at least this big: a stalled body of
 * one-byte chunks costs memory for its bytes, not a segment per byte. */
#define DATA_MIN_CAP 4096u

static struct {
    pthread_mutex_t lock;
    struct zf_exchange *head, *tail;
    struct event *ev;
    /* loop-only scratch space for the drained list */
    struct zf_exchange **batch;
    int *gone;
    size_t cap;
    size_t alive;
    struct zf_exchange *all; /* loop only: every live exchange */
    struct zf_hold *holds;   /* loop only: every hold not gone */
    size_t nholds;
    struct event *budget_ev; /* a worker saw a total over its budget */
    atomic_int budget_pending;
} posts = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* Server-wide output totals (any thread): memory of the DATA segments
 * queued in exchanges or held by transports, and bytes in spool files.
 * gone_total: the part of mem_total held by transports of connections
 * that are closing (evicted or closed), which the budget no longer weighs. */
static atomic_size_t mem_total, spool_total, gone_total;

/* What one connection's transport holds (exchange.h). */
struct zf_hold {
    size_t bytes;
    int refs; /* the connection's (until zf_hold_close) + one per counted segment */
    int gone; /* closed or evicted: its bytes are in gone_total */
    void (*evict)(void *proto);
    void *proto;
    struct zf_conn *conn;        /* for log lines */
    struct zf_hold *prev, *next; /* posts.holds while not gone */
};

static void over_budget(void);
static size_t budget_mem(void);

/* The memory total is over server.max_buffered (the loop is evicting):
 * a response whose client has not taken what is queued stops producing
 * (zf_exchange_congested), so the slow readers do not pile up more while
 * the biggest holders are closed. Any thread. */
static int server_pressed(void)
{
    return zf_cfg.max_buffered && budget_mem() > zf_cfg.max_buffered;
}

/* ---------------------------------------------------------------- headers */

int zf_headers_add(struct zf_headers *h, const char *name, size_t nlen, const char *value,
                   size_t vlen)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 16;
        struct zf_header *v = realloc(h->v, cap * sizeof *v);
        if (!v)
            return ZF_ERROR;
        h->v = v;
        h->cap = cap;
    }
    char *n = malloc(nlen + 1);
    char *val = malloc(vlen + 1);
    if (!n || !val) {
        free(n);
        free(val);
        return ZF_ERROR;
    }
    memcpy(n, name, nlen);
    n[nlen] = 0;
    memcpy(val, value, vlen);
    val[vlen] = 0;
    h->v[h->n++] = (struct zf_header){n, val, nlen, vlen};
    return ZF_OK;
}

const char *zf_headers_get(const struct zf_headers *h, const char *name)
{
    for (size_t i = 0; i < h->n; i++)
        if (strcasecmp(h->v[i].name, name) == 0)
            return h->v[i].value;
    return NULL;
}

void zf_headers_free(struct zf_headers *h)
{
    for (size_t i = 0; i < h->n; i++) {
        free(h->v[i].name);
        free(h->v[i].value);
    }
    free(h->v);
    h->v = NULL;
    h->n = h->cap = 0;
}

void zf_segment_free(struct zf_segment *s)
{
    if (!s)
        return;
    if (s->type == ZF_SEG_FILE && s->fd >= 0)
        close(s->fd);
    free(s);
}

/* A DATA segment with room for cap bytes, n of them copied from p. NULL
 * when out of memory. */
static struct zf_segment *data_segment(const void *p, size_t n, size_t cap)
{
    struct zf_segment *s = malloc(sizeof *s + cap);
    if (!s)
        return NULL;
    s->next = NULL;
    s->type = ZF_SEG_DATA;
    s->fd = -1;
    s->offset = 0;
    s->len = n;
    s->cap = cap;
    memcpy(s->data, p, n);
    return s;
}

static void free_segments(struct zf_segment *s)
{
    while (s) {
        struct zf_segment *next = s->next;
        zf_segment_free(s);
        s = next;
    }
}

/* ----------------------------------------------------------- protocol side */

struct zf_exchange *zf_exchange_new(const struct zf_exchange_ops *ops, void *proto,
                                    struct zf_conn *conn)
{
    struct zf_exchange *ex = calloc(1, sizeof *ex);
    if (!ex)
        return NULL;
    pthread_mutex_init(&ex->lock, NULL);
    ex->ops = ops;
    ex->proto = proto;
    ex->conn = conn;
    ex->conn_id = conn ? conn->id : 0;
    ex->protocol = "HTTP/1.1";
    ex->scheme = "http";
    ex->channel = "http";
    ex->content_length = -1;
    ex->spool_fd = -1;
    ex->errors_level = ZF_LOG_ERROR;
    ex->refs = 1;
    zf_body_init(&ex->body);
    if (conn) {
        snprintf(ex->remote_addr, sizeof ex->remote_addr, "%s", conn->peer_addr);
        ex->remote_port = conn->peer_port;
    }
    posts.alive++;
    ex->all_next = posts.all;
    if (posts.all)
        posts.all->all_prev = ex;
    posts.all = ex;
    return ex;
}

static char *dup_n(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

int zf_exchange_set_target(struct zf_exchange *ex, const char *method, size_t mlen,
                           const char *target, size_t tlen)
{
    free(ex->method);
    free(ex->target);
    free(ex->path);
    free(ex->query);
    /* A fragment is the client's business (RFC 9112 3.2 leaves it out of
     * the request-target); one sent anyway must not reach the app. */
    const char *hash = memchr(target, '#', tlen);
    ex->fragment = hash != NULL;
    if (hash)
        tlen = (size_t)(hash - target);
    ex->method = dup_n(method, mlen);
    ex->target = dup_n(target, tlen);
    const char *p = target, *end = target + tlen;
    /* absolute-form: keep only path and query */
    if (tlen > 7 && (strncasecmp(p, "http://", 7) == 0 || strncasecmp(p, "https://", 8) == 0)) {
        p = memchr(p, ':', tlen) + 3;
        while (p < end && *p != '/' && *p != '?')
            p++;
    }
    const char *q = memchr(p, '?', (size_t)(end - p));
    const char *path_end = q ? q : end;
    if (path_end == p)
        ex->path = dup_n("/", 1);
    else
        ex->path = dup_n(p, (size_t)(path_end - p));
    ex->query = q ? dup_n(q + 1, (size_t)(end - q - 1)) : dup_n("", 0);
    ex->is_head = mlen == 4 && memcmp(method, "HEAD", 4) == 0;
    if (!ex->method || !ex->target || !ex->path || !ex->query)
        return ZF_ERROR;
    return ZF_OK;
}

/* Gives back what ex counts in the server-wide spool total (its file goes
 * away with it, or it was evicted and writes no more). */
static void drop_spool_count(struct zf_exchange *ex)
{
    pthread_mutex_lock(&ex->lock);
    size_t n = ex->spool_held;
    ex->spool_held = 0;
    pthread_mutex_unlock(&ex->lock);
    if (n)
        atomic_fetch_sub(&spool_total, n);
}

static void exchange_free(struct zf_exchange *ex)
{
    if (ex->all_prev)
        ex->all_prev->all_next = ex->all_next;
    else
        posts.all = ex->all_next;
    if (ex->all_next)
        ex->all_next->all_prev = ex->all_prev;
    drop_spool_count(ex);
    atomic_fetch_sub(&mem_total, ex->app_held);
    free_segments(ex->seg_head);
    zf_headers_free(&ex->req_headers);
    zf_headers_free(&ex->resp_headers);
    zf_headers_free(&ex->env_extra);
    zf_body_free(&ex->body);
    free(ex->method);
    free(ex->target);
    free(ex->path);
    free(ex->query);
    free(ex->status_line);
    free(ex->remote_user);
    if (ex->spool_fd >= 0)
        close(ex->spool_fd);
    pthread_mutex_destroy(&ex->lock);
    free(ex);
    posts.alive--;
}

static void put_ref(struct zf_exchange *ex)
{
    if (--ex->refs == 0)
        exchange_free(ex);
}

/* Pool callback: a queued request that will not run (it waited past
 * server.queue_timeout, or the server stops) is answered 503 in place of
 * the worker. Any thread but the pool's lock. */
static void on_cancel(struct zf_job *job, enum zf_job_cancel why, uint64_t waited_ms)
{
    struct zf_exchange *ex = (struct zf_exchange *)job;
    if (zf_exchange_aborted(ex)) {
        /* the client left while it waited: nobody to answer */
        zf_exchange_finish(ex, 0);
        return;
    }
    if (why == ZF_JOB_EXPIRED) {
        zf_log(ZF_LOG_WARN, NULL,
               "#%llu %s %s waited %.1f s for a worker (server.queue_timeout %.1f s): "
               "503 without running it",
               (unsigned long long)ex->conn_id, ex->method, ex->target, (double)waited_ms / 1000.0,
               (double)zf_pool_cfg.queue_timeout_ms / 1000.0);
        zf_exchange_respond(ex, 503, "1",
                            "the server is too busy: the request waited too "
                            "long for a worker\n");
    } else {
        zf_log(ZF_LOG_INFO, NULL, "#%llu %s %s: the server is stopping: 503 without running it",
               (unsigned long long)ex->conn_id, ex->method, ex->target);
        zf_exchange_respond(ex, 503, "5", "the server is shutting down\n");
    }
}

int zf_exchange_set_path(struct zf_exchange *ex, const char *path, size_t len)
{
    char *p = dup_n(path, len);
    if (!p)
        return ZF_ERROR;
    free(ex->path);
    ex->path = p;
    return ZF_OK;
}

static const struct zf_app_jobs *app_jobs;

void zf_exchange_set_app(const struct zf_app_jobs *app)
{
    app_jobs = app;
}

void zf_exchange_dispatch(struct zf_exchange *ex)
{
    ex->refs++;
    ex->worker_holds = 1;
    /* A filter that answers calls zf_exchange_finish, whose final post drops
     * the reference taken above, as a worker's would. */
    if (zf__filters_request(ex) == ZF_DONE)
        return;
    if (!app_jobs) {
        zf_log(ZF_LOG_ERROR, ex->conn, "no application side to run the request");
        zf_exchange_finish(ex, 0);
        return;
    }
    ex->job.run = app_jobs->run;
    ex->job.cancel = on_cancel;
    int rc = zf_pool_admit(&ex->job);
    if (rc == ZF_AGAIN) {
        zf_log(ZF_LOG_WARN, ex->conn,
               "%s %s: %ld requests already wait for a worker (server.max_queued): 503", ex->method,
               ex->target, zf_pool_cfg.max_queued);
        zf_exchange_respond(ex, 503, "1",
                            "the server is too busy: too many requests wait "
                            "for a worker\n");
    } else if (rc == ZF_DECLINED) {
        on_cancel(&ex->job, ZF_JOB_SHUTDOWN, 0);
    }
}

void zf_exchange_respond(struct zf_exchange *ex, int status, const char *retry_after,
                         const char *body)
{
    struct zf_headers h = {0};
    size_t n = strlen(body);
    int ok = zf_headers_add(&h, "Content-Type", 12, "text/plain; charset=utf-8", 25) == ZF_OK;
    if (ok && retry_after)
        ok = zf_headers_add(&h, "Retry-After", 11, retry_after, strlen(retry_after)) == ZF_OK;
    if (!ok) {
        /* out of memory: the protocol answers "no response" as for an app */
        zf_headers_free(&h);
        zf_exchange_finish(ex, 0);
        return;
    }
    if (zf_exchange_send_headers(ex, status, NULL, &h, (int64_t)n) != ZF_OK ||
        zf_exchange_send_data(ex, body, n) != ZF_OK) {
        zf_exchange_finish(ex, 0);
        return;
    }
    zf_exchange_finish(ex, 1);
}

int zf_exchange_take_headers(struct zf_exchange *ex)
{
    if (ex->headers_taken)
        return 1;
    pthread_mutex_lock(&ex->lock);
    int ready = ex->headers_ready;
    pthread_mutex_unlock(&ex->lock);
    ex->headers_taken = ready;
    return ready;
}

/* Unlinks the head segment (lock held). */
static void pop_head(struct zf_exchange *ex)
{
    struct zf_segment *s = ex->seg_head;
    ex->seg_head = s->next;
    if (!ex->seg_head)
        ex->seg_tail = NULL;
    s->next = NULL;
    if (s->type == ZF_SEG_DATA) {
        ex->seg_held -= s->cap;
        atomic_fetch_sub(&mem_total, s->cap);
    }
}

/* Marks the body failed and drops what is queued (lock held); returns the
 * dropped segments for the caller to free after unlocking. */
static struct zf_segment *fail_locked(struct zf_exchange *ex)
{
    struct zf_segment *dropped = ex->seg_head;
    ex->seg_head = ex->seg_tail = NULL;
    atomic_fetch_sub(&mem_total, ex->seg_held);
    ex->seg_mem = ex->seg_held = 0;
    ex->failed = 1;
    atomic_store(&ex->aborted, 1);
    return dropped;
}

struct zf_segment *zf_exchange_take(struct zf_exchange *ex, int *finished, int *failed)
{
    struct zf_segment *dropped = NULL;
    pthread_mutex_lock(&ex->lock);
    /* body bytes queued before the headers wait for them (the bridge
     * queues the first bytes first, so a failure leaves nothing sent) */
    struct zf_segment *s = ex->headers_ready ? ex->seg_head : NULL;
    if (s && s->type == ZF_SEG_DATA && (s->offset > 0 || s->len > ZF_TAKE_MAX)) {
        /* a big chunk leaves in pieces: the rest stays queued (and counted
         * against this exchange) until the protocol has room for it */
        size_t left = s->len - (size_t)s->offset;
        size_t n = left < ZF_TAKE_MAX ? left : ZF_TAKE_MAX;
        struct zf_segment *piece = data_segment(s->data + s->offset, n, n);
        if (piece) {
            ex->seg_mem -= n;
            s->offset += (off_t)n;
            if ((size_t)s->offset == s->len) {
                pop_head(ex);
                dropped = s;
            }
        } else {
            zf_log(ZF_LOG_ERROR, ex->conn, "out of memory while sending a response");
            dropped = fail_locked(ex);
        }
        s = piece;
    } else if (s) {
        pop_head(ex);
        if (s->type == ZF_SEG_DATA)
            ex->seg_mem -= s->len;
        if (s->type == ZF_SEG_FILE && s->fd < 0) {
            /* a piece of the spool file: the taker gets its own descriptor */
            s->fd = dup(ex->spool_fd);
            if (s->fd < 0) {
                zf_log(ZF_LOG_ERROR, ex->conn, "cannot dup the response spool file: %s",
                       strerror(errno));
                free(s);
                s = NULL;
                dropped = fail_locked(ex);
            }
        }
    }
    *finished = (!ex->seg_head || !ex->headers_ready) && ex->done;
    *failed = ex->failed;
    int resume = ex->suspended && ex->seg_mem <= zf_cfg.output_buffer / 2;
    if (resume)
        ex->suspended = 0;
    pthread_mutex_unlock(&ex->lock);
    free_segments(dropped);
    if (resume)
        zf_pool_push_to(&ex->job, ex->resume_worker);
    return s;
}

size_t zf_exchange_pending(struct zf_exchange *ex)
{
    pthread_mutex_lock(&ex->lock);
    size_t n = ex->seg_mem;
    pthread_mutex_unlock(&ex->lock);
    return n;
}

static void let_go(struct zf_exchange *ex)
{
    ex->ops = NULL;
    ex->hold = NULL;
    ex->proto = NULL;
    ex->conn = NULL;
    put_ref(ex);
}

void zf_exchange_release(struct zf_exchange *ex)
{
    let_go(ex);
}

void zf_exchange_abort(struct zf_exchange *ex)
{
    atomic_store(&ex->aborted, 1);
    /* still waiting in the queue: it goes now, unrun, instead of holding a
     * queue slot (server.max_queued) and its request body until a worker
     * gets to it; the worker's reference goes as if it had run */
    if (ex->worker_holds && zf_pool_withdraw(&ex->job) == ZF_OK) {
        zf_log(ZF_LOG_DEBUG, ex->conn, "%s %s: client gone while queued: dropped unrun", ex->method,
               ex->target);
        zf_exchange_finish(ex, 0);
    }
    pthread_mutex_lock(&ex->lock);
    struct zf_segment *s = ex->seg_head;
    ex->seg_head = ex->seg_tail = NULL;
    atomic_fetch_sub(&mem_total, ex->seg_held);
    ex->seg_mem = ex->seg_held = 0;
    int resume = ex->suspended; /* so the bridge can close the app's iterable */
    ex->suspended = 0;
    pthread_mutex_unlock(&ex->lock);
    free_segments(s);
    drop_spool_count(ex); /* aborted: the worker spools no more */
    if (resume)
        zf_pool_push_to(&ex->job, ex->resume_worker);
    let_go(ex);
}

/* ------------------------------------------------------------- worker side */

/* Tells the loop that ex has news. final: the worker is done with ex and
 * will never touch it again. Any thread. */
static void post(struct zf_exchange *ex, int final)
{
    pthread_mutex_lock(&posts.lock);
    if (final)
        ex->worker_gone = 1;
    if (!ex->posted) {
        ex->posted = 1;
        ex->post_next = NULL;
        if (posts.tail)
            posts.tail->post_next = ex;
        else
            posts.head = ex;
        posts.tail = ex;
    }
    pthread_mutex_unlock(&posts.lock);
    event_active(posts.ev, EV_READ, 0);
}

int zf_exchange_aborted(struct zf_exchange *ex)
{
    return atomic_load(&ex->aborted);
}

int zf_exchange_send_headers(struct zf_exchange *ex, int status, char *status_line,
                             struct zf_headers *headers, int64_t content_length)
{
    if (zf_exchange_aborted(ex)) {
        free(status_line);
        zf_headers_free(headers);
        return ZF_ERROR;
    }
    zf__filters_response(ex, status, headers);
    pthread_mutex_lock(&ex->lock);
    ex->status = status;
    ex->status_line = status_line;
    ex->resp_headers = *headers;
    memset(headers, 0, sizeof *headers);
    ex->content_length = content_length;
    ex->headers_ready = 1;
    pthread_mutex_unlock(&ex->lock);
    post(ex, 0);
    return ZF_OK;
}

/* Appends a segment to the queue and wakes the loop. */
static void queue_segment(struct zf_exchange *ex, struct zf_segment *s)
{
    pthread_mutex_lock(&ex->lock);
    s->next = NULL;
    if (ex->seg_tail)
        ex->seg_tail->next = s;
    else
        ex->seg_head = s;
    ex->seg_tail = s;
    int over = 0;
    if (s->type == ZF_SEG_DATA) {
        ex->seg_mem += s->len;
        ex->seg_held += s->cap;
        over = atomic_fetch_add(&mem_total, s->cap) + s->cap > zf_cfg.max_buffered &&
               zf_cfg.max_buffered;
    }
    pthread_mutex_unlock(&ex->lock);
    if (over)
        over_budget();
    post(ex, 0);
}

static int queue_file(struct zf_exchange *ex, int fd, off_t offset, size_t len)
{
    struct zf_segment *s = malloc(sizeof *s);
    if (!s) {
        close(fd);
        return ZF_ERROR;
    }
    s->type = ZF_SEG_FILE;
    s->fd = fd;
    s->offset = offset;
    s->len = len;
    s->cap = 0;
    queue_segment(ex, s);
    return ZF_OK;
}

/* Hands the spooled bytes not yet queued to the loop. A spool segment holds
 * no descriptor of its own (fd -1): the loop dups the exchange's spool file
 * when it takes the segment, and consecutive pieces are merged into the
 * queued tail, so a stalled client costs one descriptor, not one per
 * write. Returns ZF_OK or ZF_ERROR (ENOMEM). */
static int flush_spool(struct zf_exchange *ex)
{
    if (ex->spool_off == ex->spool_sent)
        return ZF_OK;
    off_t from = ex->spool_sent;
    size_t n = (size_t)(ex->spool_off - from);
    pthread_mutex_lock(&ex->lock);
    struct zf_segment *t = ex->seg_tail;
    if (t && t->type == ZF_SEG_FILE && t->fd < 0 && t->offset + (off_t)t->len == from) {
        t->len += n;
        ex->spool_sent = ex->spool_off;
        pthread_mutex_unlock(&ex->lock);
        post(ex, 0);
        return ZF_OK;
    }
    pthread_mutex_unlock(&ex->lock);
    struct zf_segment *s = malloc(sizeof *s);
    if (!s) {
        errno = ENOMEM;
        return ZF_ERROR;
    }
    s->type = ZF_SEG_FILE;
    s->fd = -1;
    s->offset = from;
    s->len = n;
    s->cap = 0;
    ex->spool_sent = ex->spool_off;
    queue_segment(ex, s);
    return ZF_OK;
}

/* Appends bytes to the exchange's spool file and hands them to the loop at
 * once (a client that keeps up gets every write without waiting for more).
 * Returns ZF_OK, or ZF_ERROR with errno set and the failure logged. */
static int spool_data(struct zf_exchange *ex, const void *p, size_t n)
{
    if (ex->spool_fd < 0) {
        ex->spool_fd = zf_tmpfile(zf_cfg.tmp_dir);
        if (ex->spool_fd < 0) {
            int e = errno;
            zf_log(ZF_LOG_ERROR, NULL, "#%llu cannot create a response spool file in %s: %s",
                   (unsigned long long)ex->conn_id, zf_cfg.tmp_dir, strerror(e));
            errno = e;
            return ZF_ERROR;
        }
        zf_log(ZF_LOG_DEBUG, NULL, "#%llu client is slow: spooling what write() sends",
               (unsigned long long)ex->conn_id);
    }
    if (zf_pwrite_all(ex->spool_fd, p, n, ex->spool_off) != ZF_OK) {
        int e = errno;
        zf_log(ZF_LOG_ERROR, NULL, "#%llu cannot write the response spool file in %s: %s",
               (unsigned long long)ex->conn_id, zf_cfg.tmp_dir, strerror(e));
        errno = e;
        return ZF_ERROR;
    }
    ex->spool_off += (off_t)n;
    pthread_mutex_lock(&ex->lock);
    int count = !zf_exchange_aborted(ex);
    if (count)
        ex->spool_held += n;
    pthread_mutex_unlock(&ex->lock);
    if (count && atomic_fetch_add(&spool_total, n) + n > zf_cfg.max_spool && zf_cfg.max_spool)
        over_budget();
    return flush_spool(ex);
}

int zf_exchange_send_data(struct zf_exchange *ex, const void *p, size_t n)
{
    if (zf_exchange_aborted(ex)) {
        errno = ECONNABORTED;
        return ZF_ERROR;
    }
    if (n == 0)
        return ZF_OK;
    pthread_mutex_lock(&ex->lock);
    if (ex->seg_mem >= zf_cfg.output_buffer) {
        pthread_mutex_unlock(&ex->lock);
        return spool_data(ex, p, n);
    }
    /* coalesce only once the loop is behind: a client that keeps up gets
     * each chunk as the app made it */
    struct zf_segment *t = ex->seg_tail;
    if (t && t->type == ZF_SEG_DATA && ex->seg_mem >= DATA_MIN_CAP && t->cap - t->len >= n) {
        memcpy(t->data + t->len, p, n);
        t->len += n;
        ex->seg_mem += n;
        pthread_mutex_unlock(&ex->lock);
        post(ex, 0);
        return ZF_OK;
    }
    pthread_mutex_unlock(&ex->lock);
    struct zf_segment *s = data_segment(p, n, n < DATA_MIN_CAP ? DATA_MIN_CAP : n);
    if (!s) {
        errno = ENOMEM;
        return ZF_ERROR;
    }
    queue_segment(ex, s);
    return ZF_OK;
}

int zf_exchange_send_file(struct zf_exchange *ex, int fd, off_t offset, size_t len)
{
    if (zf_exchange_aborted(ex)) {
        close(fd);
        return ZF_ERROR;
    }
    if (len == 0) {
        close(fd);
        return ZF_OK;
    }
    return queue_file(ex, fd, offset, len);
}

int zf_exchange_congested(struct zf_exchange *ex)
{
    pthread_mutex_lock(&ex->lock);
    int over = ex->seg_mem >= zf_cfg.output_buffer || (ex->seg_mem && server_pressed());
    pthread_mutex_unlock(&ex->lock);
    return over;
}

int zf_exchange_suspend(struct zf_exchange *ex, int worker_index, zf_job_fn resume)
{
    ex->resume_worker = worker_index;
    ex->job.run = resume;
    pthread_mutex_lock(&ex->lock);
    int wait = !zf_exchange_aborted(ex) &&
               (ex->seg_mem > zf_cfg.output_buffer / 2 || (ex->seg_mem && server_pressed()));
    if (wait)
        ex->suspended = 1;
    pthread_mutex_unlock(&ex->lock);
    return wait ? ZF_OK : ZF_AGAIN;
}

void zf_exchange_app_holds(struct zf_exchange *ex, size_t n)
{
    pthread_mutex_lock(&ex->lock);
    size_t was = ex->app_held;
    ex->app_held = n;
    pthread_mutex_unlock(&ex->lock);
    if (n > was) {
        size_t total = atomic_fetch_add(&mem_total, n - was) + (n - was);
        if (zf_cfg.max_buffered && total > zf_cfg.max_buffered)
            over_budget();
    } else if (n < was) {
        atomic_fetch_sub(&mem_total, was - n);
    }
}

void zf_exchange_finish(struct zf_exchange *ex, int ok)
{
    /* The spool file stays open until the exchange is freed: the loop dups
     * it as it takes the queued pieces. */
    if (ex->spool_fd >= 0 && !zf_exchange_aborted(ex) && flush_spool(ex) != ZF_OK)
        ok = 0;
    /* Nobody reads the request body any more: free it here, so that
     * closing a big spool file (the kernel drops its pages) costs this
     * worker, not the loop. */
    zf_body_free(&ex->body);
    pthread_mutex_lock(&ex->lock);
    ex->done = 1;
    ex->failed = !ok;
    pthread_mutex_unlock(&ex->lock);
    post(ex, 1);
}

const char *zf_exchange_remote_user(struct zf_exchange *ex)
{
    pthread_mutex_lock(&ex->lock);
    const char *u = ex->done ? ex->remote_user : NULL;
    pthread_mutex_unlock(&ex->lock);
    return u;
}

/* --------------------------------------------------------------- loop side */

/* Loop thread: drains the posted list. Each exchange is copied out with its
 * "worker gone" flag read under the lock, so a worker that posts again while
 * this runs is seen on the next round, and the worker's reference is
 * dropped exactly once, after its final post. */
static void on_posts(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    size_t n = 0;
    pthread_mutex_lock(&posts.lock);
    for (struct zf_exchange *ex = posts.head; ex; ex = ex->post_next)
        n++;
    if (n > posts.cap) {
        size_t cap = n * 2;
        struct zf_exchange **b = realloc(posts.batch, cap * sizeof *b);
        int *g = b ? realloc(posts.gone, cap * sizeof *g) : NULL;
        if (b)
            posts.batch = b;
        if (!b || !g) {
            pthread_mutex_unlock(&posts.lock);
            event_active(posts.ev, EV_READ, 0); /* try again later */
            return;
        }
        posts.gone = g;
        posts.cap = cap;
    }
    size_t i = 0;
    for (struct zf_exchange *ex = posts.head; ex; ex = ex->post_next) {
        posts.batch[i] = ex;
        posts.gone[i] = ex->worker_gone;
        ex->posted = 0;
        i++;
    }
    posts.head = posts.tail = NULL;
    pthread_mutex_unlock(&posts.lock);

    for (i = 0; i < n; i++) {
        struct zf_exchange *ex = posts.batch[i];
        /* over the budget: evict now, before handing out more output (the
         * workers resume as the protocols take), not after the whole batch;
         * every exchange of the batch is kept alive by its worker's
         * reference, an evicted one just has no ops any more */
        if (zf_cfg.max_buffered && budget_mem() > zf_cfg.max_buffered)
            zf_exchange_enforce_budget();
        if (posts.gone[i]) {
            /* keep ex alive through on_output even if the protocol lets go */
            if (ex->ops)
                ex->ops->on_output(ex);
            ex->worker_holds = 0;
            put_ref(ex);
        } else if (ex->ops) {
            ex->ops->on_output(ex);
        }
    }
}

/* ------------------------------------------------------------------ budget */

/* Any thread: a total went over its budget; the loop evicts. */
static void over_budget(void)
{
    if (posts.budget_ev && atomic_exchange(&posts.budget_pending, 1) == 0)
        event_active(posts.budget_ev, EV_READ, 0);
}

static void on_budget(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    atomic_store(&posts.budget_pending, 0);
    zf_exchange_enforce_budget();
}

/* ------------------------------------------------------- transport holds */

struct zf_hold *zf_hold_new(void (*evict)(void *proto), void *proto, struct zf_conn *conn)
{
    struct zf_hold *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->refs = 1;
    h->evict = evict;
    h->proto = proto;
    h->conn = conn;
    posts.nholds++;
    h->next = posts.holds;
    if (posts.holds)
        posts.holds->prev = h;
    posts.holds = h;
    return h;
}

/* The hold stops counting against the budget: its connection is going. */
static void hold_retire(struct zf_hold *h)
{
    if (!h || h->gone)
        return;
    h->gone = 1;
    h->evict = NULL;
    atomic_fetch_add(&gone_total, h->bytes);
    if (h->prev)
        h->prev->next = h->next;
    else
        posts.holds = h->next;
    if (h->next)
        h->next->prev = h->prev;
    h->prev = h->next = NULL;
    h->conn = NULL;
    posts.nholds--;
}

static void hold_put(struct zf_hold *h)
{
    if (--h->refs == 0) {
        hold_retire(h);
        free(h);
    }
}

void zf_hold_close(struct zf_hold *h)
{
    if (!h)
        return;
    hold_retire(h);
    hold_put(h);
}

size_t zf_hold_bytes(const struct zf_hold *h)
{
    return h ? h->bytes : 0;
}

/* The output buffer let go of a counted segment. */
static void hold_segment_gone(const void *data, size_t len, void *arg)
{
    (void)data;
    (void)len;
    struct zf_segment *s = arg;
    struct zf_hold *h = s->hold;
    if (h) {
        h->bytes -= s->cap;
        atomic_fetch_sub(&mem_total, s->cap);
        if (h->gone)
            atomic_fetch_sub(&gone_total, s->cap);
        hold_put(h);
    }
    zf_segment_free(s);
}

int zf_hold_add_reference(struct zf_hold *h, struct evbuffer *out, struct zf_segment *s, size_t n)
{
    s->hold = h;
    if (h) {
        h->refs++;
        h->bytes += s->cap;
        if (h->gone)
            atomic_fetch_add(&gone_total, s->cap);
        size_t total = atomic_fetch_add(&mem_total, s->cap) + s->cap;
        if (zf_cfg.max_buffered && total > zf_cfg.max_buffered)
            over_budget();
    }
    if (evbuffer_add_reference(out, s->data, n, hold_segment_gone, s) != 0) {
        hold_segment_gone(s->data, n, s);
        return ZF_ERROR;
    }
    return ZF_OK;
}

void zf_exchange_set_hold(struct zf_exchange *ex, struct zf_hold *h)
{
    ex->hold = h;
}

/* The live, evictable exchange or transport hold holding the most of one
 * total (spool: 1, memory: 0); *most is what it holds. The one holding the
 * most is the one whose client fell furthest behind what the app produced.
 * Returns the exchange, or NULL with *hold set to the hold (or NULL when
 * nothing is evictable). */
static struct zf_exchange *biggest_holder(int spool, size_t *most, struct zf_hold **hold)
{
    struct zf_exchange *victim = NULL;
    *most = 0;
    *hold = NULL;
    for (struct zf_exchange *ex = posts.all; ex; ex = ex->all_next) {
        if (!ex->ops || !ex->ops->evict || zf_exchange_aborted(ex))
            continue;
        pthread_mutex_lock(&ex->lock);
        size_t held = spool ? ex->spool_held : ex->seg_held + ex->app_held;
        pthread_mutex_unlock(&ex->lock);
        if (!spool && ex->hold && !ex->hold->gone)
            held += ex->hold->bytes;
        if (held > *most) {
            *most = held;
            victim = ex;
        }
    }
    if (spool)
        return victim;
    for (struct zf_hold *h = posts.holds; h; h = h->next) {
        if (h->evict && h->bytes > *most) {
            *most = h->bytes;
            *hold = h;
            victim = NULL;
        }
    }
    return victim;
}

/* What the budget weighs of the memory total: without the transports of
 * connections already going. */
static size_t budget_mem(void)
{
    size_t all = atomic_load(&mem_total), gone = atomic_load(&gone_total);
    return all > gone ? all - gone : 0;
}

size_t zf_exchange_enforce_budget(void)
{
    size_t evicted = 0;
    for (int spool = 0; spool < 2; spool++) {
        uint64_t limit = spool ? zf_cfg.max_spool : zf_cfg.max_buffered;
        /* bounded: a protocol whose evict failed to abort is not retried */
        for (size_t tries = posts.alive + posts.nholds; limit && tries; tries--) {
            size_t total = spool ? atomic_load(&spool_total) : budget_mem();
            if (total <= limit)
                break;
            size_t most;
            struct zf_hold *h;
            struct zf_exchange *ex = biggest_holder(spool, &most, &h);
            if (!ex && !h)
                break;
            zf_log(ZF_LOG_WARN, ex ? ex->conn : h->conn,
                   "closing the connection of a slow reader: its response holds %zu bytes %s "
                   "and the server %zu, over server.%s (%llu)",
                   most, spool ? "spooled to disk" : "in memory", total,
                   spool ? "max_spool" : "max_buffered", (unsigned long long)limit);
            if (ex) {
                hold_retire(ex->hold);
                ex->ops->evict(ex); /* may free ex */
            } else {
                void (*evict)(void *) = h->evict;
                void *proto = h->proto;
                hold_retire(h);
                evict(proto);
            }
            evicted++;
        }
    }
    /* what the evicted held goes back to the system, not only to glibc's
     * per-thread arenas, where the RSS would keep it (issue 9) */
    if (evicted)
        malloc_trim(0);
    return evicted;
}

size_t zf_exchange_buffered(void)
{
    return atomic_load(&mem_total);
}

size_t zf_exchange_spooled(void)
{
    return atomic_load(&spool_total);
}

int zf_exchange_init_loop(struct event_base *base)
{
    posts.ev = event_new(base, -1, 0, on_posts, NULL);
    posts.budget_ev = event_new(base, -1, 0, on_budget, NULL);
    return posts.ev && posts.budget_ev ? ZF_OK : ZF_ERROR;
}

void zf_exchange_free_loop(void)
{
    if (posts.ev)
        event_free(posts.ev);
    posts.ev = NULL;
    if (posts.budget_ev)
        event_free(posts.budget_ev);
    posts.budget_ev = NULL;
    free(posts.batch);
    free(posts.gone);
    posts.batch = NULL;
    posts.gone = NULL;
    posts.cap = 0;
}

size_t zf_exchange_count(void)
{
    return posts.alive;
}
