/* The protocol-neutral exchange: one request and its response, as the WSGI
 * bridge sees it. HTTP/1.1, HTTP/2 and every later protocol build the same
 * struct, so the bridge never knows which protocol carried the request.
 *
 * Lifetime and threads:
 *  - The protocol creates it on the loop thread (zf_exchange_new), fills the
 *    request part completely (headers and the whole body) and dispatches it
 *    (zf_exchange_dispatch). From then on the request part is read-only.
 *  - A worker runs the app and produces the response through the
 *    zf_exchange_send_* calls, then zf_exchange_finish. It never blocks on
 *    the client: when the client is slow, the response queue grows up to
 *    wsgi.output_buffer; then an iterator body is suspended
 *    (zf_exchange_congested, zf_exchange_suspend) and a body pushed with
 *    write() spools to a temp file.
 *  - Server-wide, the bytes queued in memory and spooled to disk are
 *    counted (server.max_buffered, server.max_spool). Past a budget the
 *    loop evicts the exchanges that hold the most: ops->evict closes their
 *    connection or resets their stream.
 *  - Each time the worker produces something, the loop calls
 *    ops->on_output(ex) on the loop thread; the protocol pulls the headers
 *    (zf_exchange_take_headers) and segments (zf_exchange_take) as its
 *    transport has room, and calls on_output itself again when it drains.
 *  - The protocol lets go with zf_exchange_release (normal end) or
 *    zf_exchange_abort (client gone: the worker stops producing). The
 *    struct is freed on the loop thread once both sides let go.
 */
#ifndef ZF_EXCHANGE_H
#define ZF_EXCHANGE_H

#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>

#include "log.h"
#include "pool.h"
#include "spool.h"
#include "zfront.h"

struct zf_header {
    char *name;
    char *value;
    size_t name_len;
    size_t value_len;
};

/* A list of header fields in arrival order; names keep their case. */
struct zf_headers {
    struct zf_header *v;
    size_t n;
    size_t cap;
};

/* Copies name and value. Returns ZF_OK or ZF_ERROR (out of memory). */
int zf_headers_add(struct zf_headers *h, const char *name, size_t nlen, const char *value,
                   size_t vlen);
/* First value for a case-insensitive name, or NULL. */
const char *zf_headers_get(const struct zf_headers *h, const char *name);
void zf_headers_free(struct zf_headers *h);

enum zf_seg_type { ZF_SEG_DATA, ZF_SEG_FILE };

/* One piece of a response body. DATA holds `len` bytes inline; FILE is
 * `len` bytes of `fd` from `offset` (the segment owns fd). Whoever takes a
 * segment owns it and frees it with zf_segment_free. A DATA segment handed
 * out by zf_exchange_take is at most ZF_TAKE_MAX bytes: a bigger chunk is
 * handed out in pieces, so what a protocol holds outside the exchange stays
 * small. */
struct zf_segment {
    struct zf_segment *next;
    enum zf_seg_type type;
    size_t len;
    off_t offset; /* FILE: where in fd; DATA (exchange only): bytes already taken */
    int fd;
    size_t cap;           /* DATA (exchange only): room allocated after `data` */
    struct zf_hold *hold; /* DATA in a transport: what counts it (zf_hold_add_reference) */
    char data[];
};
#define ZF_TAKE_MAX (256u * 1024u)
void zf_segment_free(struct zf_segment *s);

struct zf_exchange;
struct zf_hold;
struct event_base;
struct evbuffer;

/* The application side as the exchange layer sees it: the pool jobs that
 * run a dispatched exchange (ex->job) and resume one its bridge suspended.
 * The core knows no language: the embedded Python registers its jobs at
 * start-up (python.c), which enter the interpreter and call the bridge
 * (struct zf_app_ops, python.h). Layering: exchange -> pool -> app jobs. */
struct zf_app_jobs {
    /* Worker thread: run the request through the app; the bridge ends
     * with zf_exchange_finish. */
    zf_job_fn run;
    /* Worker thread that suspended it: carry on with the response. */
    zf_job_fn resume;
};
/* Sets the app side (kept by pointer) before the first dispatch. */
void zf_exchange_set_app(const struct zf_app_jobs *app);

struct zf_exchange_ops {
    /* Loop thread: the worker produced headers, data, or finished. */
    void (*on_output)(struct zf_exchange *ex);
    /* Loop thread: the server is over its output budget (server.max_buffered
     * or server.max_spool) and this exchange holds the most: the protocol
     * closes its connection (or resets its stream) and calls
     * zf_exchange_abort (or zf_exchange_release) before returning. NULL:
     * the exchange is never evicted. */
    void (*evict)(struct zf_exchange *ex);
};

struct zf_exchange {
    struct zf_job job; /* must stay first: the pool queues it */
    const struct zf_exchange_ops *ops;
    void *proto;          /* the protocol's stream/connection; NULL once it let go */
    struct zf_conn *conn; /* for log lines; NULL once the protocol let go */
    uint64_t conn_id;

    /* ---- request: filled on the loop before dispatch, then read-only ---- */
    char *method;
    char *target;         /* request-target as received ("/a%20b?x=1") */
    char *path;           /* raw (still percent-encoded) path part of target */
    char *query;          /* after '?', without it; "" when none */
    const char *protocol; /* "HTTP/1.1", "HTTP/1.0", "HTTP/2" (static) */
    const char *scheme;   /* "http" or "https" (static) */
    const char *channel;  /* zfront.channel: "http", "webdav-source", ... (static) */
    struct zf_headers req_headers;
    char server_host[64]; /* local address the request came in on */
    int server_port;
    char remote_addr[48];
    int remote_port;
    struct zf_body body; /* the complete request body */
    int is_head;
    int fragment; /* the request-target carried a #fragment (dropped from it) */
    /* Set by request filters (filter.h) on the loop before dispatch: extra
     * environ variables (name = value, both latin-1 strings) the WSGI
     * environ builder adds last, and the level of the lines the app writes
     * to wsgi.errors (ZF_LOG_ERROR unless a filter lowered it). */
    struct zf_headers env_extra;
    int errors_level;

    /* ---- response: written by the worker, read by the loop ---- */
    pthread_mutex_t lock;
    int status;                             /* 0 until headers are ready */
    char *status_line;                      /* "200 OK" as given by the app */
    struct zf_headers resp_headers;         /* hop-by-hop fields already removed */
    int64_t content_length;                 /* -1 when the app gave none */
    int headers_ready;                      /* under lock: worker has produced headers */
    int headers_taken;                      /* loop only */
    struct zf_segment *seg_head, *seg_tail; /* under lock */
    size_t seg_mem;     /* under lock: bytes of DATA segments queued, not yet taken */
    size_t seg_held;    /* under lock: memory of the DATA segments queued */
    size_t app_held;    /* under lock: what the app keeps while suspended (zf_exchange_app_holds) */
    int done;           /* under lock: worker produced everything */
    int failed;         /* under lock: the body is incomplete (app error) */
    atomic_int aborted; /* client gone: worker stops, output discarded */
    /* REMOTE_USER the app left in the environ (malloc'd) or NULL: written by
     * the worker before zf_exchange_finish, read through zf_exchange_remote_user */
    char *remote_user;

    /* a response suspended while the client drains (zf_exchange_suspend) */
    int suspended;     /* under lock */
    int resume_worker; /* the worker that resumes it */
    void *app_state;   /* the bridge's saved state while suspended */

    /* worker-side spooling of a write() body the client does not keep up with */
    int spool_fd;
    off_t spool_off;   /* bytes written to the spool file */
    off_t spool_sent;  /* bytes of it already queued as FILE segments */
    size_t spool_held; /* under lock: bytes counted in the server-wide spool total */

    /* ---- bookkeeping (loop thread) ---- */
    int refs;
    int posted;      /* under the server's post lock */
    int worker_gone; /* under the server's post lock */
    int worker_holds;
    uint64_t start_us; /* request complete (for the access log) */
    uint64_t bytes_sent;
    struct zf_exchange *post_next;
    struct zf_exchange *all_prev, *all_next; /* every live exchange (eviction) */
    struct zf_hold *hold; /* loop only: what its transport holds (zf_exchange_set_hold) */
};

/* ---- loop thread, protocol side ---- */

/* Allocates an exchange owned by the protocol (one reference). NULL when out
 * of memory. */
struct zf_exchange *zf_exchange_new(const struct zf_exchange_ops *ops, void *proto,
                                    struct zf_conn *conn);
/* Sets method/target and splits target into path and query (copies).
 * Absolute-form targets ("http://host/p?q") keep only path and query. A
 * fragment ("#frag", which a client must not send) is dropped from all of
 * them. Returns ZF_OK or ZF_ERROR. */
int zf_exchange_set_target(struct zf_exchange *ex, const char *method, size_t mlen,
                           const char *target, size_t tlen);
/* Replaces the path the app sees (PATH_INFO), keeping target (REQUEST_URI
 * and the access log show what the client sent). Copies. Returns ZF_OK or
 * ZF_ERROR (out of memory; the old path stays). For request filters. */
int zf_exchange_set_path(struct zf_exchange *ex, const char *path, size_t len);
/* Runs the request filters (filter.h), then hands the exchange to the
 * worker pool; the worker takes a reference. When a filter answered
 * itself, no worker runs. When the queue is full (server.max_queued) or
 * the server stops, the core answers 503 at once instead
 * (zf_exchange_respond); a request that waits past server.queue_timeout,
 * or is still queued when a graceful stop drains the queue, is answered
 * 503 the same way. Either way the protocol sees an ordinary response
 * through ops->on_output, on a later loop turn. */
void zf_exchange_dispatch(struct zf_exchange *ex);
/* True once the worker produced the headers; status/status_line/resp_headers
 * /content_length are then stable and readable without the lock. */
int zf_exchange_take_headers(struct zf_exchange *ex);
/* Pops the next body segment (caller owns it), or NULL; always NULL before
 * the headers are ready (body bytes queued first wait for them). A DATA
 * segment longer than ZF_TAKE_MAX comes out in pieces of that size.
 * *finished is set to 1 when no segment is left (or the headers never
 * came) and the worker is done; *failed then tells whether the body is
 * incomplete (the protocol must not pretend it ended well: close the
 * connection / reset the stream). */
struct zf_segment *zf_exchange_take(struct zf_exchange *ex, int *finished, int *failed);
/* Bytes of DATA queued and not yet taken (for flow decisions). */
size_t zf_exchange_pending(struct zf_exchange *ex);
/* The protocol is done with the exchange (response fully handed to the
 * transport). Drops the protocol's reference. */
void zf_exchange_release(struct zf_exchange *ex);
/* The client went away: tells the worker to stop, drops queued output and
 * the protocol's reference. ops->on_output is not called again. */
void zf_exchange_abort(struct zf_exchange *ex);
/* The user the app authenticated (environ["REMOTE_USER"] after the app
 * call and close()), for the access log; NULL when none or while the
 * worker has not finished. Owned by the exchange. */
const char *zf_exchange_remote_user(struct zf_exchange *ex);

/* ---- worker thread, bridge side ---- */

/* Publishes status and headers (the exchange takes ownership of
 * status_line and of the header list's contents), after the response
 * filters (filter.h) added theirs. Returns ZF_OK, or
 * ZF_ERROR when the client is gone. */
int zf_exchange_send_headers(struct zf_exchange *ex, int status, char *status_line,
                             struct zf_headers *headers, int64_t content_length);
/* Queues body bytes (copied). Never blocks on the client: while less than
 * wsgi.output_buffer is queued in memory, the bytes are queued in memory
 * whatever their size (a chunk the app already made is not copied to disk
 * because it is big); beyond it they go to the exchange's spool file, and
 * are handed to the loop at once all the same. An iterator checks
 * zf_exchange_congested before producing each chunk, so it never reaches
 * the spool; a body pushed with write() can. Returns ZF_OK, or ZF_ERROR
 * with errno set: ECONNABORTED when the client is gone (or the exchange was
 * evicted, zf_exchange_aborted is then true), else the spool failure
 * (ENOSPC, EFBIG, EMFILE, ENOMEM...), the client still being there. */
int zf_exchange_send_data(struct zf_exchange *ex, const void *p, size_t n);
/* Queues len bytes of fd from offset; takes ownership of fd (pass a dup).
 * Returns ZF_OK or ZF_ERROR (client gone; fd closed). */
int zf_exchange_send_file(struct zf_exchange *ex, int fd, off_t offset, size_t len);
/* True when the loop is behind: wsgi.output_buffer or more of this
 * response is queued in memory, or anything is while the server is over
 * server.max_buffered (the loop is evicting). A bridge that can stop
 * producing (an iterator) then suspends instead of sending more. */
int zf_exchange_congested(struct zf_exchange *ex);
/* Suspends the response until the client took half of what is queued, or
 * went away (while the server is over server.max_buffered it suspends with
 * less queued too, until the client takes some): the job (ex->job, its run set to `resume`) is then queued
 * again for worker `worker_index`. Returns ZF_OK when suspended (the
 * worker returns at once and must not touch ex), or ZF_AGAIN when the loop
 * already caught up (go on producing). */
int zf_exchange_suspend(struct zf_exchange *ex, int worker_index, zf_job_fn resume);
/* The app itself keeps n bytes of this response in memory while it is
 * suspended (the last chunk its iterator yielded, still referenced by the
 * iterator, as a generator's local is): they count in the memory total
 * (server.max_buffered) and for this exchange's eviction until the next
 * call (n = 0 when the iterator moved on) or the exchange is freed. */
void zf_exchange_app_holds(struct zf_exchange *ex, size_t n);
/* The worker is done with the exchange; ok=0 marks the body incomplete.
 * After this call the worker must not touch ex. */
void zf_exchange_finish(struct zf_exchange *ex, int ok);
/* True when the client went away (the worker should stop iterating). */
int zf_exchange_aborted(struct zf_exchange *ex);

/* ---- any thread, in place of the worker ---- */

/* Answers the request without the application: status, Content-Type
 * text/plain, Retry-After when retry_after is not NULL, and body (copied),
 * then finishes as a worker would; the protocol sends it like any response
 * (on a stopping server HTTP/1.1 adds Connection: close). The caller must
 * hold the worker's reference: an exchange zf_exchange_dispatch could not
 * queue, or one taken back from the queue unrun (pool.h, zf_job.cancel).
 * After this call the caller must not touch ex. */
void zf_exchange_respond(struct zf_exchange *ex, int status, const char *retry_after,
                         const char *body);

/* ---- the server side of posting (exchange.c / server.c) ---- */

/* Sets up the loop-side wake-up event. Returns ZF_OK or ZF_ERROR. */
int zf_exchange_init_loop(struct event_base *base);
void zf_exchange_free_loop(void);
/* Number of exchanges alive (for stats and leak checks). */
size_t zf_exchange_count(void);
/* Server-wide response bytes held in memory (DATA segments in the
 * exchanges' queues and the ones transports hold, struct zf_hold) and
 * spooled to disk by live exchanges. Any thread. */
size_t zf_exchange_buffered(void);
size_t zf_exchange_spooled(void);
/* Loop thread: evicts exchanges (ops->evict) and transport holds (their
 * evict), the biggest holder first, until the totals are within
 * server.max_buffered and server.max_spool, or nothing evictable is left;
 * logs each eviction. An exchange counts what is queued in it plus what its
 * transport hold holds (zf_exchange_set_hold). What an evicted connection
 * still holds until its buffers are freed no longer counts against the
 * budget here (it is going), only in zf_exchange_buffered. Workers and
 * zf_hold_add_reference trigger it when the memory total goes over.
 * Returns the number evicted. */
size_t zf_exchange_enforce_budget(void);

/* ---- response memory a transport holds (loop thread) ----
 *
 * What a protocol took out of an exchange (zf_exchange_take) and still
 * holds in memory — its output buffer, a frame being written — counts
 * against server.max_buffered like the bytes still queued. A connection owns
 * one zf_hold; each DATA segment it hands to its output buffer through
 * zf_hold_add_reference is counted (its cap) until the buffer lets go of it.
 * File segments are not memory and are never counted. Everything here runs
 * on the loop thread; the hold lives until the connection closed it and
 * every counted segment is freed. */

/* A hold for one connection. evict(proto) closes that connection when the
 * hold is the biggest over the budget (no exchange, or its exchange counts
 * less); the core stops counting the hold against the budget before calling
 * it; conn (kept by pointer until zf_hold_close) names the connection in
 * the log line. NULL when out of memory. */
struct zf_hold *zf_hold_new(void (*evict)(void *proto), void *proto, struct zf_conn *conn);
/* The connection is gone (or handed its transport on): evict is never
 * called again; what the buffers still hold stays counted in
 * zf_exchange_buffered until they free it, not against the budget. NULL is
 * a no-op. */
void zf_hold_close(struct zf_hold *h);
/* Bytes the hold counts now. */
size_t zf_hold_bytes(const struct zf_hold *h);
/* Adds n bytes of DATA segment s (consumed: freed when the buffer lets go
 * of it, or at once on failure) to out by reference, counted in h (NULL:
 * not counted). Returns ZF_OK or ZF_ERROR (out of memory). */
int zf_hold_add_reference(struct zf_hold *h, struct evbuffer *out, struct zf_segment *s, size_t n);
/* The exchange's transport hold: eviction weighs the exchange by what is
 * queued plus what h holds, and evicting it stops counting h. */
void zf_exchange_set_hold(struct zf_exchange *ex, struct zf_hold *h);

#endif
